"""Score -> log-likelihood-ratio calibration: ``llr = slope * score + offset``, fitted by logistic
regression (scikit-learn) on a labelled development trial list, saved as JSON.

The fit weights targets and non-targets so that their effective prior is ``fit_prior`` (0.5 unless
asked otherwise), and removes that prior's log-odds from the intercept, so the output is an LLR that
holds for any target prior: at prior ``p`` accept when ``llr >= log((1 - p) / p)`` (the Bayes
decision). The map is increasing (slope > 0), so it changes no ranking: EER and minDCF stay as they
were; actual DCF and Cllr improve.
"""
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.errors import UserInputError
from common.files import write_text
from evaluation.llr_metrics import bayes_threshold, split

CALIBRATION_SUFFIX = ".calibration.json"


@dataclass
class Calibration:
    slope: float
    offset: float
    fit_prior: float = 0.5
    n_target: int = 0
    n_nontarget: int = 0
    trials: str = ""             # the development list it was fitted on
    checkpoint: str = ""         # the model whose scores it maps
    score_norm: str = "none"     # the scores it expects (raw cosine or AS-norm)

    def llr(self, scores):
        return self.slope * np.asarray(scores, dtype=np.float64) + self.offset

    def score_threshold(self, p_target: float) -> float:
        """The raw score at which the LLR reaches the Bayes threshold of ``p_target``."""
        return (bayes_threshold(p_target) - self.offset) / self.slope

    @classmethod
    def load(cls, path) -> "Calibration":
        try:
            fields = json.loads(Path(path).read_text())
            calibration = cls(**fields)
            if not (np.isfinite(calibration.slope) and np.isfinite(calibration.offset) and calibration.slope > 0):
                raise ValueError(f"slope must be positive and finite, got {calibration.slope}")
        except FileNotFoundError:
            raise UserInputError(f"calibration file {path} not found") from None
        except (OSError, ValueError, TypeError) as error:
            raise UserInputError(f"{path}: not a calibration file written by score.py --calibrate_out "
                                 f"({type(error).__name__}: {error})") from None
        return calibration


def save_calibration(path, calibration: Calibration) -> None:
    write_text(path, json.dumps(asdict(calibration), indent=1) + "\n")


def fit_calibration(labels, scores, fit_prior: float = 0.5, **provenance) -> Calibration:
    """Prior-weighted logistic regression of the labels on the scores (no regularisation)."""
    from sklearn.linear_model import LogisticRegression
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    targets, nontargets = split(labels, scores)
    weights = np.where(labels == 1, fit_prior / len(targets), (1 - fit_prior) / len(nontargets))
    model = LogisticRegression(C=np.inf, max_iter=1000)
    model.fit(scores[:, None], labels, sample_weight=weights * len(labels))
    slope = float(model.coef_[0, 0])
    if not slope > 0:
        raise UserInputError("calibration failed: on this list, higher scores do not mean 'same speaker' "
                             f"(fitted slope {slope:.3g}); check the labels")
    offset = float(model.intercept_[0]) - float(np.log(fit_prior / (1 - fit_prior)))
    return Calibration(slope, offset, fit_prior, len(targets), len(nontargets), **provenance)


def calibration_beside(checkpoint_path) -> Path:
    """Where score.py --calibrate_out suggests, and verify.py looks by default: ``<checkpoint>.calibration.json``."""
    checkpoint_path = Path(checkpoint_path)
    return checkpoint_path.with_name(checkpoint_path.stem + CALIBRATION_SUFFIX)
