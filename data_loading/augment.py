"""Waveform augmentation of training crops (``--augment``): noise, music, babble, reverberation.

The recipe is voxceleb_trainer's (clovaai, ``DatasetLoader.py``), which Kaldi's VoxCeleb recipe also
uses: each crop gets, with equal probability, nothing, reverberation, music, babble or noise.

| kind   | source                                   | SNR (dB) | sources mixed |
| ------ | ---------------------------------------- | -------- | ------------- |
| noise  | ``<noise_dir>/noise/**/*.wav`` (MUSAN)   | 0 to 15  | 1             |
| music  | ``<noise_dir>/music/**/*.wav``           | 5 to 15  | 1             |
| babble | ``<noise_dir>/speech/**/*.wav``          | 13 to 20 | 3 to 7        |
| reverb | ``<rir_dir>/**/*.wav`` (e.g. RIRS_NOISES/simulated_rirs), or simulated rooms | | 1 |

(WeSpeaker draws from the same MUSAN folders with babble at 10-30 dB from a single recording, and
applies noise or reverberation to 60 % of its samples.) Each noise is a random stretch of a random
recording (a shorter recording is repeated), scaled so that the crop's power over the noise's power
is the drawn SNR, as both recipes do. Reverberation convolves the crop with a room impulse response
(``scipy.signal.fftconvolve``) that is first aligned on its direct path (its largest sample moved to
time 0, so the reverberant crop is not delayed against its labels and crop position) and scaled to
unit energy, then cut to the crop's length. Without ``--rir_dir`` the responses come from
``SIMULATED_ROOMS`` shoebox rooms simulated with pyroomacoustics' image source method (room sizes,
reverberation times and positions drawn from the run's seed; each worker simulates a room the first
time it needs it and keeps it).

Every choice (kind, files, stretches, SNRs, room) is drawn from a generator the caller passes in, a
pure function of (seed, epoch, episode, crop): episodes stay reproducible and resume stays exact.
A category folder that is absent is left out of the draw (a note says so); ``noise_dir`` must hold
at least one of them. Audio of the noise folders must be 16 kHz (MUSAN and RIRS_NOISES are).

Why not audiomentations (``AddBackgroundNoise``, ``ApplyImpulseResponse``): its transforms draw their
parameters from Python's global ``random`` module and cannot be given a generator, so the crops of an
episode would depend on which worker built it and resume would not be exact. The signal processing
itself is a few lines of numpy around scipy's FFT convolution.
"""
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from common.errors import UserInputError
from feat_extract.audio_formats import SOUNDFILE_SUFFIXES
from feat_extract.fbank import INT16_SCALE, SAMPLE_RATE


@dataclass(frozen=True)
class NoiseKind:
    folder: str          # sub-folder of --noise_dir (MUSAN's names)
    snr_db: tuple        # uniform range
    sources: tuple       # how many recordings are mixed: uniform integer range, both ends included


NOISE_KINDS = {"noise": NoiseKind("noise", (0.0, 15.0), (1, 1)),
               "music": NoiseKind("music", (5.0, 15.0), (1, 1)),
               "babble": NoiseKind("speech", (13.0, 20.0), (3, 7))}
POWER_FLOOR = 1e-4 * INT16_SCALE ** 2     # voxceleb_trainer's +1e-4 in the power of [-1, 1] audio
SIMULATED_ROOMS = 200
ROOM_SIZE_M = ((3.0, 3.0, 2.5), (10.0, 10.0, 4.0))
RT60_S = (0.2, 0.8)
MIN_WALL_DISTANCE_M = 0.5
AUDIO_NAMES = "/".join(SOUNDFILE_SUFFIXES)    # .wav/.flac/.ogg, for messages
RIR_STREAM = 7919                          # seeds rooms apart from the episodes' streams


def list_audio(folder) -> list:
    """Sorted audio files (``SOUNDFILE_SUFFIXES``: .wav, .flac, .ogg) anywhere below ``folder`` (strings)."""
    folder = Path(folder)
    return sorted(str(path) for path in folder.rglob("*") if path.suffix.lower() in SOUNDFILE_SUFFIXES
                  and path.is_file())


def check_augment_folders(noise_dir, rir_dir, rir_headers: bool = True) -> None:
    """Clear errors for folders that cannot be used (called with the other input checks, before the run
    folder is claimed); ``rir_headers``: also read every response's header (rate, length), ~0.2 ms each."""
    for flag, folder in (("--noise_dir", noise_dir), ("--rir_dir", rir_dir)):
        if folder is None:
            continue
        if not Path(folder).is_dir():
            raise UserInputError(f"{flag} {folder}: no such folder")
    if noise_dir is not None and not any(list_audio(Path(noise_dir) / kind.folder) for kind in NOISE_KINDS.values()):
        folders = "/".join(kind.folder for kind in NOISE_KINDS.values())
        raise UserInputError(f"--noise_dir {noise_dir}: no {AUDIO_NAMES} files in its {folders} sub-folders "
                             "(the MUSAN layout, e.g. musan/noise/free-sound/noise-free-sound-0000.wav)")
    rirs = list_audio(rir_dir) if rir_dir is not None else None
    if rirs == []:
        raise UserInputError(f"--rir_dir {rir_dir}: no {AUDIO_NAMES} room impulse responses below it "
                             "(e.g. RIRS_NOISES/simulated_rirs)")
    for path in (rirs or []) if rir_headers else []:   # an 8 kHz response is found now, not in epoch 1
        audio_length(path, "--rir_dir")


class NoiseFiles:
    """The recordings of one noise kind with their lengths (read once from their headers)."""

    def __init__(self, paths: list):
        self.paths = paths
        self.n_samples = np.array([audio_length(path) for path in paths], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def stretch(self, number: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """``length`` int16-scale samples from a random position of recording ``number`` (repeated
        when shorter)."""
        total = int(self.n_samples[number])
        start = int(rng.integers(0, total - length + 1)) if total > length else 0
        samples = read_mono(self.paths[number], start, min(total, start + length))
        return np.resize(samples, length) if len(samples) < length else samples


def audio_length(path, flag: str = "--noise_dir") -> int:
    """Samples of a 16 kHz augmentation file, from its header; a clear error naming ``flag`` otherwise."""
    try:
        info = sf.info(path)
    except Exception as error:  # soundfile's own error types
        raise UserInputError(f"{flag}: {path}: cannot read audio ({str(error).strip().splitlines()[0]})") from None
    if info.samplerate != SAMPLE_RATE:
        raise UserInputError(f"{flag}: {path}: {info.samplerate} Hz; augmentation audio must be 16 kHz")
    if info.frames < 1:
        raise UserInputError(f"{flag}: {path}: empty recording")
    return int(info.frames)


def read_mono(path, start: int = 0, stop: int = None) -> np.ndarray:
    """Samples ``[start, stop)`` of an audio file as float64 on the int16 scale, channels averaged."""
    try:
        data, rate = sf.read(path, start=start, stop=stop, dtype="float64", always_2d=True)
    except Exception as error:  # soundfile's own error types
        raise UserInputError(f"{path}: cannot read audio ({str(error).strip().splitlines()[0]})") from None
    if rate != SAMPLE_RATE:
        raise UserInputError(f"{path}: {rate} Hz audio; 16 kHz is needed")
    return data.mean(axis=1) * INT16_SCALE


def power_db(samples: np.ndarray) -> float:
    return 10 * np.log10(np.mean(samples ** 2) + POWER_FLOOR)


def add_noise(crop: np.ndarray, files: NoiseFiles, kind: NoiseKind, rng: np.random.Generator) -> np.ndarray:
    """``crop`` plus 1 (or, for babble, 3-7) noise stretches, each at its own random SNR."""
    count = min(int(rng.integers(kind.sources[0], kind.sources[1] + 1)), len(files))
    numbers = rng.choice(len(files), size=count, replace=False)
    clean_db = power_db(crop)
    mixed = crop.copy()
    for number in numbers:
        noise = files.stretch(int(number), len(crop), rng)
        snr = rng.uniform(*kind.snr_db)
        mixed += np.sqrt(10 ** ((clean_db - power_db(noise) - snr) / 10)) * noise
    return mixed


def prepare_rir(rir: np.ndarray, where) -> np.ndarray:
    """Direct path (largest sample) moved to time 0, scaled to unit energy."""
    rir = np.asarray(rir, dtype=np.float64)
    rir = rir[int(np.argmax(np.abs(rir))):]
    energy = np.sqrt(np.sum(rir ** 2))
    if not np.isfinite(energy) or energy == 0:
        raise UserInputError(f"{where}: the room impulse response is silent or not finite")
    return rir / energy


def reverberate(crop: np.ndarray, rir: np.ndarray) -> np.ndarray:
    from scipy.signal import fftconvolve  # only augmented runs pay for scipy's import (train.py start-up)
    return fftconvolve(crop, rir)[:len(crop)]


class RirFolder:
    """Room impulse responses from files (the first channel of a multi-channel one)."""

    def __init__(self, paths: list):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    @functools.lru_cache(maxsize=512)
    def __getitem__(self, number: int) -> np.ndarray:
        path = self.paths[number]
        try:
            data, rate = sf.read(path, dtype="float64", always_2d=True)
        except Exception as error:  # soundfile's own error types
            raise UserInputError(f"{path}: cannot read the room impulse response "
                                 f"({str(error).strip().splitlines()[0]})") from None
        if rate != SAMPLE_RATE:
            raise UserInputError(f"{path}: {rate} Hz room impulse response; 16 kHz is needed")
        return prepare_rir(data[:, 0], path)


class SimulatedRirs:
    """``SIMULATED_ROOMS`` shoebox rooms (pyroomacoustics, image source method), room ``k`` a pure
    function of (seed, k): size, RT60 (absorption and reflection order from Sabine's formula),
    source and microphone positions at least 0.5 m from the walls."""

    def __init__(self, seed: int, n_rooms: int = SIMULATED_ROOMS):
        self.seed, self.n_rooms = seed, n_rooms

    def __len__(self) -> int:
        return self.n_rooms

    @functools.lru_cache(maxsize=SIMULATED_ROOMS)
    def __getitem__(self, number: int) -> np.ndarray:
        import pyroomacoustics as pra   # only runs that simulate rooms pay for the import
        rng = np.random.default_rng([self.seed, RIR_STREAM, number])
        size = rng.uniform(*ROOM_SIZE_M)
        rt60 = rng.uniform(*RT60_S)
        absorption, max_order = pra.inverse_sabine(rt60, size)
        room = pra.ShoeBox(size, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=max_order)
        room.add_source(rng.uniform(MIN_WALL_DISTANCE_M, size - MIN_WALL_DISTANCE_M))
        room.add_microphone(rng.uniform(MIN_WALL_DISTANCE_M, size - MIN_WALL_DISTANCE_M))
        room.compute_rir()
        return prepare_rir(room.rir[0][0], f"simulated room {number}")


class Augmenter:
    """``augmenter(crop, rng)``: the crop (float64, int16 scale) with one augmentation drawn from
    ``rng`` (see the module docstring). Built once in the main process; DataLoader workers inherit it."""

    def __init__(self, noise_dir, rir_dir=None, seed: int = 0, quiet: bool = False):
        check_augment_folders(noise_dir, rir_dir, rir_headers=False)   # read by check_waveform_config
        self.noises = {}
        for name, kind in NOISE_KINDS.items():
            paths = list_audio(Path(noise_dir) / kind.folder)
            if paths:
                self.noises[name] = NoiseFiles(paths)
            elif not quiet:
                print(f"note: --noise_dir {noise_dir} has no {kind.folder}/ recordings: no {name} augmentation",
                      file=sys.stderr)
        self.rirs = RirFolder(list_audio(rir_dir)) if rir_dir else SimulatedRirs(seed)
        self.kinds = ("none", "reverb", *self.noises)

    def describe(self) -> str:
        counts = ", ".join(f"{name} ({len(files)} files)" for name, files in self.noises.items())
        rooms = f"{len(self.rirs)} room responses" + (" (simulated)" if isinstance(self.rirs, SimulatedRirs) else "")
        return f"augmentation: none, reverb ({rooms}), {counts}: one of {len(self.kinds)} per crop"

    def __call__(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        if kind == "none":
            return crop
        if kind == "reverb":
            return reverberate(crop, self.rirs[int(rng.integers(len(self.rirs)))])
        return add_noise(crop, self.noises[kind], NOISE_KINDS[kind], rng)

