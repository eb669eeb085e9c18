"""Exact embeddings of recordings of any length in bounded memory: overlapping chunks.

Through the encoder interface (model/encoder.py): a chunkable encoder (``chunk_geometry()`` not
None, e.g. ``background_resnet``) computes ``frame_maps`` with convolutions (zero padding, some with
stride 2), eval-mode BatchNorm and ReLU, then embeds their mean over frequency and time
(``embed_from_pooled``). Output frame ``j`` depends only on input frames within the receptive field
around ``stride * j`` (``stride`` = 8 and radius 114 frames for ResNet-34, computed from its layers).
So a recording is cut into chunks whose starts are multiples of ``stride``, each extended by a margin
>= the radius on both sides; each chunk's central ("core") output frames are exactly those of the
one-pass run, and the cores tile the one-pass output. Their sum, divided by the one-pass output size,
is the one-pass mean pooling; the rest of the network runs on the pooled vector. The result equals
the one-pass embedding up to float summation order (tested to 1e-4; typically ~1e-6 relative).

``embed_frame_blocks`` takes the frames as a stream of blocks and holds, whatever the recording's
length: the frames from the current chunk's start on (at most ``chunk_frames + 2 * margin`` plus one
incoming block, float32 x 40), the activations for one chunk, and the pooled statistics: one float64
sum per output channel and a count. Nothing per output frame is kept. ``embed_long`` serves a
(frames, 40) array held in memory; evaluation/recordings.py streams files.

This holds because the per-utterance mean (normalize_frames, ``model_input``) is removed over the
whole recording first (a first pass over a streamed file), and nothing before the pooling looks at
the whole recording (a mean is additive). An encoder that does -- ECAPA-TDNN's squeeze-excitation and
attentive statistics pooling, whose ``chunk_geometry()`` is None -- gets one forward over all the
recording's frames instead: exact, but its memory grows with the recording's length (the frames are
still read in blocks; they are joined for that forward).
"""
import math

import numpy as np
import torch

from evaluation.embedding import strict_fp32
from feat_extract.fbank import N_MELS
from feat_extract.features import model_input


DEFAULT_CHUNK_FRAMES = 15000    # 150 s of 10 ms frames (on a 2-core CPU, 60 s chunks ran 2x slower per frame)


def chunk_plan(model, n_frames: int, chunk_frames: int) -> list:
    """[(input start, input end, first core output, core outputs)] covering the whole recording for a
    chunkable encoder (``model.chunk_geometry()`` not None); the input slices overlap by twice the
    margin (the receptive-field radius rounded up to the stride)."""
    geometry = model.chunk_geometry()
    stride = geometry.stride
    margin = math.ceil(geometry.radius / stride) * stride
    chunk = max(stride, chunk_frames // stride * stride)
    total = model.output_frames(n_frames)
    plan = []
    for core_start in range(0, n_frames, chunk):
        start, end = max(0, core_start - margin), min(n_frames, core_start + chunk + margin)
        first = (core_start - start) // stride
        core = min(chunk // stride, total - core_start // stride)
        plan.append((start, end, first, core))
    return plan


def plan_slices(blocks, plan: list):
    """Yield (plan entry, frames[start:end]) for each chunk of ``plan`` from consecutive (k, 40)
    blocks of a recording's frames, holding only the frames from the current chunk's start on."""
    blocks = iter(blocks)
    held, held_start = np.zeros((0, N_MELS), np.float32), 0
    for entry in plan:
        start, end = entry[:2]
        held, held_start = held[start - held_start:], start      # chunk starts only move forward
        while held_start + len(held) < end:
            block = next(blocks, None)
            if block is None:
                raise ValueError(f"the recording's frames ended at {held_start + len(held)}, the plan needs {end}")
            held = np.concatenate([held, block])
        yield entry, held[:end - start]


@torch.inference_mode()
def embed_frame_blocks(model, blocks, n_frames: int, device, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> np.ndarray:
    """(256,) embedding of a recording of ``n_frames`` frames that arrive as consecutive (k, 40)
    blocks of model-input values (the recording's mean already removed), equal to ``model`` on the
    whole of it, computed in chunks of ``chunk_frames`` frames plus the receptive-field margins."""
    model.eval()
    with strict_fp32(device):
        if model.chunk_geometry() is None:       # not chunkable exactly (model/encoder.py): one forward
            whole = np.concatenate(list(blocks))
            return model(model_input(whole[None], centre=False).to(device))[0].float().cpu().numpy()
        channels_sum, n_outputs = None, 0
        for (start, end, first, core), frames in plan_slices(blocks, chunk_plan(model, n_frames, chunk_frames)):
            maps = model.frame_maps(model_input(frames[None], centre=False).to(device))[..., first:first + core]
            part = maps.sum(dim=(2, 3), dtype=torch.float64)            # (1, channels)
            channels_sum = part if channels_sum is None else channels_sum + part
            n_outputs += core * maps.shape[2]
        pooled = (channels_sum / n_outputs).to(torch.float32)
        return model.embed_from_pooled(pooled)[0].float().cpu().numpy()


def embed_long(model, features: np.ndarray, device, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> np.ndarray:
    """(256,) embedding of one (frames, 40) recording held in memory, equal to ``model`` on the whole
    of it, computed in chunks (``embed_frame_blocks``) after ``model_input`` removed its mean."""
    whole = model_input(np.asarray(features)[None]).numpy()[0, 0].T     # (frames, 40) view, mean removed
    blocks = (whole[start:start + chunk_frames] for start in range(0, len(whole), chunk_frames))
    return embed_frame_blocks(model, blocks, len(whole), device, chunk_frames)
