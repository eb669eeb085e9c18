"""A speaker-labelled collection of ``<speaker>/<session>/<utterance>.npy`` feature files.

Files hold (frames, 40) features (float32 or float16; ``feat_extract.features`` validates and reads
them). What the corpus knows about them (paths,
speakers, frames, data offsets, dtypes) comes from each root's corpus index
(feat_extract/corpus_index.py), so start-up opens no feature file, and is held in numpy arrays, not one Python
object per utterance: forked DataLoader workers share those pages instead of copying them as
reference counts and the garbage collector touch objects. A crop is one positioned read
(``os.pread``) of exactly its frames, never the whole utterance (cheaper than
``np.load(mmap_mode='r')``, whose per-call set-up dominates a 200-frame read).
"""
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserInputError
from feat_extract.corpus_index import load_index
from feat_extract.fbank import N_MELS
from feat_extract.features import NpyLayout, fill_crop, read_stored_crop


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
    """All ``<speaker>/<session>/<utt>.npy`` files below ``root``, sorted (a full listing: what the
    corpus index holds, without reading it)."""
    return sorted(Path(root).glob("*/*/*.npy"))


class UtteranceTable:
    """``corpus.utterances[i]``: an ``Utterance`` made on demand from the corpus arrays (none is kept)."""

    def __init__(self, corpus: "FeatureCorpus"):
        self.corpus = corpus

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        corpus = self.corpus
        index = range(len(corpus))[index]  # negative indices, IndexError
        return Utterance(corpus.path(index), corpus.speakers[corpus.labels[index]], corpus.layout(index))

    def __iter__(self):
        return (self[i] for i in range(len(self)))


class FeatureCorpus:
    """Utterances of one or more feature roots, grouped by speaker (labels follow sorted speaker ids).

    Arrays, one row per utterance in listing order (root by root): ``relpaths`` (bytes, relative to
    ``roots[root_of]``), ``labels``, ``n_frames``, ``offsets``, ``dtype_codes`` (rows of ``dtypes``);
    ``by_speaker[label]`` is an int64 array of that speaker's utterance numbers, ascending.
    ``reindex`` rebuilds the roots' indexes; ``build_index=False`` (torchrun ranks other than 0)
    waits for another process to build a missing one."""

    def __init__(self, roots, reindex: bool = False, build_index: bool = True):
        roots = [Path(root) for root in ([roots] if isinstance(roots, (str, Path)) else roots)]
        indexes = [load_index(root, reindex, builder=build_index) for root in roots]
        if not sum(len(index) for index in indexes):
            raise UserInputError(f"no feature files (<speaker>/<session>/<utt>.npy) under "
                                 f"{', '.join(str(root) for root in roots)}")
        self.roots = roots
        self.speakers = sorted({os.fsdecode(name) for index in indexes for name in index.speakers})
        self.label_of = {speaker: label for label, speaker in enumerate(self.speakers)}
        self.dtypes = sorted({name.decode() for index in indexes for name in index.dtypes})
        self.root_of = np.repeat(np.arange(len(roots), dtype=np.int16), [len(index) for index in indexes])
        self.relpaths = np.concatenate([index.path for index in indexes])
        self.labels = np.concatenate([remap(index.speakers, self.label_of, os.fsdecode)[index.speaker]
                                      for index in indexes]).astype(np.int32)
        self.n_frames = np.concatenate([index.n_frames for index in indexes]).astype(np.int64)
        self.offsets = np.concatenate([index.offset for index in indexes]).astype(np.int64)
        dtype_of = {name: code for code, name in enumerate(self.dtypes)}
        self.dtype_codes = np.concatenate([remap(index.dtypes, dtype_of, bytes.decode)[index.dtype]
                                           for index in indexes]).astype(np.uint8)
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], np.arange(len(self.speakers) + 1))
        self.by_speaker = [order[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]
        self.root_names = [str(root) for root in roots]

    def __len__(self) -> int:
        return len(self.relpaths)

    @property
    def n_speakers(self) -> int:
        return len(self.speakers)

    @property
    def utterances(self) -> UtteranceTable:
        return UtteranceTable(self)

    def label(self, index: int) -> int:
        return int(self.labels[index])

    def path_str(self, index: int) -> str:
        return os.path.join(self.root_names[self.root_of[index]], os.fsdecode(self.relpaths[index]))

    def path(self, index: int) -> Path:
        return Path(self.path_str(index))

    def layout(self, index: int) -> NpyLayout:
        return NpyLayout(int(self.n_frames[index]), int(self.offsets[index]),
                         self.dtypes[self.dtype_codes[index]])

    def digest(self) -> str:
        """A hash of what the corpus holds (paths relative to their roots, speakers, frames, offsets,
        dtypes): equal in every process that sees the same store. Computed on demand (~0.1 s for
        VoxCeleb2), for torchrun ranks to check that they agree."""
        hasher = hashlib.blake2b(digest_size=16)
        for array in (self.relpaths, self.root_of, self.labels, self.n_frames, self.offsets, self.dtype_codes):
            hasher.update(np.ascontiguousarray(array).tobytes())
        hasher.update("\n".join(self.speakers + self.dtypes).encode(errors="surrogateescape"))
        return hasher.hexdigest()

    def keys(self) -> list:
        """``speaker/session/utterance`` of every utterance (trial-list names without the extension)."""
        return [os.fsdecode(rel)[:-len(".npy")] for rel in self.relpaths]

    def read_crop(self, index: int, start: int, length: int, wrap: str = "tile") -> np.ndarray:
        """``length`` frames from ``start`` as float32 (length, 40); a short utterance is tiled (or
        doubled: ``feat_extract.features.fill_crop``)."""
        return self.read_stored_crop(index, start, length, wrap).astype(np.float32, copy=False)

    def read_stored_crop(self, index: int, start: int, length: int, wrap: str = "tile") -> np.ndarray:
        """As ``read_crop`` but in the stored dtype (float16 stays float16)."""
        return read_stored_crop(self.path_str(index), start, length, self.layout(index), wrap)


def remap(names: np.ndarray, code_of: dict, decode) -> np.ndarray:
    """Codes of an index's own table (``names``) in the corpus-wide table ``code_of``."""
    return np.array([code_of[decode(name)] for name in names], dtype=np.int64).reshape(-1)


def read_stored_crops(corpus, indices, starts, length: int) -> np.ndarray:
    """(n, length, n_mels) crops of ``corpus`` utterances in their common stored dtype, tiled like
    ``read_stored_crop``; None when the utterances are stored in different dtypes."""
    codes = corpus.dtype_codes[np.asarray(indices, dtype=np.int64)]
    # (not np.unique: in numpy 2 it imports numpy.ma, and a module first imported inside a forked
    # DataLoader worker is private memory of every worker: ~10-40 MiB each, bench/vox2_bench.py)
    if not len(codes) or (codes != codes[0]).any():
        return None
    crops = np.empty((len(codes), length, N_MELS), dtype=corpus.dtypes[codes[0]])
    for crop, index, start in zip(crops, indices, starts):
        fill_crop(corpus.path_str(index), corpus.layout(index), int(start), crop)
    return crops


def random_start(rng: np.random.Generator, n_frames: int, length: int) -> int:
    """A uniformly random crop start; 0 when the utterance is not longer than the crop."""
    return int(rng.integers(0, n_frames - length + 1)) if n_frames > length else 0
