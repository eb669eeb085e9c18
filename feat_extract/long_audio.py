"""``log_mel_fbank`` of a long recording in blocks of frames, so that memory does not grow with the
recording's length more than the features themselves do.

python_speech_features frames the whole signal at once: an hour of 16 kHz audio becomes a
(360,000 x 512) power spectrum (1.5 GB). Every frame depends only on its own 400 samples and, through
pre-emphasis, on the sample before them, so the features can be computed a block of frames at a time
with the same arithmetic: pre-emphasis is applied here (``x[n] - 0.97 x[n-1]``, as
python_speech_features writes it) and ``fbank`` is called with ``preemph=0`` (which then leaves
the block unchanged), and the last block is zero-padded exactly as the one-pass framing pads the end.
The per-filter mean is taken over all frames at the end. The result equals ``log_mel_fbank``
(float64 arithmetic throughout, same float32 rounding at the end; tested).
"""
import math

import numpy as np
from python_speech_features import fbank

from feat_extract.fbank import (LOG_FLOOR, N_FFT, N_MELS, PREEMPHASIS, SAMPLE_RATE, WIN_LENGTH,
                                             WIN_STEP, to_int16_scale)

FRAME_LENGTH = int(round(WIN_LENGTH * SAMPLE_RATE))     # 400 samples
FRAME_STEP = int(round(WIN_STEP * SAMPLE_RATE))         # 160 samples
BLOCK_FRAMES = 6000                                     # 60 s of features per fbank call


def n_frames(n_samples: int) -> int:
    """Frames python_speech_features makes of ``n_samples`` (the last one zero-padded)."""
    if n_samples <= FRAME_LENGTH:
        return 1
    return 1 + int(math.ceil((n_samples - FRAME_LENGTH) / FRAME_STEP))


def block_log_energies(samples: np.ndarray, first: int, last: int) -> np.ndarray:
    """float64 log-mel energies of frames [first, last) of the whole int16-scale ``samples``."""
    begin = first * FRAME_STEP
    end = min(samples.size, (last - 1) * FRAME_STEP + FRAME_LENGTH)
    block = to_int16_scale(samples[max(begin - 1, 0):end])
    emphasised = block[1:] - PREEMPHASIS * block[:-1]
    if begin == 0:
        emphasised = np.concatenate([block[:1], emphasised])
    energies, _ = fbank(emphasised, samplerate=SAMPLE_RATE, nfilt=N_MELS, winlen=WIN_LENGTH,
                        winstep=WIN_STEP, nfft=N_FFT, preemph=0, winfunc=np.hamming)
    return 20 * np.log10(np.maximum(energies, LOG_FLOOR))


def log_mel_fbank_blocks(signal: np.ndarray, block_frames: int = BLOCK_FRAMES) -> np.ndarray:
    """``log_mel_fbank(signal)`` (16 kHz mono) computed ``block_frames`` frames at a time."""
    signal = np.asarray(signal)
    if signal.ndim != 1:
        raise ValueError(f"expected a mono 1-d signal, got shape {signal.shape}")
    total = n_frames(signal.size)
    log_energies = np.empty((total, N_MELS), dtype=np.float64)
    for first in range(0, total, block_frames):
        last = min(first + block_frames, total)
        log_energies[first:last] = block_log_energies(signal, first, last)
    log_energies -= log_energies.mean(axis=0)
    return log_energies.astype(np.float32)
