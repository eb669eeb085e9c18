"""Verification metrics as the paper's code computes them.

EER: on sklearn's ROC points, the false-alarm rate where |miss - false alarm| is smallest (percent).
minDCF: min over thresholds of p_target * P_miss + (1 - p_target) * P_fa (C_miss = C_fa = 1),
normalised by min(p_target, 1 - p_target).
"""
from dataclasses import dataclass

import numpy as np

P_TARGETS = (0.01, 0.001, 0.05)


@dataclass
class Roc:
    false_alarm: np.ndarray
    miss: np.ndarray
    thresholds: np.ndarray


def roc(labels, scores) -> Roc:
    # imported here: scikit-learn (with scipy.stats) takes ~1.3 s of CPU to import, and train.py imports
    # this module for --val_trials, which most runs do not use (bench/startup_phases.py)
    from sklearn.metrics import roc_curve
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        raise ValueError("metrics need both target (1) and non-target (0) trials")
    fpr, tpr, thresholds = roc_curve(labels, scores, pos_label=1)
    return Roc(fpr, 1 - tpr, thresholds)


def eer_point(curve: Roc) -> int:
    return int(np.nanargmin(np.abs(curve.miss - curve.false_alarm)))


def compute_eer(labels, scores):
    """(EER in percent, threshold at the EER)."""
    curve = roc(labels, scores)
    index = eer_point(curve)
    return 100.0 * float(curve.false_alarm[index]), float(curve.thresholds[index])


def min_dcf_point(curve: Roc, p_target: float) -> int:
    cost = p_target * curve.miss + (1 - p_target) * curve.false_alarm
    return int(np.argmin(cost))


def compute_min_dcf(labels, scores, p_target: float) -> float:
    curve = roc(labels, scores)
    index = min_dcf_point(curve, p_target)
    cost = p_target * curve.miss[index] + (1 - p_target) * curve.false_alarm[index]
    return float(cost / min(p_target, 1 - p_target))


def verification_report(labels, scores, p_targets=P_TARGETS) -> dict:
    eer, threshold = compute_eer(labels, scores)
    report = {"eer": eer, "threshold": threshold, "n_trials": int(len(labels))}
    for p_target in p_targets:
        report[f"mindcf_{p_target:g}"] = compute_min_dcf(labels, scores, p_target)
    return report


def det_points(labels, scores, floor: float = 1e-4):
    """DET curve on normal-deviate axes: (probit(false alarm), probit(miss)) of the ROC points, with
    rates clipped to [floor, 1 - floor] so that 0 and 1 stay finite."""
    from scipy.stats import norm
    curve = roc(labels, scores)
    clip = lambda rate: norm.ppf(np.clip(rate, floor, 1 - floor))  # noqa: E731
    return clip(curve.false_alarm), clip(curve.miss)
