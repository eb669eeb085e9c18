"""40-d log-mel filterbank features exactly as the paper's pipeline computes them.

python_speech_features ``fbank`` on int16-scale samples, ``20*log10(max(x, 1e-5))``, then the
per-filter mean over time subtracted. Features are stored as float ``.npy`` (frames, 40), one file per
utterance, mirroring the wav tree, so a training crop is one positioned read of just its frames.
"""
import numpy as np

SAMPLE_RATE = 16000
N_MELS = 40
WIN_LENGTH = 0.025
WIN_STEP = 0.01
N_FFT = 512
PREEMPHASIS = 0.97
LOG_FLOOR = 1e-5
INT16_SCALE = 32768.0


def to_int16_scale(signal: np.ndarray) -> np.ndarray:
    """float64 samples on the int16 scale: integer input as is, float input in [-1, 1] times 32768."""
    signal = np.asarray(signal)
    if np.issubdtype(signal.dtype, np.floating):
        return signal.astype(np.float64) * INT16_SCALE
    return signal.astype(np.float64)


def log_mel_fbank(signal: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono signal (int16 values, or float in [-1, 1]) -> (frames, 40) float32 mean-normalised log-mel."""
    return log_mel_fbank_int16(to_int16_scale(signal), sample_rate)


def log_mel_fbank_int16(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``log_mel_fbank`` of samples already on the int16 scale, whatever their dtype (``read_audio``'s
    float64 samples, the streams of long recordings): never scaled again. The floor ``1e-5`` is where
    the paper's int16 input puts it: only digital silence reaches it."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 1:
        raise ValueError(f"expected a mono 1-d signal, got shape {samples.shape}")
    # imported here: python_speech_features pulls in scipy.fft (~0.4 s of CPU), and training and
    # evaluation import this module only for N_MELS (bench/startup_phases.py)
    from python_speech_features import fbank
    energies, _ = fbank(samples, samplerate=sample_rate, nfilt=N_MELS, winlen=WIN_LENGTH,
                        winstep=WIN_STEP, nfft=N_FFT, preemph=PREEMPHASIS, winfunc=np.hamming)
    log_energies = 20 * np.log10(np.maximum(energies, LOG_FLOOR))
    log_energies -= log_energies.mean(axis=0)
    return log_energies.astype(np.float32)
