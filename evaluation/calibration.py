"""Score -> log-likelihood-ratio calibration: ``llr = slope * score + offset``, fitted by logistic
regression (scikit-learn) on a labelled development trial list, saved as JSON.

The fit weights targets and non-targets so that their effective prior is ``fit_prior`` (0.5 unless
asked otherwise), and removes that prior's log-odds from the intercept, so the output is an LLR that
holds for any target prior: at prior ``p`` accept when ``llr >= log((1 - p) / p)`` (the Bayes
decision). The map is increasing (slope > 0), so it changes no ranking: EER and minDCF stay as they
were; actual DCF and Cllr improve.

Duration-aware calibration (``qmf == "duration"``, quality measure functions as in NIST SRE and
SdSV systems): ``llr = slope * score + offset + w_min * log(d_min) + w_max * log(d_max)``, where
``d_min``/``d_max`` are the shorter and the longer side's duration in seconds. The shorter and
longer side rather than enrolment and test: a cosine score is symmetric, so its LLR should be too,
and the shorter side is what makes a trial unreliable, whichever side it is. For fixed durations
the map is still increasing in the score.
"""
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common.errors import UserInputError
from common.files import write_text
from evaluation.llr_metrics import split

CALIBRATION_SUFFIX = ".calibration.json"
QMFS = ("none", "duration")


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
    qmf: str = "none"            # quality measures it adds: "duration" = log shorter, log longer side (s)
    qmf_weights: list = field(default_factory=list)   # their weights ([w_min, w_max] for "duration")

    def llr(self, scores, qualities=None):
        """LLRs of ``scores``; with a QMF, ``qualities`` (n, 2) from ``duration_qualities`` are needed."""
        llr = self.slope * np.asarray(scores, dtype=np.float64) + self.offset
        if self.qmf == "none":
            return llr
        if qualities is None:
            raise UserInputError("this calibration is duration-aware (qmf duration): it needs the "
                                 "durations of both sides of each trial")
        return llr + np.asarray(qualities, dtype=np.float64) @ np.asarray(self.qmf_weights, dtype=np.float64)

    def formula(self) -> str:
        """The map in words, e.g. ``llr = 12.3 * score + -4.5 + -1.2 * log(shorter s) + 0 * log(longer s)``."""
        text = f"llr = {self.slope:.6g} * score + {self.offset:.6g}"
        if self.qmf == "duration":
            text += f" + {self.qmf_weights[0]:.6g} * log(shorter side, s) + {self.qmf_weights[1]:.6g} * log(longer side, s)"
        return text

    @classmethod
    def load(cls, path) -> "Calibration":
        try:
            fields = json.loads(Path(path).read_text())
            calibration = cls(**fields)
            if not (np.isfinite(calibration.slope) and np.isfinite(calibration.offset) and calibration.slope > 0):
                raise ValueError(f"slope must be positive and finite, got {calibration.slope}")
            check_qmf(calibration.qmf, calibration.qmf_weights)
        except FileNotFoundError:
            raise UserInputError(f"calibration file {path} not found") from None
        except (OSError, ValueError, TypeError) as error:
            raise UserInputError(f"{path}: not a calibration file written by score.py --calibrate_out "
                                 f"({type(error).__name__}: {error})") from None
        return calibration


def save_calibration(path, calibration: Calibration) -> None:
    write_text(path, json.dumps(asdict(calibration), indent=1) + "\n")


def fit_calibration(labels, scores, fit_prior: float = 0.5, qualities=None, **provenance) -> Calibration:
    """Prior-weighted logistic regression of the labels on the scores (no regularisation); with
    ``qualities`` ((n, 2) from ``duration_qualities``) on the scores and those, a duration QMF."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    targets, nontargets = split(labels, scores)
    columns = scores[:, None] if qualities is None else np.column_stack([scores, qualities])
    weights = np.where(labels == 1, fit_prior / len(targets), (1 - fit_prior) / len(nontargets))
    coefficients, intercept = logistic_fit(columns, labels, weights * len(labels))
    slope = float(coefficients[0])
    if not slope > 0:
        raise UserInputError("calibration failed: on this list, higher scores do not mean 'same speaker' "
                             f"(fitted slope {slope:.3g}); check the labels")
    offset = intercept - float(np.log(fit_prior / (1 - fit_prior)))
    qmf = {"qmf": "duration", "qmf_weights": [float(w) for w in coefficients[1:]]} if qualities is not None else {}
    return Calibration(slope, offset, fit_prior, len(targets), len(nontargets), **qmf, **provenance)


def logistic_fit(columns: np.ndarray, labels, sample_weight) -> tuple:
    """(coefficients, intercept) of an unregularised logistic regression on ``columns``, fitted on
    standardised columns and mapped back; a column without spread (e.g. every trial of one
    duration) carries no information and gets the coefficient 0."""
    from sklearn.linear_model import LogisticRegression
    centre, spread = columns.mean(axis=0), columns.std(axis=0)
    used = spread > 1e-12 * np.maximum(1.0, np.abs(centre))
    coefficients = np.zeros(columns.shape[1])
    if not used.any():
        raise UserInputError(f"calibration failed: all {len(columns)} scores are equal")
    model = LogisticRegression(C=np.inf, max_iter=1000, tol=1e-10)
    model.fit((columns[:, used] - centre[used]) / spread[used], labels, sample_weight=sample_weight)
    coefficients[used] = model.coef_[0] / spread[used]
    return coefficients, float(model.intercept_[0]) - float(coefficients[used] @ centre[used])


def duration_qualities(enroll_seconds, test_seconds) -> np.ndarray:
    """(n, 2) quality measures of trials: log of the shorter and of the longer side's duration (s)."""
    enroll, test = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (enroll_seconds, test_seconds))
    if not (np.all(enroll > 0) and np.all(test > 0)):
        raise UserInputError("duration-aware calibration needs a positive duration for every recording")
    return np.log(np.column_stack([np.minimum(enroll, test), np.maximum(enroll, test)]))


def check_qmf(qmf, weights) -> None:
    if qmf not in QMFS:
        raise ValueError(f"qmf must be one of {', '.join(QMFS)}, got {qmf!r}")
    wanted = 2 if qmf == "duration" else 0
    if not (isinstance(weights, list) and len(weights) == wanted
            and all(isinstance(w, (int, float)) and not isinstance(w, bool) and np.isfinite(w) for w in weights)):
        raise ValueError(f"qmf_weights must be {wanted} finite numbers for qmf {qmf}, got {weights!r}")


def calibration_beside(checkpoint_path) -> Path:
    """Where score.py --calibrate_out suggests, and verify.py looks by default: ``<checkpoint>.calibration.json``."""
    checkpoint_path = Path(checkpoint_path)
    return checkpoint_path.with_name(checkpoint_path.stem + CALIBRATION_SUFFIX)
