"""Exact embeddings of recordings of any length in bounded memory: overlapping chunks.

The trunk is convolutions (zero padding, some with stride 2), eval-mode BatchNorm and ReLU, then a
mean over frequency and time. Output frame ``j`` of the last stage depends only on input frames
within the trunk's receptive field around ``stride * j`` (``stride`` = 8 and radius 114 frames for
ResNet-34, computed from the layers by ``trunk_geometry``). So a recording is cut into chunks whose
starts are multiples of ``stride``, each extended by a margin >= the radius on both sides; each
chunk's central ("core") output frames are exactly those of the one-pass run, and the cores tile the
one-pass output. Their sum, divided by the one-pass output size, is the one-pass mean pooling; the
rest of the network (BatchNorm, ReLU, projection) runs on the pooled vector. The result equals the
one-pass embedding up to float summation order (tested to 1e-4; typically ~1e-6 relative).

``embed_frame_blocks`` takes the frames as a stream of blocks and holds, whatever the recording's
length: the frames from the current chunk's start on (at most ``chunk_frames + 2 * margin`` plus one
incoming block, float32 x 40), the trunk's activations for one chunk, and the pooled statistics: one
float64 sum per output channel (8 x width numbers) and a count. Nothing per output frame is kept.
``embed_long`` serves a (frames, 40) array held in memory; evaluation/recordings.py streams files.

This holds because the per-utterance mean (normalize_frames, ``model_input``) is removed over the
whole recording first (a first pass over a streamed file), and nothing in the trunk looks at the
whole recording before the pooling (no attention, no statistics pooling of variances; a mean is
additive). Std pooling would need a sum of squares as well (still two numbers per channel);
attentive pooling or squeeze-excitation over the whole recording (ECAPA-TDNN) would need a pass per
such layer, so another backbone gets one forward over all its frames.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.embedding import strict_fp32
from feat_extract.fbank import N_MELS
from feat_extract.features import model_input
from model.resnet import ResNet, conv_lengths


DEFAULT_CHUNK_FRAMES = 15000    # 150 s of 10 ms frames (on a 2-core CPU, 60 s chunks ran 2x slower per frame)


def trunk_convs(trunk: ResNet) -> list:
    """The trunk's convolutions along its main path, in order (1x1 shortcuts run in parallel with a
    block's first conv, with its stride, so they add nothing to the receptive field)."""
    convs = [trunk.conv1]
    for stage in (trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4):
        for block in stage:
            convs += [block.conv1, block.conv2]
    return convs


def trunk_geometry(trunk: ResNet) -> tuple:
    """(total time stride, receptive-field radius in input frames) of the trunk's output frames."""
    stride, radius = 1, 0
    for conv in trunk_convs(trunk):
        kernel, conv_stride, padding = conv.kernel_size[1], conv.stride[1], conv.padding[1]
        assert 2 * padding == kernel - 1, "chunking assumes centred ('same') convolutions"
        radius += padding * stride
        stride *= conv_stride
    return stride, radius


def output_frames(trunk: ResNet, n_frames: int) -> int:
    lengths = torch.tensor([n_frames])
    for conv in trunk_convs(trunk):
        lengths = conv_lengths(conv, lengths)
    return int(lengths[0])


def chunk_plan(trunk: ResNet, n_frames: int, chunk_frames: int) -> list:
    """[(input start, input end, first core output, core outputs)] covering the whole recording;
    the input slices overlap by twice the margin (the radius rounded up to the stride)."""
    stride, radius = trunk_geometry(trunk)
    margin = math.ceil(radius / stride) * stride
    chunk = max(stride, chunk_frames // stride * stride)
    total = output_frames(trunk, n_frames)
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
    trunk = getattr(model, "pretrained", None)
    with strict_fp32(device):
        if not isinstance(trunk, ResNet):        # another backbone: its receptive field is not known here
            whole = np.concatenate(list(blocks))
            return model(model_input(whole[None], centre=False).to(device))[0].float().cpu().numpy()
        channels_sum, n_outputs = None, 0
        for (start, end, first, core), frames in plan_slices(blocks, chunk_plan(trunk, n_frames, chunk_frames)):
            maps = trunk.feature_maps(model_input(frames[None], centre=False).to(device))[..., first:first + core]
            part = maps.sum(dim=(2, 3), dtype=torch.float64)            # (1, channels)
            channels_sum = part if channels_sum is None else channels_sum + part
            n_outputs += core * maps.shape[2]
        pooled = (channels_sum / n_outputs).to(torch.float32)
        return F.linear(F.relu(trunk.avg_bn(pooled)), model.fc1)[0].float().cpu().numpy()


def embed_long(model, features: np.ndarray, device, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> np.ndarray:
    """(256,) embedding of one (frames, 40) recording held in memory, equal to ``model`` on the whole
    of it, computed in chunks (``embed_frame_blocks``) after ``model_input`` removed its mean."""
    whole = model_input(np.asarray(features)[None]).numpy()[0, 0].T     # (frames, 40) view, mean removed
    blocks = (whole[start:start + chunk_frames] for start in range(0, len(whole), chunk_frames))
    return embed_frame_blocks(model, blocks, len(whole), device, chunk_frames)
