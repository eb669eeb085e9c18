"""The Python API's argument checks (``speaker_api`` / ``evaluation.speaker_encoder``): a value of the
wrong type or out of range is one ``UserInputError`` saying which argument and what was given, never a
raw ``TypeError``/``ValueError``/``AttributeError`` from deep inside, and never accepted silently
(``sample_rate=16000.5`` or ``nan``, ``top_k=0``)."""
import math
import numbers
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from common.errors import UserInputError


def whole_number(value, name: str, minimum: int) -> int:
    """An integer (int, numpy integer, or a float with a whole value) of at least ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise UserInputError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value != int(value):
        raise UserInputError(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise UserInputError(f"{name} must be at least {minimum}, got {value!r}")
    return int(value)


def sample_rate_value(sample_rate, source: str = "array") -> int:
    """Samples per second of an array: a positive whole number of hertz."""
    if sample_rate is None:
        raise UserInputError(f"{source}: sample_rate is required when passing an array of samples")
    return whole_number(sample_rate, f"{source}: sample_rate", 1)


def top_k_value(top_k) -> int:
    return whole_number(top_k, "top_k", 1)


def probability_value(value, name: str) -> float:
    """A number strictly between 0 and 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise UserInputError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def path_value(value, name: str):
    """A file name (str or os.PathLike) as a Path; None stays None."""
    if value is None:
        return None
    if not isinstance(value, (str, Path)):
        raise UserInputError(f"{name} must be a file path (str or Path), got {value!r} ({type(value).__name__})")
    return Path(value)


def recordings_value(recordings, name: str = "enroll()") -> list:
    """A non-empty list/tuple of recordings (a single path is not a list of them)."""
    if not isinstance(recordings, (list, tuple)) or not recordings:
        raise UserInputError(f"{name} takes a non-empty list of recordings, got {type(recordings).__name__}")
    return list(recordings)


def mapping_value(value, name: str) -> Mapping:
    if not isinstance(value, Mapping) or not value:
        raise UserInputError(f"{name} must be a non-empty dict, got {type(value).__name__}")
    return value
