"""The corpus as it was before the corpus index (the baseline of bench/vox2_bench.py).

``ListedCorpus`` lists ``*/*/*.npy`` with a sorted glob, reads and validates every header, and keeps
one frozen ``Utterance`` dataclass (path, speaker, NpyLayout) per file plus per-speaker Python lists,
exactly as ``data_loading.corpus.FeatureCorpus`` did. The column attributes the episode code reads
today (``n_frames``, ``dtype_codes``, ``path_str``, ``layout``) go through those objects, as the old
code did, so forked DataLoader workers touch them the same way.
"""
from pathlib import Path

import numpy as np

from data_loading.corpus import Utterance, list_feature_files
from feat_extract.features import feature_layout


class ObjectColumn:
    """``column[indices]`` read attribute by attribute from the utterance objects."""

    def __init__(self, utterances: list, read):
        self.utterances, self.read = utterances, read

    def __getitem__(self, indices):
        if np.ndim(indices) == 0:
            return self.read(self.utterances[int(indices)])
        return np.array([self.read(self.utterances[int(i)]) for i in indices])


class ListedCorpus:
    def __init__(self, root, **index_options):  # (the index options of FeatureCorpus do not apply)
        paths = list_feature_files(Path(root))
        self.roots = [Path(root)]
        self.utterances = [Utterance(path, path.parts[-3], feature_layout(path)) for path in paths]
        self.speakers = sorted({utt.speaker for utt in self.utterances})
        self.label_of = {speaker: label for label, speaker in enumerate(self.speakers)}
        self.by_speaker = [[] for _ in self.speakers]
        for index, utt in enumerate(self.utterances):
            self.by_speaker[self.label_of[utt.speaker]].append(index)
        self.dtypes = sorted({utt.layout.dtype for utt in self.utterances})
        self.n_frames = ObjectColumn(self.utterances, lambda utt: utt.layout.n_frames)
        self.dtype_codes = ObjectColumn(self.utterances, lambda utt: self.dtypes.index(utt.layout.dtype))

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def n_speakers(self) -> int:
        return len(self.speakers)

    def path_str(self, index: int) -> str:
        return str(self.utterances[index].path)

    def layout(self, index: int):
        return self.utterances[index].layout
