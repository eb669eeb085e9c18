"""A speaker-labelled collection of ``<speaker>/<session>/<utterance>.npy`` feature files.

Files hold (frames, 40) features (float32 or float16). Crops are read through ``np.load(mmap_mode='r')``
so only the frames a crop needs are touched, never the whole utterance.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_loading.files import UserInputError


@dataclass(frozen=True)
class Utterance:
    path: Path
    speaker: str
    n_frames: int

    @property
    def key(self) -> str:
        """``speaker/session/utterance`` without the extension, as trial lists name utterances."""
        return "/".join(self.path.with_suffix("").parts[-3:])


def npy_frame_count(path: Path) -> int:
    """Number of frames of a stored feature file, read from its header alone."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, _ = read_header(handle)
    return int(shape[0])


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
        self.utterances = [Utterance(path, path.parts[-3], npy_frame_count(path)) for path in paths]
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
        return read_crop(self.utterances[index].path, start, length)


def read_crop(path, start: int, length: int) -> np.ndarray:
    features = np.load(path, mmap_mode="r")
    n_frames = features.shape[0]
    if n_frames >= start + length:
        return np.asarray(features[start:start + length], dtype=np.float32)
    repeats = -(-length // n_frames)
    return np.tile(np.asarray(features, dtype=np.float32), (repeats, 1))[:length]


def random_start(rng: np.random.Generator, n_frames: int, length: int) -> int:
    """A uniformly random crop start; 0 when the utterance is not longer than the crop."""
    return int(rng.integers(0, n_frames - length + 1)) if n_frames > length else 0
