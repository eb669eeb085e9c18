"""Metrics of scores read as log-likelihood ratios (natural log): actual DCF, Cllr and minCllr.

- actDCF(p_target): accept a trial when its LLR >= the Bayes threshold log((1 - p) / p); then
  (p * P_miss + (1 - p) * P_fa) / min(p, 1 - p), normalised like ``metrics.compute_min_dcf``.
  minDCF is the same cost at the best threshold, so actDCF - minDCF is what calibration loses.
- Cllr (bits) = ( mean_targets log2(1 + e^-llr) + mean_nontargets log2(1 + e^llr) ) / 2
  (Brümmer & du Preez 2006): 0 for perfect, 1 for a system that always says LLR 0.
- minCllr: Cllr after the best monotone re-mapping of the scores (pool-adjacent-violators, here
  scikit-learn's isotonic regression), i.e. the part of Cllr calibration cannot remove.
"""
import numpy as np
from sklearn.isotonic import IsotonicRegression


def split(labels, scores):
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.min() == labels.max():
        raise ValueError("these metrics need both target (1) and non-target (0) trials")
    return scores[labels == 1], scores[labels == 0]


def bayes_threshold(p_target: float) -> float:
    """The LLR above which accepting costs less than rejecting, at prior ``p_target`` (unit costs)."""
    return float(np.log((1 - p_target) / p_target))


def actual_dcf(labels, llrs, p_target: float) -> float:
    targets, nontargets = split(labels, llrs)
    threshold = bayes_threshold(p_target)
    p_miss, p_fa = np.mean(targets < threshold), np.mean(nontargets >= threshold)
    return float((p_target * p_miss + (1 - p_target) * p_fa) / min(p_target, 1 - p_target))


def cllr(labels, llrs) -> float:
    targets, nontargets = split(labels, llrs)
    return float((np.mean(np.logaddexp(0, -targets)) + np.mean(np.logaddexp(0, nontargets))) / (2 * np.log(2)))


def min_cllr(labels, scores) -> float:
    """Cllr of the PAV-optimal monotone LLRs of ``scores`` (posteriors on the trials' own proportion
    of targets, turned into LLRs by removing that prior)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    split(labels, scores)
    posterior = IsotonicRegression(y_min=0, y_max=1, increasing=True).fit_transform(scores, labels)
    prior = labels.mean()
    with np.errstate(divide="ignore"):
        llrs = np.log(posterior) - np.log1p(-posterior) - np.log(prior / (1 - prior))
    return cllr(labels, llrs)


def llr_report(labels, llrs, p_targets) -> dict:
    report = {"cllr": cllr(labels, llrs), "min_cllr": min_cllr(labels, llrs)}
    report.update({f"actdcf_{p:g}": actual_dcf(labels, llrs, p) for p in p_targets})
    return report
