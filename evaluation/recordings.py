"""Recordings -> embeddings: the one home of "embed a recording", any length in bounded memory.

A recording (an audio file, or samples in memory) is a ``SampleStream`` (feat_extract.audio_stream):
16 kHz mono blocks of ``block_seconds``, never the whole waveform. It is read in up to two passes:

1. ``scan``: block by block through the fbank (``log_energy_blocks``), summing each filter's log
   energies and counting frames; the audio is then checked (finite, not silent, one frame at least).
   A recording of at most ``chunk_frames`` frames keeps its features from this pass: it is *short*
   and is embedded whole, with the exact padded + masked batching of
   ``evaluation.embedding.embed_utterances`` (``batch_size`` per forward, sorted by length).
2. A longer recording is read again; its features, block by block, get pass 1's per-filter mean
   removed and go straight into ``evaluation.long_recordings.embed_frame_blocks`` (exact overlapping
   chunks). The mean needs the whole recording before the first chunk can run (the trunk is not
   linear), hence the second pass: the audio is decoded and the fbank computed twice, instead of
   holding ~0.5 GB of samples and features per hour.

Memory for a long recording (ResNet), whatever its length: one audio block (``block_seconds`` of
source samples, float64, plus the resampler's history) and its fbank intermediates; one chunk of
features (``chunk_frames`` + 2 x 120 margin frames, float32, 40 filters) and the trunk's activations
for it; the pooled statistics (a float64 sum per output channel: 8 x width numbers). The network
pools with a plain mean over frequency and time, so a running sum is all the pooling needs. Another
backbone (ECAPA-TDNN: squeeze-excitation and attentive statistics pooling over the whole recording)
still gets streamed audio and fbank, but its features (16 KB per second) are gathered for one
forward.

Compared with the one-pass features, the short path is bit-identical (the same float64 mean); the
long path skips ``model_input``'s second mean removal (of features already centred: ~1e-7 dB) and
sums in another order, so its embeddings agree to 1e-4 (tested). Results come back per recording as
soon as they are known, so callers can save them (and resume).
"""
from dataclasses import dataclass, field

import numpy as np

from common.errors import UserInputError
from evaluation.embedding import embed_utterances
from evaluation.long_recordings import DEFAULT_CHUNK_FRAMES, embed_frame_blocks
from feat_extract.audio_stream import BLOCK_SECONDS, AudioStream, SampleStream
from feat_extract.fbank import N_MELS
from feat_extract.long_audio import log_energy_blocks

BUFFER_BATCHES = 8      # short recordings are sorted by length within this many batches


@dataclass
class Embedded:
    index: int                   # position in the input sequence
    embedding: np.ndarray = None  # (256,) float32; None when the recording could not be read
    duration_s: float = 0.0
    notes: list = field(default_factory=list)
    error: str = ""


@dataclass
class Scan:
    """What pass 1 learnt about a recording."""
    n_frames: int
    mean: np.ndarray             # (40,) float64 per-filter mean of the log energies
    features: np.ndarray = None  # (frames, 40) float32 mean-removed features of a short recording


def scan(stream: SampleStream, keep_frames: int) -> Scan:
    """Pass 1: frame count and per-filter mean; the features too when there are <= ``keep_frames``."""
    total, n_frames, kept = np.zeros(N_MELS), 0, []
    for part in log_energy_blocks(stream.blocks()):
        total += part.sum(axis=0)
        n_frames += len(part)
        if kept is not None:
            kept.append(part)
            kept = kept if n_frames <= keep_frames else None
    stream.check_level()
    if kept is None:
        return Scan(n_frames, total / n_frames)
    log_energies = np.concatenate(kept)
    mean = log_energies.mean(axis=0)         # as log_mel_fbank takes it (bit-identical features)
    return Scan(n_frames, mean, (log_energies - mean).astype(np.float32))


def feature_blocks(stream: SampleStream, scanned: Scan):
    """Pass 2: the recording's features again, block by block, with pass 1's mean removed."""
    n_frames = 0
    for part in log_energy_blocks(stream.blocks()):
        n_frames += len(part)
        yield (part - scanned.mean).astype(np.float32)
    if n_frames != scanned.n_frames:
        raise UserInputError(f"{stream.source}: changed while being read ({scanned.n_frames} frames in the "
                             f"first pass, {n_frames} in the second)")


def as_stream(source, block_seconds: float) -> SampleStream:
    return source if isinstance(source, SampleStream) else AudioStream(source, block_seconds)


def embed_recordings(model, sources, device, batch_size: int = 16, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                     block_seconds: float = BLOCK_SECONDS):
    """Yield an ``Embedded`` per source (audio path or ``SampleStream``), in an order of its own
    (``index`` says which); an unreadable source yields its error instead of an embedding."""
    pending = []                 # (Embedded, features) of short recordings waiting for a batch
    for index, source in enumerate(sources):
        item = Embedded(index)
        try:
            stream = as_stream(source, block_seconds)
            item.notes = list(stream.notes)
            scanned = scan(stream, chunk_frames)
            item.duration_s = stream.duration_s
            if scanned.features is None:
                item.embedding = embed_frame_blocks(model, feature_blocks(stream, scanned), scanned.n_frames,
                                                    device, chunk_frames)
        except UserInputError as error:
            yield Embedded(index, error=str(error))
            continue
        if item.embedding is not None:
            yield item
            continue
        pending.append((item, scanned.features))
        if len(pending) >= batch_size * BUFFER_BATCHES:
            yield from flush(model, pending, device, batch_size)
            pending = []
    yield from flush(model, pending, device, batch_size)


def embed_recording(model, source, device, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                    block_seconds: float = BLOCK_SECONDS) -> Embedded:
    """One recording (``embed_recordings`` of one); raises its ``UserInputError`` if unreadable."""
    item = next(embed_recordings(model, [source], device, 1, chunk_frames, block_seconds))
    if item.error:
        raise UserInputError(item.error)
    return item


def flush(model, pending: list, device, batch_size: int):
    if not pending:
        return
    embeddings = embed_utterances(model, [features for _, features in pending], device, batch_size, desc="")
    for (item, _), embedding in zip(pending, embeddings):
        item.embedding = embedding
        yield item
