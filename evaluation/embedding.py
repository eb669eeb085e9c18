"""Speaker embeddings of stored features: checked loading, batched crops, exact padded full utterances.

The model input is (batch, 1, 40, frames); every utterance or crop has its mean over time subtracted
first, as the paper's code does (``normalize_frames``; a no-op up to rounding for stored features,
which extraction already mean-normalised).

Full-length utterances of different lengths share a batch: they are zero-padded on the right and,
after every layer of the ResNet trunk, the padded frames are set back to zero, so each output equals
the one-by-one embedding (the convolutions see the same zeros beyond the edge); pooling averages the
valid frames only.
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from common.errors import UserInputError
from common.files import read_npy_header
from feat_extract.fbank import N_MELS
from model.resnet import ResNet

LOAD_ERRORS = (ValueError, EOFError, OSError, TypeError)


# ---------------------------------------------------------------- checks of stored features
def feature_shape(path) -> tuple:
    """(frames, filters) of a stored ``.npy`` read from its header; a clear error if it is not one."""
    try:
        shape, _, dtype, _ = read_npy_header(path)
    except FileNotFoundError:
        raise UserInputError(f"{path}: feature file not found") from None
    except LOAD_ERRORS as error:
        raise UserInputError(f"{path}: not a readable .npy feature file ({error})") from None
    check_layout(shape, dtype, path)
    return tuple(shape)


def check_layout(shape, dtype, where) -> None:
    if not np.issubdtype(dtype, np.floating):
        raise UserInputError(f"{where}: features must be float16/float32/float64, found {dtype}")
    if len(shape) != 2 or shape[1] != N_MELS:
        raise UserInputError(f"{where}: expected (frames, {N_MELS}) log-mel features, found shape "
                             f"{tuple(shape)} (wrong number of filters?)")
    if shape[0] == 0:
        raise UserInputError(f"{where}: empty feature file (0 frames)")


def check_finite(features: np.ndarray, where) -> np.ndarray:
    if not np.isfinite(features).all():
        raise UserInputError(f"{where}: features contain NaN or infinite values")
    return features


def load_features(path) -> np.ndarray:
    """A stored feature file as checked float32 (frames, 40)."""
    feature_shape(path)
    try:
        features = np.load(path, allow_pickle=False)
    except LOAD_ERRORS as error:
        raise UserInputError(f"{path}: truncated or corrupt .npy feature file ({error})") from None
    return check_finite(features.astype(np.float32, copy=False), path)


def as_features(item) -> np.ndarray:
    """A path (loaded and checked) or an in-memory (frames, 40) array (checked)."""
    if isinstance(item, np.ndarray):
        check_layout(item.shape, item.dtype, "array input")
        return check_finite(item.astype(np.float32, copy=False), "array input")
    return load_features(item)


def item_length(item) -> int:
    return int(item.shape[0]) if isinstance(item, np.ndarray) else feature_shape(item)[0]


# ---------------------------------------------------------------- forward passes
def model_input(batch: np.ndarray, device) -> torch.Tensor:
    """(n, frames, 40) features -> (n, 1, 40, frames) tensor with each item's time mean subtracted."""
    batch = batch - batch.mean(axis=1, keepdims=True)
    return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 2, 1)[:, None])).to(device)


def progress(total: int, desc: str):
    """A tqdm bar on stderr; none when ``desc`` is empty (inner loops of an outer bar)."""
    return tqdm(total=total, desc=desc, unit="utt", file=sys.stderr, dynamic_ncols=True, disable=not desc)


@torch.inference_mode()
def embed_crops(model, crops, device, batch_size: int = 64, desc: str = "embedding crops") -> np.ndarray:
    """(n, 256) float32 embeddings of a sequence of (length, 40) crops, ``batch_size`` at a time.

    ``crops`` only needs ``len`` and indexing, so it may read its items lazily; items of one batch
    with different lengths are run as separate forwards."""
    model.eval()
    embeddings = []
    with progress(len(crops), desc) as bar:
        for begin in range(0, len(crops), batch_size):
            batch = [np.asarray(crops[i], dtype=np.float32) for i in range(begin, min(begin + batch_size, len(crops)))]
            embeddings.append(embed_equal_length_groups(model, batch, device))
            bar.update(len(batch))
    return np.concatenate(embeddings) if embeddings else np.zeros((0, 0), np.float32)


def embed_equal_length_groups(model, batch: list, device) -> np.ndarray:
    lengths = np.array([len(item) for item in batch])
    out = [None] * len(batch)
    for length in np.unique(lengths):
        members = np.flatnonzero(lengths == length)
        result = model(model_input(np.stack([batch[i] for i in members]), device)).float().cpu().numpy()
        for row, index in zip(result, members):
            out[index] = row
    return np.stack(out)


@torch.inference_mode()
def embed_utterances(model, paths_or_arrays, device, batch_size: int = 16,
                     desc: str = "embedding utterances") -> np.ndarray:
    """(n, 256) float32 full-length embeddings, in input order.

    Items (paths of stored features or (frames, 40) arrays) are sorted by length and batched; for the
    paper's ResNet trunk, items of different lengths are padded and masked (exact), for other models
    only equal lengths share a forward."""
    model.eval()
    items = list(paths_or_arrays)
    lengths = np.array([item_length(item) for item in items], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    out = [None] * len(items)
    with progress(len(items), desc) as bar:
        for begin in range(0, len(items), batch_size):
            members = order[begin:begin + batch_size]
            batch = [as_features(items[i]) for i in members]
            for index, row in zip(members, embed_mixed_lengths(model, batch, device)):
                out[index] = row
            bar.update(len(members))
    return np.stack(out) if out else np.zeros((0, 0), np.float32)


def embed_mixed_lengths(model, batch: list, device) -> np.ndarray:
    if not isinstance(getattr(model, "pretrained", None), ResNet):
        return embed_equal_length_groups(model, batch, device)
    lengths = np.array([len(item) for item in batch])
    padded = np.zeros((len(batch), lengths.max(), N_MELS), dtype=np.float32)
    for row, item in zip(padded, batch):
        row[:len(item)] = item - item.mean(axis=0, keepdims=True)
    x = torch.from_numpy(np.ascontiguousarray(padded.transpose(0, 2, 1)[:, None])).to(device)
    return masked_forward(model, x, torch.as_tensor(lengths, device=device)).float().cpu().numpy()


# ---------------------------------------------------------------- exact padded + masked forward
def time_mask(lengths: torch.Tensor, frames: int, dtype) -> torch.Tensor:
    """(n, 1, 1, frames): 1 on each item's valid frames, 0 on padding."""
    valid = torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]
    return valid[:, None, None, :].to(dtype)


def conv_lengths(conv: torch.nn.Conv2d, lengths: torch.Tensor) -> torch.Tensor:
    """Valid output frames of ``conv`` (time is the last axis) for inputs of ``lengths`` frames."""
    kernel, stride, padding = conv.kernel_size[1], conv.stride[1], conv.padding[1]
    return torch.div(lengths + 2 * padding - kernel, stride, rounding_mode="floor") + 1


def masked_block(block, x: torch.Tensor, lengths: torch.Tensor):
    identity = x if block.downsample is None else block.downsample(x)
    lengths = conv_lengths(block.conv1, lengths)
    out = block.relu(block.bn1(block.conv1(x)))
    mask = time_mask(lengths, out.shape[-1], out.dtype)
    out = block.bn2(block.conv2(out * mask))
    return block.relu(out + identity) * mask, lengths


def masked_forward(model, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``model(x)`` for zero-padded items of ``lengths`` frames, each as if run alone."""
    trunk = model.pretrained
    lengths = conv_lengths(trunk.conv1, lengths)
    h = trunk.relu(trunk.bn1(trunk.conv1(x)))
    h = h * time_mask(lengths, h.shape[-1], h.dtype)
    for stage in (trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4):
        for block in stage:
            h, lengths = masked_block(block, h, lengths)
    pooled = h.sum(dim=(2, 3)) / (h.shape[2] * lengths[:, None].to(h.dtype))
    return F.linear(F.relu(trunk.avg_bn(pooled)), model.fc1)


# ---------------------------------------------------------------- scoring
def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of row i of ``a`` with row i of ``b`` (float32), vectorised."""
    a = torch.nn.functional.normalize(torch.as_tensor(a, dtype=torch.float32), dim=1)
    b = torch.nn.functional.normalize(torch.as_tensor(b, dtype=torch.float32), dim=1)
    return (a * b).sum(dim=1).numpy()
