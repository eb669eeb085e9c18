"""EER_short: seconds per 1,000 trials, ours (evaluation.short_utterance: each enrolment embedded once,
test crops in batches) vs the original's per-trial re-embedding of both sides (bench/baseline.py).

Same trials (make_short_trials, seeded), same scores (asserted to 1e-4) and the EER up to near-tied trials.
"""
import time

import numpy as np
import torch

from bench.baseline import pickle_path, score_trials_per_trial
from bench.report import Result
from data_loading.corpus import FeatureCorpus
from evaluation.metrics import compute_eer
from evaluation.precision import with_precision
from evaluation.short_utterance import make_short_trials, score_short_trials
from model.registry import build_model

SCORE_TOLERANCE = 1e-4
# --eval_precision tf32 / bf16 moved scores by up to 1.9e-4 / 3.4e-3 on an H200 (bench/results/2026-11-26-h200.md)
SCORE_TOLERANCES = {"fp32": SCORE_TOLERANCE, "tf32": 1e-3, "bf16": 2e-2}


def thin_encoder(channels: int, device):
    torch.manual_seed(0)
    return build_model("background_resnet", num_classes=10, channels=channels).to(device).eval()


def timed(action):
    start = time.perf_counter()
    value = action()
    return value, time.perf_counter() - start


def near_tied_fraction(scores: np.ndarray, labels: np.ndarray, tolerance: float) -> float:
    """Largest fraction of target (or non-target) trials with a score of the other label within
    ``tolerance``: the trials whose ranking a rounding difference that small can change."""
    fractions = []
    for mine, other in ((scores[labels == 1], scores[labels == 0]), (scores[labels == 0], scores[labels == 1])):
        other = np.sort(other)
        nearest = np.clip(np.searchsorted(other, mine - tolerance), 0, len(other) - 1)
        fractions.append(float(np.mean(np.abs(other[nearest] - mine) <= tolerance)))
    return max(fractions)


def compare_scores(ours: np.ndarray, baseline: np.ndarray, labels: np.ndarray,
                   tolerance: float = SCORE_TOLERANCE) -> tuple:
    """(worst score difference, our EER, baseline EER). Scores must agree to SCORE_TOLERANCE; the EERs
    up to the trials whose ranking that rounding can swap (batched and one-by-one forwards differ by
    ~1e-7, and an untrained encoder's cosines lie close together), plus one trial."""
    worst = float(np.max(np.abs(ours - baseline)))
    assert worst <= tolerance, f"EER_short scores differ from the baseline by {worst:.2e}"
    ours_eer, baseline_eer = compute_eer(labels, ours)[0], compute_eer(labels, baseline)[0]
    one_trial = 100.0 / min(int(labels.sum()), int(len(labels) - labels.sum()))
    allowed = 100.0 * near_tied_fraction(ours, labels, 2 * worst) + one_trial
    assert abs(ours_eer - baseline_eer) <= allowed + 1e-9, f"EER {ours_eer} vs baseline {baseline_eer}"
    return worst, ours_eer, baseline_eer


def eer_short_results(store, channels: int, pairs_per_speaker: int, repeats: int, device,
                      test_length: int = 200, batch_size: int = 64, precision: str = "fp32") -> list:
    """Ours in ``precision`` (--eval_precision, evaluation/precision.py) against the original's
    per-trial strategy in float32."""
    corpus = FeatureCorpus(store.float32)
    pickle_paths = [pickle_path(store, utt.path) for utt in corpus.utterances]
    trials = make_short_trials(corpus, test_length, pairs_per_speaker, seed=0)
    model = thin_encoder(channels, device)
    ours_model = with_precision(model, precision)
    ours_times, baseline_times = [], []
    for _ in range(repeats):
        ours, seconds = timed(lambda: score_short_trials(ours_model, corpus, trials, device, batch_size))
        ours_times.append(seconds)
        baseline, seconds = timed(lambda: score_trials_per_trial(model, pickle_paths, trials, device))
        baseline_times.append(seconds)
    worst, ours_eer, baseline_eer = compare_scores(ours, baseline, trials.label, SCORE_TOLERANCES[precision])
    per_thousand = 1000 / len(trials)
    suffix = "" if precision == "fp32" else f"_{precision}"
    return [Result(f"eer_short_s_per_1000_trials_{device.type}{suffix}", np.median(ours_times) * per_thousand,
                   "s", np.median(baseline_times) * per_thousand, False, 3.0 if device.type == "cpu" else 20.0,
                   f"{len(trials)} trials on {len(corpus)} utterances ({len(trials) / len(corpus):.2f} per utterance; "
                   f"paper protocol 250,200 / 153,516 = 1.63), {len(np.unique(trials.enroll))} enrolments, "
                   f"{test_length}-frame tests, encoder channels={channels}; "
                   f"scores equal to {worst:.1e}, EER {ours_eer:.2f} % vs {baseline_eer:.2f} %")]
