"""Reading audio for feature extraction: any format soundfile reads, converted to 16 kHz mono.

``read_audio`` returns samples on the int16 scale (float64) plus human-readable notes on any
conversion it made (resampling, down-mixing), so callers can warn instead of silently mis-featuring.
"""
from dataclasses import dataclass, field
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from data_loading.files import UserInputError
from feat_extract.feature_extraction import INT16_SCALE, SAMPLE_RATE


@dataclass
class Audio:
    samples: np.ndarray          # float64 mono, int16 scale
    sample_rate: int
    notes: list = field(default_factory=list)


def read_audio(path, target_rate: int = SAMPLE_RATE) -> Audio:
    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as error:
        raise UserInputError(f"{path}: cannot read audio ({error})") from None
    notes = []
    if data.shape[1] > 1:
        notes.append(f"mixed {data.shape[1]} channels to mono")
    samples = data.mean(axis=1) * INT16_SCALE
    if rate != target_rate:
        divisor = gcd(rate, target_rate)
        samples = resample_poly(samples, target_rate // divisor, rate // divisor)
        notes.append(f"resampled {rate} Hz to {target_rate} Hz")
    return Audio(samples, target_rate, notes)
