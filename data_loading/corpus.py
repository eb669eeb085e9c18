"""A speaker-labelled collection of ``<speaker>/<session>/<utterance>.npy`` feature files.

Files hold (frames, 40) features (float32 or float16). Each header is read once when the corpus is
listed; a crop is then one positioned read (``os.pread``) of exactly its frames, never the whole
utterance (cheaper than ``np.load(mmap_mode='r')``, whose per-call set-up dominates a 200-frame read).
"""
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserInputError
from common.files import read_npy_header
from feat_extract.fbank import N_MELS


@dataclass(frozen=True)
class NpyLayout:
    """Where a stored (frames, n_mels) C-order array's data starts, and its element type."""
    n_frames: int
    offset: int
    dtype: str


@dataclass(frozen=True)
class Utterance:
    path: Path
    speaker: str
    layout: NpyLayout

    @property
    def n_frames(self) -> int:
        return self.layout.n_frames

    @property
    def key(self) -> str:
        """``speaker/session/utterance`` without the extension, as trial lists name utterances."""
        return "/".join(self.path.with_suffix("").parts[-3:])


def read_npy_layout(path, n_mels: int = N_MELS) -> NpyLayout:
    """Validate a feature file from its header alone: 2-d (frames >= 1, n_mels) float C-order, whole."""
    try:
        shape, fortran_order, dtype, offset = read_npy_header(path)
    except (OSError, ValueError, EOFError) as error:
        raise UserInputError(f"{path}: not a readable .npy feature file ({error})") from None
    if dtype.kind != "f" or fortran_order:
        raise UserInputError(f"{path}: features must be a C-order float array, found {dtype}")
    if len(shape) != 2 or shape[0] < 1 or shape[1] != n_mels:
        raise UserInputError(f"{path}: features must have shape (frames, {n_mels}), found {shape}")
    expected_size = offset + shape[0] * shape[1] * dtype.itemsize
    actual_size = os.path.getsize(path)
    if actual_size < expected_size:
        raise UserInputError(f"{path}: truncated feature file ({actual_size} of {expected_size} bytes)")
    return NpyLayout(int(shape[0]), offset, dtype.str)


def list_feature_files(root: Path) -> list:
    """All ``<speaker>/<session>/<utt>.npy`` files below ``root``, sorted."""
    return sorted(Path(root).glob("*/*/*.npy"))


class FeatureCorpus:
    """Utterances of one or more feature roots, grouped by speaker (labels follow sorted speaker ids)."""

    def __init__(self, roots):
        roots = [Path(root) for root in ([roots] if isinstance(roots, (str, Path)) else roots)]
        paths = [path for root in roots for path in list_feature_files(root)]
        if not paths:
            raise UserInputError(f"no feature files (<speaker>/<session>/<utt>.npy) under "
                                 f"{', '.join(str(root) for root in roots)}")
        self.roots = roots
        self.utterances = [Utterance(path, path.parts[-3], read_npy_layout(path)) for path in paths]
        self.speakers = sorted({utt.speaker for utt in self.utterances})
        self.label_of = {speaker: label for label, speaker in enumerate(self.speakers)}
        self.by_speaker = [[] for _ in self.speakers]
        for index, utt in enumerate(self.utterances):
            self.by_speaker[self.label_of[utt.speaker]].append(index)

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def n_speakers(self) -> int:
        return len(self.speakers)

    def label(self, index: int) -> int:
        return self.label_of[self.utterances[index].speaker]

    def read_full(self, index: int) -> np.ndarray:
        """The whole utterance as float32 (frames, 40)."""
        return np.load(self.utterances[index].path).astype(np.float32)

    def read_crop(self, index: int, start: int, length: int) -> np.ndarray:
        """``length`` frames from ``start`` as float32 (length, 40); a short utterance is tiled."""
        return self.read_stored_crop(index, start, length).astype(np.float32, copy=False)

    def read_stored_crop(self, index: int, start: int, length: int) -> np.ndarray:
        """As ``read_crop`` but in the stored dtype (float16 stays float16)."""
        utterance = self.utterances[index]
        return read_stored_crop(utterance.path, start, length, utterance.layout)


def read_frames_into(path, layout: NpyLayout, start: int, rows: np.ndarray) -> None:
    """Fill ``rows`` (count, n_mels, stored dtype, C-contiguous) with frames from ``start``: one
    ``os.preadv`` straight into the caller's buffer (no intermediate bytes object)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        n_read = os.preadv(descriptor, [rows], layout.offset + start * rows.strides[0])
    finally:
        os.close(descriptor)
    if n_read != rows.nbytes:
        raise UserInputError(f"{path}: truncated feature file (wanted frames {start}..{start + len(rows)})")


def read_stored_crops(corpus, indices, starts, length: int) -> np.ndarray:
    """(n, length, n_mels) crops of ``corpus`` utterances in their common stored dtype, tiled like
    ``read_stored_crop``; None when the utterances are stored in different dtypes."""
    layouts = [corpus.utterances[index].layout for index in indices]
    if len({layout.dtype for layout in layouts}) != 1:
        return None
    crops = np.empty((len(layouts), length, N_MELS), dtype=layouts[0].dtype)
    for crop, index, start, layout in zip(crops, indices, starts, layouts):
        fill_crop(corpus.utterances[index].path, layout, int(start), crop)
    return crops


def fill_crop(path, layout: NpyLayout, start: int, crop: np.ndarray) -> None:
    """Fill ``crop`` (length, n_mels, stored dtype) with frames from ``start``; an utterance shorter
    than the crop is read whole and repeated."""
    n_frames, length = layout.n_frames, len(crop)
    if n_frames >= start + length:
        read_frames_into(path, layout, start, crop)
        return
    read_frames_into(path, layout, 0, crop[:n_frames])
    for filled in range(n_frames, length, n_frames):
        crop[filled:filled + n_frames] = crop[:min(n_frames, length - filled)]


def read_crop(path, start: int, length: int, layout: NpyLayout = None) -> np.ndarray:
    """``length`` float32 frames of a stored utterance from ``start``, tiled when it is shorter."""
    return read_stored_crop(path, start, length, layout).astype(np.float32, copy=False)


def read_stored_crop(path, start: int, length: int, layout: NpyLayout = None) -> np.ndarray:
    """``length`` frames of a stored utterance from ``start`` in its stored dtype, tiled when shorter."""
    layout = layout or read_npy_layout(path)
    crop = np.empty((length, N_MELS), dtype=layout.dtype)
    fill_crop(path, layout, start, crop)
    return crop


def random_start(rng: np.random.Generator, n_frames: int, length: int) -> int:
    """A uniformly random crop start; 0 when the utterance is not longer than the crop."""
    return int(rng.integers(0, n_frames - length + 1)) if n_frames > length else 0
