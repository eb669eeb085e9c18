"""``log_mel_fbank`` of a long recording in blocks of frames: from a signal in memory
(``log_mel_fbank_blocks``) or from a stream of sample blocks (``log_energy_blocks``: neither the
waveform nor the features need to be held whole).

python_speech_features frames the whole signal at once: an hour of 16 kHz audio becomes a
(360,000 x 512) power spectrum (1.5 GB). Every frame depends only on its own 400 samples and, through
pre-emphasis, on the sample before them, so the features can be computed a block of frames at a time
with the same arithmetic: pre-emphasis is applied here (``x[n] - 0.97 x[n-1]``, as
python_speech_features writes it) and ``fbank`` is called with ``preemph=0`` (which then leaves
the block unchanged), and the last block is zero-padded exactly as the one-pass framing pads the end.
A stream keeps only the samples of frames not yet complete (under one frame) and the sample before
them. The per-filter mean is taken over all frames at the end (a caller streaming twice takes it
from the first pass). The result equals ``log_mel_fbank`` (float64 arithmetic throughout, same
float32 rounding at the end; tested).
"""
import math

import numpy as np
from python_speech_features import fbank

from feat_extract.fbank import (LOG_FLOOR, N_FFT, N_MELS, PREEMPHASIS, SAMPLE_RATE, WIN_LENGTH,
                                             WIN_STEP)

FRAME_LENGTH = int(round(WIN_LENGTH * SAMPLE_RATE))     # 400 samples
FRAME_STEP = int(round(WIN_STEP * SAMPLE_RATE))         # 160 samples
BLOCK_FRAMES = 6000                                     # 60 s of features per fbank call


def n_frames(n_samples: int) -> int:
    """Frames python_speech_features makes of ``n_samples`` (the last one zero-padded)."""
    if n_samples <= FRAME_LENGTH:
        return 1
    return 1 + int(math.ceil((n_samples - FRAME_LENGTH) / FRAME_STEP))


def segment_log_energies(segment: np.ndarray, previous=None) -> np.ndarray:
    """float64 log-mel energies of the frames starting in ``segment`` (int16-scale samples from a frame
    start; ``previous``: the sample before it, None at the signal's start), the last frame zero-padded
    when the segment ends inside it (the signal's end)."""
    emphasised = segment[1:] - PREEMPHASIS * segment[:-1]
    first = segment[:1] if previous is None else segment[:1] - PREEMPHASIS * previous
    energies, _ = fbank(np.concatenate([first, emphasised]), samplerate=SAMPLE_RATE, nfilt=N_MELS,
                        winlen=WIN_LENGTH, winstep=WIN_STEP, nfft=N_FFT, preemph=0, winfunc=np.hamming)
    return 20 * np.log10(np.maximum(energies, LOG_FLOOR))


def log_energy_blocks(sample_blocks, block_frames: int = BLOCK_FRAMES):
    """Yield float64 log-mel energies (frames, 40) of a 16 kHz int16-scale signal that arrives as
    consecutive sample blocks: every frame once, in order, at most ``block_frames`` per block, the
    same frames (and the same zero-padded last frame) as one ``fbank`` call on the whole signal.
    Holds only the samples of frames not yet complete; an empty signal gives no frames."""
    pending, previous, received = np.zeros(0), None, 0
    for block in sample_blocks:
        pending = np.concatenate([pending, np.asarray(block, dtype=np.float64)])  # int16 scale already
        received += len(block)
        while len(pending) >= FRAME_LENGTH:
            complete = min(block_frames, (len(pending) - FRAME_LENGTH) // FRAME_STEP + 1)
            yield segment_log_energies(pending[:(complete - 1) * FRAME_STEP + FRAME_LENGTH], previous)
            cut = complete * FRAME_STEP
            previous, pending = pending[cut - 1], pending[cut:]
    if len(pending) > FRAME_LENGTH - FRAME_STEP or 0 < received < FRAME_LENGTH:   # a last, zero-padded frame
        yield segment_log_energies(pending, previous)


def log_mel_fbank_blocks(signal: np.ndarray, block_frames: int = BLOCK_FRAMES) -> np.ndarray:
    """``log_mel_fbank_int16(signal)`` (16 kHz mono, int16-scale samples of any dtype) computed
    ``block_frames`` frames at a time."""
    signal = np.asarray(signal)
    if signal.ndim != 1 or not signal.size:
        raise ValueError(f"expected a non-empty mono 1-d signal, got shape {signal.shape}")
    step = block_frames * FRAME_STEP
    blocks = (signal[start:start + step] for start in range(0, signal.size, step))
    log_energies = np.empty((n_frames(signal.size), N_MELS), dtype=np.float64)
    filled = 0
    for part in log_energy_blocks(blocks, block_frames):
        log_energies[filled:filled + len(part)] = part
        filled += len(part)
    assert filled == len(log_energies)
    log_energies -= log_energies.mean(axis=0)
    return log_energies.astype(np.float32)
