"""Unseen-speaker identification in N-way K-shot episodes (the original identification.py), batched.

Episodes come from the training planner (``data_loading.episodes.plan_episode``): ``n_way`` speakers
and, per speaker, ``n_shot + n_query`` different utterances; enrolment (support) crops are
``enroll_length`` frames, queries ``test_length`` frames (random starts; a shorter utterance is tiled). Crops have their mean over time subtracted. The prototype of a
speaker is the mean of its support embeddings; a query is assigned to the prototype of highest
cosine similarity. Episode ``i`` is a pure function of ``(seed, i)``.
"""
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from data_loading.corpus import FeatureCorpus
from data_loading.episodes import EpisodeConfig, check_episode_config, plan_episode
from evaluation.embedding import embed_crops
from feat_extract.features import check_finite
from model.losses.terms import prototypes_of


@dataclass(frozen=True)
class IdentificationConfig:
    n_way: int = 50
    n_shot: int = 1
    n_query: int = 5
    enroll_length: int = 500
    test_length: int = 100


def episode_config(config: IdentificationConfig) -> EpisodeConfig:
    """The training planner's episode with enrolment-length support and test-length query crops."""
    return EpisodeConfig(config.n_way, config.n_shot, config.n_query, crop_frames=config.enroll_length,
                         query_frames=config.test_length)


class CorpusCrops:
    """Crops ``(utterance, start)`` of one length, read lazily from the corpus."""

    def __init__(self, corpus: FeatureCorpus, utterances, starts, length: int):
        self.corpus, self.utterances, self.starts, self.length = corpus, utterances, starts, length

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> np.ndarray:
        utterance = int(self.utterances[index])
        crop = self.corpus.read_crop(utterance, int(self.starts[index]), self.length)
        return check_finite(crop, self.corpus.utterances[utterance].path)


def episode_accuracy(support: np.ndarray, query: np.ndarray, n_way: int) -> float:
    """Percent of queries whose highest-cosine prototype is their own class (shot-major layout)."""
    support = torch.as_tensor(support, dtype=torch.float32)
    query = torch.as_tensor(query, dtype=torch.float32)
    cosine = F.linear(F.normalize(query, dim=1), prototypes_of(support, n_way))
    truth = torch.arange(n_way).repeat(len(query) // n_way)
    return 100.0 * (cosine.argmax(dim=1) == truth).float().mean().item()


def run_identification(model, corpus: FeatureCorpus, config: IdentificationConfig, n_episodes: int,
                       device, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """Per-episode accuracies (percent) of ``n_episodes`` seeded episodes."""
    episode = episode_config(config)
    speakers = check_episode_config(corpus, episode)
    accuracies = []
    for index in tqdm(range(n_episodes), desc="identification episodes", unit="episode", file=sys.stderr):
        plan = plan_episode(corpus, episode, np.random.default_rng([seed, index]), speakers)
        n_support = plan.n_support
        embed = lambda rows, length: embed_crops(  # noqa: E731
            model, CorpusCrops(corpus, plan.utterances[rows], plan.starts[rows], length), device,
            batch_size, desc="")
        support = embed(slice(0, n_support), plan.support_frames)
        query = embed(slice(n_support, None), plan.query_frames)
        accuracies.append(episode_accuracy(support, query, config.n_way))
    return np.array(accuracies)


def mean_confidence(accuracies) -> tuple:
    """(mean accuracy, 95 % half-width 1.96 * std / sqrt(n)) as the original prints them."""
    accuracies = np.asarray(accuracies, dtype=np.float64)
    return float(accuracies.mean()), float(1.96 * accuracies.std() / np.sqrt(len(accuracies)))
