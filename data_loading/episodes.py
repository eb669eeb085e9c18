"""Episodic sampling: ``n_way`` speakers, ``n_shot`` support and ``n_query`` query utterances each.

Crops are ordered shot-major (every class's first sample, then every class's second, ...). Support
crops are ``crop_frames`` long; with ``variable_query`` one query length per episode is drawn uniformly
from [100, 200). Every episode is a pure function of ``(seed, epoch, episode_index)``, so seeded runs,
resumed runs and every rank of a distributed run see the same episodes.
"""
from dataclasses import dataclass

import numpy as np
import torch

from data_loading.corpus import FeatureCorpus, read_stored_crops
from common.errors import UserInputError
from feat_extract.fbank import N_MELS
from feat_extract.features import model_input

CROP_FRAMES = 200
QUERY_FRAMES_RANGE = (100, 200)


@dataclass(frozen=True)
class EpisodeConfig:
    n_way: int
    n_shot: int = 1
    n_query: int = 0
    variable_query: bool = False
    crop_frames: int = CROP_FRAMES      # support crop length
    query_frames: int = None            # query crop length when not variable (None: crop_frames)

    @property
    def samples_per_class(self) -> int:
        return self.n_shot + self.n_query


@dataclass
class EpisodePlan:
    """Which crops make one episode: utterance indices, starts, support / query lengths, labels."""
    utterances: np.ndarray    # (n_way * (n_shot + n_query),) shot-major
    starts: np.ndarray
    support_frames: int
    query_frames: int
    label_g: np.ndarray       # global speaker labels, support then query, shot-major
    n_way: int
    n_shot: int

    @property
    def n_support(self) -> int:
        return self.n_way * self.n_shot


def eligible_speakers(corpus: FeatureCorpus, samples_per_class: int) -> np.ndarray:
    return np.array([label for label, utts in enumerate(corpus.by_speaker)
                     if len(utts) >= samples_per_class], dtype=np.int64)


def check_episode_config(corpus: FeatureCorpus, config: EpisodeConfig) -> np.ndarray:
    """Labels of speakers with enough utterances; a clear error if fewer than ``n_way`` of them."""
    speakers = eligible_speakers(corpus, config.samples_per_class)
    if len(speakers) < config.n_way:
        raise UserInputError(
            f"an episode needs {config.n_way} speakers with at least {config.samples_per_class} "
            f"utterances (n_shot + n_query), but the corpus has {len(speakers)} such speakers "
            f"out of {corpus.n_speakers}")
    return speakers


def plan_episode(corpus: FeatureCorpus, config: EpisodeConfig, rng: np.random.Generator,
                 speakers: np.ndarray = None) -> EpisodePlan:
    if speakers is None:
        speakers = check_episode_config(corpus, config)
    classes = rng.choice(speakers, size=config.n_way, replace=False)
    per_class = [rng.choice(corpus.by_speaker[label], size=config.samples_per_class, replace=False)
                 for label in classes]
    utterances = np.array(per_class, dtype=np.int64).T.reshape(-1)  # shot-major
    query_frames = config.query_frames or config.crop_frames
    if config.variable_query and config.n_query > 0:
        query_frames = int(rng.integers(*QUERY_FRAMES_RANGE))
    n_support = config.n_way * config.n_shot
    lengths = np.where(np.arange(len(utterances)) < n_support, config.crop_frames, query_frames)
    starts = random_starts(rng, corpus.n_frames[utterances], lengths)
    label_g = np.tile(classes, config.samples_per_class).astype(np.int64)
    return EpisodePlan(utterances, starts, config.crop_frames, query_frames, label_g,
                       config.n_way, config.n_shot)


def random_starts(rng: np.random.Generator, n_frames: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``random_start`` for every crop in one call: the same numbers from the same generator state
    (numpy draws an array of bounds element by element, in order, exactly as scalar calls do)."""
    starts = np.zeros(len(n_frames), dtype=np.int64)
    longer = n_frames > lengths
    if longer.any():
        starts[longer] = rng.integers(0, (n_frames - lengths + 1)[longer])
    return starts


def episode_rng(seed: int, epoch: int, episode: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, episode])


def crops_tensor(corpus: FeatureCorpus, utterances, starts, length: int) -> torch.Tensor:
    """(n, 1, 40, length) float32 crops, each with its mean over time subtracted (``model_input``)."""
    if len(utterances) == 0:
        return torch.zeros(0, 1, N_MELS, length)
    stored = read_stored_crops(corpus, utterances, starts, length)  # (n, length, 40), one preadv each
    if stored is None:  # utterances stored in different dtypes
        stored = np.stack([corpus.read_crop(utt, start, length) for utt, start in zip(utterances, starts)])
    crops = model_input(stored, out=empty_crops(len(utterances), length))
    # a non-finite value makes its row's mean, hence the whole centred row, non-finite: frame 0 tells
    first_frames = crops.numpy()[:, 0, :, 0]
    if not np.isfinite(first_frames).all():
        raise_non_finite(corpus, utterances, first_frames)
    return crops


def raise_non_finite(corpus: FeatureCorpus, utterances, first_frames: np.ndarray) -> None:
    """NaN/inf in a training crop: name the feature files instead of letting the loss diverge."""
    bad = [str(corpus.utterances[utt].path) for utt, row in zip(utterances, first_frames)
           if not np.isfinite(row).all()]
    raise UserInputError(f"NaN or infinite values in training features: {', '.join(sorted(set(bad)))}"
                         " (re-extract these files)")


def empty_crops(n: int, length: int) -> torch.Tensor:
    """An uninitialised (n, 1, 40, length) float32 tensor; inside a DataLoader worker it lives in
    shared memory from the start, so sending it to the main process passes a handle instead of
    copying it into a fresh shared segment."""
    shape = (n, 1, N_MELS, length)
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape)
    # the same allocation torch's own default_collate makes for batches built in workers
    storage = torch.UntypedStorage._new_shared(4 * n * N_MELS * length)
    return torch.empty(0).set_(storage, 0, shape)


class EpisodeDataset(torch.utils.data.Dataset):
    """Item ``i`` is episode ``i`` of the current epoch: support, query and labels as tensors."""

    def __init__(self, corpus: FeatureCorpus, config: EpisodeConfig, n_episodes: int, seed: int):
        self.corpus = corpus
        self.config = config
        self.n_episodes = n_episodes
        self.seed = seed
        self.epoch = 0
        self.speakers = check_episode_config(corpus, config)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_episodes

    def plan(self, index: int) -> EpisodePlan:
        rng = episode_rng(self.seed, self.epoch, index)
        return plan_episode(self.corpus, self.config, rng, self.speakers)

    def crops(self, plan: EpisodePlan, rows: np.ndarray, length: int, index: int) -> torch.Tensor:
        """Crops ``rows`` (positions in the plan) of episode ``index``: read from the feature files, or,
        when the corpus makes its own (``--input wav``: ``data_loading.waveforms.WaveCorpus.crops``),
        cut from the recordings with (seed, epoch, index) seeding any augmentation."""
        make_crops = getattr(self.corpus, "crops", None)
        if make_crops is None:
            return crops_tensor(self.corpus, plan.utterances[rows], plan.starts[rows], length)
        return make_crops(plan.utterances[rows], plan.starts[rows], length, rows, (self.seed, self.epoch, index))

    def __getitem__(self, index: int) -> dict:
        plan = self.plan(index)
        rows = np.arange(len(plan.utterances))
        support = self.crops(plan, rows[:plan.n_support], plan.support_frames, index)
        query = self.crops(plan, rows[plan.n_support:], plan.query_frames, index)
        return {"support": support, "query": query, "label_g": torch.from_numpy(plan.label_g)}
