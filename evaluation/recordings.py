"""Audio files -> embeddings, many files per forward, any length in bounded memory.

Files are read and featurised one at a time (``log_mel_fbank_blocks``: the training features, in
blocks). Recordings up to ``chunk_frames`` frames are buffered and embedded with the exact padded +
masked batching of ``evaluation.embedding.embed_utterances`` (sorted by length, ``batch_size`` per
forward); longer ones go through ``evaluation.long_recordings.embed_long`` (exact overlapping
chunks). So a forward never holds more than ``batch_size * chunk_frames`` frames, whatever the
recordings' lengths. Results come back per file as soon as they are known, so callers can save them
(and resume).
"""
from dataclasses import dataclass, field

import numpy as np

from common.errors import UserInputError
from evaluation.embedding import embed_utterances
from evaluation.long_recordings import DEFAULT_CHUNK_FRAMES, embed_long
from feat_extract.audio import read_audio
from feat_extract.fbank import SAMPLE_RATE
from feat_extract.long_audio import log_mel_fbank_blocks

BUFFER_BATCHES = 8      # short recordings are sorted by length within this many batches


@dataclass
class Embedded:
    index: int                   # position in the input sequence
    embedding: np.ndarray = None  # (256,) float32; None when the file could not be read
    duration_s: float = 0.0
    notes: list = field(default_factory=list)
    error: str = ""


def read_recording(source):
    """(features, duration in s, conversion notes) of an audio file; UserInputError if unreadable."""
    audio = read_audio(source)
    return log_mel_fbank_blocks(audio.samples), audio.samples.size / SAMPLE_RATE, list(audio.notes)


def embed_recordings(model, sources, device, batch_size: int = 16,
                     chunk_frames: int = DEFAULT_CHUNK_FRAMES, reader=read_recording):
    """Yield an ``Embedded`` per source (in an order of its own; ``index`` says which)."""
    pending = []                 # (Embedded, features) of short recordings waiting for a batch
    for index, source in enumerate(sources):
        try:
            features, duration, notes = reader(source)
        except UserInputError as error:
            yield Embedded(index, error=str(error))
            continue
        item = Embedded(index, duration_s=duration, notes=notes)
        if len(features) > chunk_frames:
            item.embedding = embed_long(model, features, device, chunk_frames)
            yield item
            continue
        pending.append((item, features))
        if len(pending) >= batch_size * BUFFER_BATCHES:
            yield from flush(model, pending, device, batch_size)
            pending = []
    yield from flush(model, pending, device, batch_size)


def flush(model, pending: list, device, batch_size: int):
    if not pending:
        return
    embeddings = embed_utterances(model, [features for _, features in pending], device, batch_size, desc="")
    for (item, _), embedding in zip(pending, embeddings):
        item.embedding = embedding
        yield item
