"""Full-utterance verification (EER_full): every utterance embedded once, all trials scored at once."""
import numpy as np

from evaluation.embedding import cosine_rows, embed_utterances
from evaluation.embedding_cache import cached_embeddings
from evaluation.score_norm import as_norm, top_k_stats
from evaluation.trials import Trials


def trial_indices(trials: Trials, names: list) -> tuple:
    position = {name: index for index, name in enumerate(names)}
    return (np.array([position[n] for n in trials.enroll], dtype=np.int64),
            np.array([position[n] for n in trials.test], dtype=np.int64))


def embed_trial_utterances(model, trials: Trials, located: dict, device, batch_size: int, cache=None):
    """(names, (n, 256) embeddings) of every utterance the trials need, each embedded once (read
    from / saved to the embedding cache folder ``cache`` when given)."""
    names = trials.utterances()
    if cache is not None:
        return names, cached_embeddings(model, names, located, device, batch_size, cache,
                                        desc="embedding trial utterances")
    embeddings = embed_utterances(model, [located[name] for name in names], device, batch_size,
                                  desc="embedding trial utterances")
    return names, embeddings


def cosine_trial_scores(trials: Trials, names: list, embeddings: np.ndarray) -> np.ndarray:
    enroll, test = trial_indices(trials, names)
    return cosine_rows(embeddings[enroll], embeddings[test])


def asnorm_trial_scores(trials: Trials, names: list, embeddings: np.ndarray, raw_scores,
                        cohort: np.ndarray, top_k: int) -> np.ndarray:
    """AS-norm of ``raw_scores``; cohort statistics computed once per utterance."""
    mean, std = top_k_stats(embeddings, cohort, top_k)
    enroll, test = trial_indices(trials, names)
    return as_norm(raw_scores, (mean[enroll], std[enroll]), (mean[test], std[test]))
