"""Stored feature files: the one validator, the one reader, and the one ``model_input``.

A feature file is a ``.npy`` holding a C-order float (frames >= 1, 40) array: ``log_mel_fbank``
output, float32 or float16. ``feature_layout`` validates a file from its header alone (every reader
and the extraction's resume check use it). ``read_crop`` reads ``length`` frames from ``start`` with
one positioned read (``os.preadv``), never the whole file; an utterance shorter than the crop is
either tiled (``wrap="tile"``: training and identification crops) or doubled as the original
EER_short.py does (``wrap="double"``: appended to itself until longer than the crop, then cut).
``read_features`` reads a whole utterance. ``model_input`` turns (n, frames, 40) features into the
encoder's (n, 1, 40, frames) input with each item's mean over time subtracted (the paper's
``normalize_frames``), for training, evaluation and the API alike.
"""
import os
from dataclasses import dataclass

import numpy as np

from common.errors import UserInputError
from common.files import read_npy_header
from feat_extract.fbank import N_MELS

WRAPS = ("tile", "double")


@dataclass(frozen=True)
class NpyLayout:
    """Where a stored (frames, n_mels) C-order array's data starts, and its element type."""
    n_frames: int
    offset: int
    dtype: str

    @property
    def n_bytes(self) -> int:
        return self.offset + self.n_frames * N_MELS * np.dtype(self.dtype).itemsize


def feature_layout(path) -> NpyLayout:
    """Validate a feature file from its header alone: 2-d (frames >= 1, 40) float C-order, whole."""
    try:
        shape, fortran_order, dtype, offset = read_npy_header(path)
    except FileNotFoundError:
        raise UserInputError(f"{path}: feature file not found") from None
    except (OSError, ValueError, EOFError) as error:
        raise UserInputError(f"{path}: not a readable .npy feature file ({error})") from None
    check_layout(tuple(shape), dtype, fortran_order, path)
    layout = NpyLayout(int(shape[0]), offset, dtype.str)
    actual_size = os.path.getsize(path)
    if actual_size < layout.n_bytes:
        raise UserInputError(f"{path}: truncated feature file ({actual_size} of {layout.n_bytes} bytes)")
    return layout


def check_layout(shape: tuple, dtype, fortran_order: bool, where) -> None:
    """The rules every feature array obeys, on disk or in memory."""
    if np.dtype(dtype).kind != "f" or fortran_order:
        raise UserInputError(f"{where}: features must be a C-order float array, found {dtype}")
    if len(shape) != 2 or shape[0] < 1 or shape[1] != N_MELS:
        raise UserInputError(f"{where}: features must have shape (frames, {N_MELS}), found {shape}"
                             + (" (wrong number of filters?)" if len(shape) == 2 and shape[0] else ""))


def is_complete_feature(path) -> bool:
    """True when ``path`` is a valid feature file of exactly the size its header announces (a file a
    killed writer or another tool left torn is not, and gets extracted again)."""
    try:
        return os.path.getsize(path) == feature_layout(path).n_bytes
    except (UserInputError, OSError):
        return False


def check_finite(features: np.ndarray, where) -> np.ndarray:
    if not np.isfinite(features).all():
        raise UserInputError(f"{where}: features contain NaN or infinite values (re-extract it)")
    return features


def check_features(array, where="array input") -> np.ndarray:
    """An in-memory (frames, 40) array, checked like a file, as finite float32."""
    array = np.asarray(array)
    check_layout(array.shape, array.dtype, False, where)
    return check_finite(array.astype(np.float32, copy=False), where)


def read_features(path, layout: NpyLayout = None) -> np.ndarray:
    """A whole stored utterance as checked (finite) float32 (frames, 40)."""
    layout = layout or feature_layout(path)
    return check_finite(read_crop(path, 0, layout.n_frames, layout), path)


def read_frames_into(path, layout: NpyLayout, start: int, rows: np.ndarray) -> None:
    """Fill ``rows`` (count, 40, stored dtype, C-contiguous) with frames from ``start``: one
    ``os.preadv`` straight into the caller's buffer (no intermediate bytes object)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the name
        raise UserInputError(f"{path}: cannot read a feature file the corpus index lists "
                             f"({getattr(error, 'strerror', None) or error}); "
                             "if files were removed by hand, pass --reindex") from None
    try:
        n_read = os.preadv(descriptor, [rows], layout.offset + start * rows.strides[0])
    finally:
        os.close(descriptor)
    if n_read != rows.nbytes:
        raise UserInputError(f"{path}: truncated feature file (wanted frames {start}..{start + len(rows)})")


def fill_crop(path, layout: NpyLayout, start: int, crop: np.ndarray, wrap: str = "tile") -> None:
    """Fill ``crop`` (length, 40, stored dtype) with the utterance's frames from ``start``, reading each
    frame at most once. ``wrap="tile"``: an utterance shorter than ``start + length`` is read from
    frame 0 and repeated (training and identification crops). ``wrap="double"``: crop position ``i``
    is frame ``(start + i) % frames``, i.e. ``start`` is a position in the utterance doubled as the
    original EER_short.py doubles it."""
    if wrap not in WRAPS:
        raise ValueError(f"wrap must be one of {WRAPS}, got {wrap!r}")
    n_frames, length = layout.n_frames, len(crop)
    if wrap == "tile" and n_frames < start + length:
        start = 0
    start %= n_frames
    period = min(length, n_frames)
    first = min(period, n_frames - start)
    read_frames_into(path, layout, start, crop[:first])
    if first < period:
        read_frames_into(path, layout, 0, crop[first:period])
    for filled in range(period, length, period):   # from here on the crop repeats itself
        crop[filled:filled + period] = crop[:min(period, length - filled)]


def read_stored_crop(path, start: int, length: int, layout: NpyLayout = None, wrap: str = "tile") -> np.ndarray:
    """``length`` frames of a stored utterance from ``start``, in the stored dtype (see ``fill_crop``)."""
    layout = layout or feature_layout(path)
    crop = np.empty((length, N_MELS), dtype=layout.dtype)
    fill_crop(path, layout, start, crop, wrap)
    return crop


def read_crop(path, start: int, length: int, layout: NpyLayout = None, wrap: str = "tile") -> np.ndarray:
    """``length`` float32 frames of a stored utterance from ``start`` (see ``fill_crop``)."""
    return read_stored_crop(path, start, length, layout, wrap).astype(np.float32, copy=False)


def model_input(features: np.ndarray, out=None, centre: bool = True):
    """(n, frames, 40) features -> (n, 1, 40, frames) float32 torch tensor, each item's mean over time
    subtracted. ``out``: a preallocated tensor of that shape to fill (e.g. in shared memory).
    ``centre=False``: layout only, for a slice of a recording whose mean was removed already."""
    import torch  # here, not at the top: feature extraction uses this module without torch
    features = np.asarray(features)
    out = torch.empty((len(features), 1, N_MELS, features.shape[1])) if out is None else out
    frames_last = out.numpy()[:, 0]
    np.copyto(frames_last, features.transpose(0, 2, 1))    # one batched converting transpose
    if centre:
        frames_last -= frames_last.mean(axis=2, keepdims=True)
    return out
