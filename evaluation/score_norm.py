"""Adaptive symmetric score normalisation (AS-norm) with a cohort of training-speaker embeddings.

For a trial (e, t) with cosine score s, let mu_e, sigma_e be the mean and (population, ddof=0)
standard deviation of the ``top_k`` highest cosine scores of e against the cohort, and likewise for t:
    s_norm = ((s - mu_e) / sigma_e + (s - mu_t) / sigma_t) / 2
``cohort_matrix`` builds every cohort: for EER_full.py one mean embedding per training speaker (the
mean of its utterances' unit-length embeddings, itself normalised to unit length; ``speaker_cohort``
from ``training_cohort_corpus``), for score.py one per recording or stored embedding of ``--cohort``.
"""
import numpy as np

import configure

from common.errors import UserInputError
from evaluation.embedding import embed_utterances


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_cohort_size(top_k: int, n_cohort: int) -> None:
    if not 1 <= top_k <= n_cohort:
        raise UserInputError(f"--cohort_size {top_k} must be between 1 and the cohort's {n_cohort} speakers")


def top_k_stats(embeddings: np.ndarray, cohort: np.ndarray, top_k: int):
    """(mean, std) of each embedding's ``top_k`` highest cosine scores against the cohort."""
    check_cohort_size(top_k, len(cohort))
    scores = unit_rows(embeddings) @ unit_rows(cohort).T
    top = -np.partition(-scores, top_k - 1, axis=1)[:, :top_k]
    return top.mean(axis=1), top.std(axis=1)


def as_norm(scores, enroll_stats, test_stats) -> np.ndarray:
    """AS-norm of raw ``scores`` given (mean, std) arrays of each trial's enrolment and test side."""
    (mean_e, std_e), (mean_t, std_t) = enroll_stats, test_stats
    scores = np.asarray(scores, dtype=np.float64)
    eps = 1e-12
    return 0.5 * ((scores - mean_e) / (std_e + eps) + (scores - mean_t) / (std_t + eps))


def training_cohort_corpus(args):
    """EER_full.py's cohort: the training features of ``--data_type`` (a FeatureCorpus), every flag
    checked before any embedding work; ``speaker_cohort`` embeds it. (score.py's cohort is the user's
    audio folder or embeddings, evaluation/score_trials.py; both go through ``top_k_stats``.)"""
    from data_loading.corpus import FeatureCorpus
    from evaluation.cli import check_positive
    check_positive(args, "cohort_size", "cohort_utterances")
    train_roots = configure.feature_roots(args.save_path, [configure.TRAIN_DATA[args.data_type]], "all",
                                          f"AS-norm cohort: training features of --data_type {args.data_type}")
    corpus = FeatureCorpus(train_roots, reindex=args.reindex)
    check_cohort_size(args.cohort_size, corpus.n_speakers)
    return corpus


def speaker_cohort(model, corpus, device, utterances_per_speaker: int = 3, seed: int = 0,
                   batch_size: int = 16) -> np.ndarray:
    """(n_speakers, 256) unit-length mean embeddings of up to ``utterances_per_speaker`` seeded
    utterances of every speaker of ``corpus`` (a FeatureCorpus of training features)."""
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(utts, size=min(utterances_per_speaker, len(utts)), replace=False)
              for utts in corpus.by_speaker]
    flat = np.concatenate(chosen)
    embeddings = embed_utterances(model, [corpus.utterances[i].path for i in flat], device, batch_size,
                                  desc="embedding cohort")
    return cohort_matrix(embeddings, np.repeat(np.arange(len(chosen)), [len(c) for c in chosen]))


def cohort_matrix(embeddings, owners=None) -> np.ndarray:
    """The one builder of an AS-norm cohort: (members, d) unit-length rows. Without ``owners`` each
    row of ``embeddings`` is a member (score.py's recordings or stored embeddings); with ``owners``
    (each row's member index) a member is the unit-length mean of its rows' unit-length embeddings
    (EER_full.py's training speakers)."""
    rows = unit_rows(embeddings)
    if owners is None:
        return rows
    sums = np.zeros((int(owners.max()) + 1, rows.shape[1]))
    np.add.at(sums, owners, rows)
    return unit_rows(sums)
