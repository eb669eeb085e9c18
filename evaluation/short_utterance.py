"""Short-utterance verification, the paper's protocol (the original EER_short.py), batched.

For every evaluation speaker: ``pairs_per_speaker`` target pairs (two different utterances of the
speaker, drawn uniformly) and as many non-target pairs (an utterance of the speaker and an utterance
drawn uniformly from all other speakers' utterances). Enrolment = the full utterance; test = one
random crop of ``test_length`` frames. As in the original, an utterance not longer than the crop is
doubled (appended to itself) until it is, and the crop's centre is uniform over the valid positions.

With a trial list (``--protocol O|E|H`` or ``--trials``) the list's pairs are used instead of drawn
ones, the test side cropped the same way.

Trials are a pure function of (corpus, seed, test_length): pairs come from ``default_rng(seed)``,
crop starts from ``default_rng([seed, test_length])`` — so several test lengths share the same
pairs, and batch sizes never change the trials. Each enrolment utterance is embedded once; test
crops are embedded in batches.
"""
from dataclasses import dataclass

import numpy as np

import configure
from data_loading.corpus import FeatureCorpus
from common.errors import UserInputError
from evaluation.embedding import cosine_rows, embed_crops, embed_utterances
from evaluation.embedding_cache import cached_embeddings
from evaluation.trials import Trials, feature_relpath, first_names
from feat_extract.features import check_finite

EVALUATION_SPLITS = {"vox2": (("voxceleb1", "dev"), ("voxceleb1", "test")),  # as the paper
                     "vox1": (("voxceleb1", "test"),)}                       # unseen speakers only


@dataclass
class ShortTrials:
    enroll: np.ndarray   # (n,) corpus utterance index of the enrolment (full length)
    test: np.ndarray     # (n,) corpus utterance index of the test utterance
    start: np.ndarray    # (n,) first frame of the test crop in the (doubled) test utterance
    label: np.ndarray    # (n,) 1 = target, 0 = non-target
    length: int          # test crop frames (2 * (test_length // 2), as the original's window)

    def __len__(self) -> int:
        return len(self.label)


def evaluation_feature_roots(save_path, data_type: str) -> list:
    return configure.feature_roots(save_path, EVALUATION_SPLITS[data_type], "all",
                                   f"evaluation features for a {data_type}-trained model")


def draw_pairs(corpus: FeatureCorpus, pairs_per_speaker: int, rng: np.random.Generator):
    """(enroll, test, label) index arrays: per speaker, target pairs then non-target pairs."""
    speakers = [utts for utts in corpus.by_speaker if len(utts) >= 2]
    if len(speakers) < 2:
        raise UserInputError(f"short-utterance verification needs at least 2 speakers with 2 or more "
                             f"utterances; found {len(speakers)} among {corpus.n_speakers}")
    enroll, test, label, n_total = [], [], [], len(corpus)
    for utts in speakers:
        own = np.sort(np.asarray(utts))
        first = rng.integers(0, len(own), pairs_per_speaker)
        second = rng.integers(0, len(own) - 1, pairs_per_speaker)
        second += second >= first                      # a different utterance, uniformly
        enroll += [own[first], own[rng.integers(0, len(own), pairs_per_speaker)]]
        other = rng.integers(0, n_total - len(own), pairs_per_speaker)
        other += np.searchsorted(own - np.arange(len(own)), other, side="right")  # skip own utterances
        test += [own[second], other]
        label += [np.ones(pairs_per_speaker, np.int64), np.zeros(pairs_per_speaker, np.int64)]
    return np.concatenate(enroll), np.concatenate(test), np.concatenate(label)


def doubled_frames(n_frames: np.ndarray, window: int) -> np.ndarray:
    """Length after the original's doubling: ``while n <= window: n *= 2``."""
    n = np.asarray(n_frames, dtype=np.int64).copy()
    while (short := n <= window).any():
        n[short] *= 2
    return n


def listed_pairs(corpus: FeatureCorpus, trials: Trials) -> tuple:
    """(enroll, test, label) corpus index arrays of a trial list's pairs (a --protocol or --trials
    list): every name must have a feature file in the corpus (the first root that has it)."""
    position = {}
    for index, key in reversed(list(enumerate(corpus.keys()))):
        position[key] = index
    missing = [name for name in trials.utterances() if str(feature_relpath(name).with_suffix("")) not in position]
    if missing:
        raise UserInputError(f"{len(missing)} utterances of {trials.path} have no features under "
                             f"{', '.join(corpus.root_names)}: {first_names(missing)}")
    index_of = [position[str(feature_relpath(name).with_suffix(""))] for name in (trials.enroll + trials.test)]
    return (np.array(index_of[:len(trials)], np.int64), np.array(index_of[len(trials):], np.int64),
            np.asarray(trials.labels, np.int64))


def make_short_trials(corpus: FeatureCorpus, test_length: int, pairs_per_speaker: int = 100,
                      seed: int = 0, pairs: tuple = None) -> ShortTrials:
    """The seeded trials of the paper's protocol for crops of ``test_length`` frames; with ``pairs``
    ((enroll, test, label) from ``listed_pairs``) those pairs instead of drawn ones."""
    if test_length < 2:
        raise UserInputError(f"--test_length must be at least 2 frames, got {test_length}")
    if pairs_per_speaker < 1:
        raise UserInputError(f"--pairs_per_speaker must be positive, got {pairs_per_speaker}")
    enroll, test, label = pairs if pairs is not None else draw_pairs(corpus, pairs_per_speaker,
                                                                     np.random.default_rng(seed))
    half = test_length // 2
    frames = corpus.n_frames[test].astype(np.int64)
    starts = np.random.default_rng([seed, test_length]).integers(0, doubled_frames(frames, 2 * half) - 2 * half)
    return ShortTrials(enroll, test, starts, label, 2 * half)


class ShortCrops:
    """The test crops of ``trials``, read lazily (positioned reads) so that batches stay small."""

    def __init__(self, corpus: FeatureCorpus, trials: ShortTrials):
        self.corpus, self.trials = corpus, trials

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, index: int) -> np.ndarray:
        utterance = int(self.trials.test[index])
        crop = self.corpus.read_crop(utterance, int(self.trials.start[index]), self.trials.length, wrap="double")
        return check_finite(crop, self.corpus.utterances[utterance].path)


def score_short_trials(model, corpus: FeatureCorpus, trials: ShortTrials, device, batch_size: int = 64,
                       enroll_embeddings: dict = None) -> np.ndarray:
    """Cosine scores (float32) of ``trials``. Each enrolment utterance is embedded once at full
    length (pass the same dict ``enroll_embeddings`` to reuse them across test lengths); test crops
    are embedded ``batch_size`` at a time."""
    cache = {} if enroll_embeddings is None else enroll_embeddings
    needed = [int(i) for i in np.unique(trials.enroll) if int(i) not in cache]
    if needed:
        embedded = embed_utterances(model, [corpus.utterances[i].path for i in needed], device,
                                    max(1, batch_size // 4), desc="embedding enrolments")
        cache.update(zip(needed, embedded))
    enroll = np.stack([cache[int(i)] for i in trials.enroll])
    test = embed_crops(model, ShortCrops(corpus, trials), device, batch_size,
                       desc=f"embedding {trials.length}-frame test crops")
    return cosine_rows(enroll, test)


def cached_enrolments(model, corpus: FeatureCorpus, enroll: np.ndarray, device, batch_size: int, folder) -> dict:
    """{corpus index: full-length embedding} of the enrolment utterances ``enroll``, through the
    resumable embedding cache at ``folder`` (shared with EER_full.py: same names, same key)."""
    needed = [int(i) for i in np.unique(enroll)]
    keys = corpus.keys()
    names = [keys[i] + ".wav" for i in needed]
    located = {name: corpus.path(i) for name, i in zip(names, needed)}
    embedded = cached_embeddings(model, names, located, device, batch_size, folder, desc="embedding enrolments")
    return dict(zip(needed, embedded))
