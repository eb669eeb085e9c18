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
the map is still increasing in the score. The columns are standardised before the fit (and the
coefficients mapped back), so a narrow spread such as cosines in [0.98, 0.99] converges as [-1, 1] does.

The JSON file is a mapping with a ``version`` and named fields (``CALIBRATION_VERSION``); every
field is checked on load (type, range), unknown fields are refused, and ``checkpoint_digest``
(``model.checkpoint.checkpoint_digest`` of the checkpoint file whose scores it maps) lets verify.py
and the API warn when another model uses it.
"""
import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common.errors import UserInputError
from common.files import write_text
from evaluation.llr_metrics import split

CALIBRATION_SUFFIX = ".calibration.json"
QMFS = ("none", "duration")
CALIBRATION_VERSION = 1
MAX_SLOPE = 1e6            # beyond this, LLRs of ordinary scores are numerically meaningless
MAX_OFFSET = 1e6
SCORE_NORMS = ("none", "asnorm")


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
    checkpoint_digest: str = ""  # model.checkpoint.checkpoint_digest of it ("" when fitted on stored embeddings)
    version: int = CALIBRATION_VERSION

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

    def model_mismatch(self, checkpoint_path):
        """A sentence when this calibration was fitted on another checkpoint than ``checkpoint_path``
        (by digest), else None (also when the calibration recorded no digest)."""
        if not self.checkpoint_digest or checkpoint_path is None:
            return None
        from model.checkpoint import checkpoint_digest
        return self.digest_mismatch(str(checkpoint_path), checkpoint_digest(checkpoint_path))

    def digest_mismatch(self, checkpoint: str, digest: str):
        """As ``model_mismatch``, for scores of the model with this ``digest`` (e.g. the one an embed.py
        folder's model.json records); None when either digest is unknown."""
        if not self.checkpoint_digest or not digest or digest == self.checkpoint_digest:
            return None
        return (f"calibration fitted on the scores of another model ({self.checkpoint or 'unnamed'}, "
                f"digest {self.checkpoint_digest[:12]}) than {checkpoint or 'unnamed'} (digest {digest[:12]}); its "
                "LLRs do not hold for this model: refit it with score.py --calibrate_out")

    @classmethod
    def load(cls, path) -> "Calibration":
        try:
            fields = json.loads(Path(path).read_text())
            return cls.from_fields(fields)
        except FileNotFoundError:
            raise UserInputError(f"calibration file {path} not found") from None
        except (OSError, ValueError, TypeError) as error:
            raise UserInputError(f"{path}: not a calibration file written by score.py --calibrate_out "
                                 f"({type(error).__name__}: {error})") from None

    @classmethod
    def from_fields(cls, fields) -> "Calibration":
        """A calibration from its JSON mapping; ValueError/TypeError naming the first bad field."""
        if not isinstance(fields, dict):
            raise TypeError(f"expected a JSON object, found {type(fields).__name__}")
        known = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - set(known))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}")
        for name, value in fields.items():
            check_field_type(name, value, known[name].type)
        calibration = cls(**fields)
        calibration.check_ranges()
        return calibration

    def check_ranges(self) -> None:
        checks = [
            ("version", 1 <= self.version <= CALIBRATION_VERSION, f"a version this code reads (1..{CALIBRATION_VERSION})"),
            ("slope", 0 < self.slope <= MAX_SLOPE, f"positive and at most {MAX_SLOPE:g}"),
            ("offset", abs(self.offset) <= MAX_OFFSET, f"at most {MAX_OFFSET:g} in size"),
            ("fit_prior", 0 < self.fit_prior < 1, "strictly between 0 and 1"),
            ("n_target", self.n_target >= 0, "non-negative"),
            ("n_nontarget", self.n_nontarget >= 0, "non-negative"),
            ("score_norm", self.score_norm in SCORE_NORMS, f"one of {', '.join(SCORE_NORMS)}"),
        ]
        for name, good, wanted in checks:
            if not good:
                raise ValueError(f"{name} must be {wanted}, got {getattr(self, name)!r}")
        check_qmf(self.qmf, self.qmf_weights)


FIELD_TYPES = {float: (int, float), int: (int,), str: (str,), dict: (dict,), list: (list,)}


def check_field_type(name: str, value, annotation) -> None:
    """JSON value of the declared type: numbers for floats (finite; a bool is not a number), ints, strings."""
    wanted = FIELD_TYPES.get(annotation, (object,))   # other annotations: checked by their own ranges
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise TypeError(f"{name} must be a {getattr(annotation, '__name__', annotation)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def save_calibration(path, calibration: Calibration) -> None:
    write_text(path, json.dumps(asdict(calibration), indent=1) + "\n")


def is_calibration_file(path) -> bool:
    """Whether ``path`` holds a calibration this code wrote (the only kind of file --calibrate_out replaces)."""
    try:
        Calibration.from_fields(json.loads(Path(path).read_text()))
        return True
    except (OSError, ValueError, TypeError):
        return False


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
