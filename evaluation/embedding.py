"""Speaker embeddings of stored features: checked loading, batched crops, exact padded full utterances.

The model input is (batch, 1, 40, frames); every utterance or crop has its mean over time subtracted
first, as the paper's code does (``normalize_frames``; a no-op up to rounding for stored features,
which extraction already mean-normalised).

Full-length utterances of different lengths share a batch: they are zero-padded on the right and
run through ``model(x, lengths)``, the model's own exact padded + masked forward.
"""
import contextlib
import sys

import numpy as np
import torch
from tqdm import tqdm

from feat_extract.fbank import N_MELS
from feat_extract.features import check_features, feature_layout, model_input, read_features

def as_features(item) -> np.ndarray:
    """A path of a stored feature file or an in-memory (frames, 40) array, checked, as float32."""
    if isinstance(item, np.ndarray):
        return check_features(item)
    return read_features(item)


def item_length(item) -> int:
    return int(item.shape[0]) if isinstance(item, np.ndarray) else feature_layout(item).n_frames


# ---------------------------------------------------------------- forward passes
@contextlib.contextmanager
def strict_fp32(device, tf32: bool = False):
    """Full float32 convolutions and matrix products on the GPU while inside; the flags are restored
    after. PyTorch lets cuDNN convolutions use TF32 by default (10-bit mantissa, ~1e-3 relative
    error per product), too coarse for GPU trial scores to equal the CPU's, so evaluation turns it
    off (``tf32=True`` allows it, to measure the difference: bench/gpu_equivalence.py)."""
    if torch.device(device).type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


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
    with progress(len(crops), desc) as bar, strict_fp32(device):
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
        result = model(model_input(np.stack([batch[i] for i in members])).to(device)).float().cpu().numpy()
        for row, index in zip(result, members):
            out[index] = row
    return np.stack(out)


@torch.inference_mode()
def embed_utterances(model, paths_or_arrays, device, batch_size: int = 16,
                     desc: str = "embedding utterances", bar=None) -> np.ndarray:
    """(n, 256) float32 full-length embeddings, in input order (progress on ``bar``, an outer tqdm
    bar, when given; else on a bar of its own named ``desc``).

    Items (paths of stored features or (frames, 40) arrays) are sorted by length and batched; items
    of different lengths are zero-padded and run through the model's masked pass
    (``model(x, lengths)``), which equals embedding each alone."""
    model.eval()
    items = list(paths_or_arrays)
    lengths = np.array([item_length(item) for item in items], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    out = [None] * len(items)
    with contextlib.nullcontext(bar) if bar is not None else progress(len(items), desc) as bar, \
            strict_fp32(device):
        for begin in range(0, len(items), batch_size):
            members = order[begin:begin + batch_size]
            batch = [as_features(items[i]) for i in members]
            for index, row in zip(members, embed_mixed_lengths(model, batch, device)):
                out[index] = row
            bar.update(len(members))
    return np.stack(out) if out else np.zeros((0, 0), np.float32)


def embed_mixed_lengths(model, batch: list, device) -> np.ndarray:
    """Items of different lengths in one forward: zero-padded, with the model's exact masked pass."""
    lengths = np.array([len(item) for item in batch])
    x = torch.zeros(len(batch), 1, N_MELS, int(lengths.max()))
    for row, item in zip(x, batch):
        row[..., :len(item)] = model_input(item[None])[0]
    return model(x.to(device), torch.as_tensor(lengths, device=device)).float().cpu().numpy()


# ---------------------------------------------------------------- scoring
def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of row i of ``a`` with row i of ``b`` (float32), vectorised."""
    a = torch.nn.functional.normalize(torch.as_tensor(a, dtype=torch.float32), dim=1)
    b = torch.nn.functional.normalize(torch.as_tensor(b, dtype=torch.float32), dim=1)
    return (a * b).sum(dim=1).numpy()
