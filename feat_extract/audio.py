"""Reading audio for feature extraction: any format soundfile reads, converted to 16 kHz mono.

``read_audio`` returns samples on the int16 scale (float64) plus human-readable notes on any
conversion it made (resampling, down-mixing, decoding with ffmpeg), so callers can warn instead of
silently mis-featuring. Audio that would give meaningless features is refused with a
``UserInputError`` naming the file and the reason:

| input                                   | what happens                                   |
| --------------------------------------- | ---------------------------------------------- |
| empty file, corrupt header, not audio   | refused ("cannot read audio ...")              |
| any sample rate other than 16 kHz       | resampled with scipy ``resample_poly`` + note  |
| 2+ channels                             | averaged to mono + note                        |
| float wav                               | read as is ([-1, 1] scaled to int16 range)     |
| NaN / inf samples                       | refused                                        |
| all-zero (digitally silent) audio       | refused                                        |
| shorter than one 25 ms frame (400 smp.) | refused                                        |
| .m4a/.aac/.mp3/.mp4/.opus/.webm         | decoded by ffmpeg (argument list) + note       |

The pieces (checks, channel mixing and scaling, ffmpeg command, resampling factors, notes) are
shared with ``feat_extract.audio_stream``, which reads the same samples in blocks.
"""
import shutil
import subprocess
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from common.errors import UserInputError
from feat_extract.audio_formats import FFMPEG_SUFFIXES
from feat_extract.fbank import INT16_SCALE, SAMPLE_RATE, WIN_LENGTH

SILENCE_PEAK = 1.0     # below one int16 step: digital silence


@dataclass
class Audio:
    samples: np.ndarray          # float64 mono, int16 scale
    sample_rate: int
    notes: list = field(default_factory=list)


def read_audio(path, target_rate: int = SAMPLE_RATE) -> Audio:
    """Any readable audio file -> ``Audio`` at ``target_rate``, mono, int16 scale; bad audio refused."""
    path = check_audio_file(path)
    if decoded_by_ffmpeg(path):
        samples, rate, notes = decode_with_ffmpeg(path, target_rate), target_rate, [ffmpeg_note(path)]
    else:
        samples, rate, notes = read_with_soundfile(path)
    samples, notes = to_target_rate(samples, rate, target_rate, notes)
    validate_samples(path, samples, target_rate)
    return Audio(samples, target_rate, notes)


def check_audio_file(path) -> Path:
    """``path`` as a Path; refused when it is missing or empty."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise UserInputError(f"{path}: empty file (0 bytes)")
    return path


def decoded_by_ffmpeg(path: Path) -> bool:
    return path.suffix.lower() in FFMPEG_SUFFIXES and shutil.which("ffmpeg") is not None


def cannot_read(path: Path, error: Exception, where: str = "") -> UserInputError:
    """The refusal for audio soundfile cannot decode (``where``: e.g. " after 12.0 s")."""
    hint = " (install ffmpeg to read this format)" if path.suffix.lower() in FFMPEG_SUFFIXES else ""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UserInputError(f"{path}: cannot read audio{where} ({reason}){hint}")


def channel_note(n_channels: int) -> list:
    return [f"mixed {n_channels} channels to mono"] if n_channels > 1 else []


def mono_int16_scale(data: np.ndarray) -> np.ndarray:
    """soundfile's float64 (frames, channels) in [-1, 1] -> mono samples on the int16 scale."""
    return data.mean(axis=1) * INT16_SCALE


def read_with_soundfile(path: Path):
    """(mono int16-scale samples, rate, notes) through soundfile."""
    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as error:
        raise cannot_read(path, error) from None
    return mono_int16_scale(data), rate, channel_note(data.shape[1])


def ffmpeg_command(path: Path, target_rate: int) -> list:
    """ffmpeg decoding ``path`` to mono int16 at ``target_rate`` on stdout (an argument list: no shell)."""
    return ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-f", "s16le",
            "-ac", "1", "-ar", str(target_rate), "-"]


def ffmpeg_note(path: Path) -> str:
    return f"decoded {path.suffix.lower()} with ffmpeg"


def ffmpeg_failure(path: Path, stderr: bytes) -> UserInputError:
    reason = stderr.decode(errors="replace").strip().splitlines()
    return UserInputError(f"{path}: ffmpeg cannot decode it ({reason[-1] if reason else 'no output'})")


def decode_with_ffmpeg(path: Path, target_rate: int) -> np.ndarray:
    """Decode any format ffmpeg reads to mono int16 at ``target_rate`` through a pipe (no shell)."""
    result = subprocess.run(ffmpeg_command(path, target_rate), capture_output=True, check=False)
    if result.returncode != 0:
        raise ffmpeg_failure(path, result.stderr)
    return np.frombuffer(result.stdout, dtype="<i2").astype(np.float64)


def resampling_factors(rate: int, target_rate: int) -> tuple:
    """(up, down) of scipy ``resample_poly`` from ``rate`` to ``target_rate``."""
    divisor = gcd(rate, target_rate)
    return target_rate // divisor, rate // divisor


def resampling_note(rate: int, target_rate: int) -> str:
    return f"resampled {rate} Hz to {target_rate} Hz"


def to_target_rate(samples: np.ndarray, rate: int, target_rate: int, notes: list):
    if rate == target_rate:
        return samples, notes
    resampled = resample_poly(samples, *resampling_factors(rate, target_rate))
    return resampled, notes + [resampling_note(rate, target_rate)]


def check_finite_samples(path, samples: np.ndarray) -> None:
    if not np.all(np.isfinite(samples)):
        raise UserInputError(f"{path}: audio contains NaN or infinite samples")


def check_length_and_level(path, n_samples: int, peak: float, rate: int) -> None:
    """Refuse audio shorter than one frame or digitally silent (``peak``: the largest |sample|)."""
    frame = int(round(WIN_LENGTH * rate))
    if n_samples < frame:
        raise UserInputError(f"{path}: too short ({n_samples} samples at {rate} Hz = "
                             f"{1000 * n_samples / rate:.1f} ms; one 25 ms frame needs {frame})")
    if peak < SILENCE_PEAK:
        raise UserInputError(f"{path}: silent audio (all samples are zero)")


def validate_samples(path: Path, samples: np.ndarray, rate: int) -> None:
    """Refuse audio whose features would be meaningless: non-finite, silent, or shorter than a frame."""
    check_finite_samples(path, samples)
    check_length_and_level(path, samples.size, float(np.max(np.abs(samples))) if samples.size else 0.0, rate)
