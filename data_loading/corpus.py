"""A speaker-labelled collection of ``<speaker>/<session>/<utterance>.npy`` feature files.

Files hold (frames, 40) features (float32 or float16; ``feat_extract.features`` validates and reads
them). Each header is read once when the corpus is listed; a crop is then one positioned read
(``os.preadv``) of exactly its frames, never the whole utterance (cheaper than
``np.load(mmap_mode='r')``, whose per-call set-up dominates a 200-frame read).
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserInputError
from feat_extract.fbank import N_MELS
from feat_extract.features import NpyLayout, feature_layout, fill_crop, read_stored_crop


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
        self.utterances = [Utterance(path, path.parts[-3], feature_layout(path)) for path in paths]
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

    def read_crop(self, index: int, start: int, length: int, wrap: str = "tile") -> np.ndarray:
        """``length`` frames from ``start`` as float32 (length, 40); a short utterance is tiled (or
        doubled: ``feat_extract.features.fill_crop``)."""
        return self.read_stored_crop(index, start, length, wrap).astype(np.float32, copy=False)

    def read_stored_crop(self, index: int, start: int, length: int, wrap: str = "tile") -> np.ndarray:
        """As ``read_crop`` but in the stored dtype (float16 stays float16)."""
        utterance = self.utterances[index]
        return read_stored_crop(utterance.path, start, length, utterance.layout, wrap)


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


def random_start(rng: np.random.Generator, n_frames: int, length: int) -> int:
    """A uniformly random crop start; 0 when the utterance is not longer than the crop."""
    return int(rng.integers(0, n_frames - length + 1)) if n_frames > length else 0
