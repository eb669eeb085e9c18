"""Training from recordings (``--input wav``): crops cut from the audio, optionally augmented
(``data_loading.augment``) and speed-perturbed, turned into the paper's features on the fly.

A ``WaveCorpus`` stands in for the ``FeatureCorpus`` it is built from: the episode planner sees the
same speakers, labels and frame counts (``n_frames``, ``by_speaker``), so episodes are planned exactly
as with ``--input features``, and ``crops`` makes each crop from its recording instead of its feature
file. For a crop of frames ``[s, s + L)`` it reads the frame-aligned samples ``[160 s, 160 (s + L - 1)
+ 400)`` plus the one before them that pre-emphasis needs, pre-emphasises, zero-pads where the
recording ends (python_speech_features pads the last frame with zeros after pre-emphasis) and computes
the log-mel features with ``TorchFbank`` (float64), then subtracts the crop's mean over time. An
utterance shorter than the crop is tiled frame by frame, as ``FeatureCorpus.read_crop`` tiles stored
features. Without augmentation the result equals the feature-file crop to float rounding (tested to
1e-4). With augmentation, the samples the crop reads (and no others) are augmented before
pre-emphasis; the generator of each crop is seeded by (seed, epoch, episode, crop position), so
every choice is a pure function of those and resume stays exact.

Speed perturbation (``--speed_perturb``, WeSpeaker's way): every recording also appears played at
0.9x and 1.1x speed (``scipy.signal.resample_poly`` by 10/9 and 10/11: slower is longer and lower),
each as a speaker of its own, so there are 3x as many speakers (labels ``label + n_speakers x k``,
k = 0, 1, 2 for 1.0, 0.9, 1.1). A crop of a perturbed utterance resamples only the stretch it needs
(plus a margin wider than the resampling filter, aligned on whole resampling periods), which equals
the same stretch of the whole perturbed recording (tested).
"""
import hashlib
import os
import sys
from fractions import Fraction

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

import configure
from common.errors import UserInputError
from data_loading.augment import Augmenter, check_augment_folders
from data_loading.episodes import empty_crops
from data_loading.wav_index import AUDIO_SUFFIXES, frames_of, load_wav_index
from feat_extract.fbank import INT16_SCALE, PREEMPHASIS
from feat_extract.torch_fbank import TorchFbank, frame_geometry

INPUTS = ("features", "wav")
SPEEDS = (1.0, 0.9, 1.1)
AUGMENT_STREAM = 104729        # seeds each crop's augmentation apart from the episode's own stream
RESAMPLE_MARGIN_BLOCKS = 8     # resampling periods read beyond a stretch (>= the filter's half length)


# ---------------------------------------------------------------- configuration
def resolve_waveform_config(config: dict) -> dict:
    """Defaults of the waveform settings (``wav_dir``: the wav folder the training features mirror,
    configure.SPLITS)."""
    settings = {"input": config.get("input") or "features", "augment": bool(config.get("augment")),
                "speed_perturb": bool(config.get("speed_perturb"))}
    if settings["input"] == "wav" and not config.get("wav_dir"):
        settings["wav_dir"] = str(configure.wav_dir(config["save_path"], *configure.TRAIN_DATA[config["data_type"]]))
    return settings


def check_waveform_config(config: dict) -> None:
    """Flags that do not fit together, and augmentation folders that cannot be used: one error each."""
    if config["input"] not in INPUTS:
        raise UserInputError(f"--input must be one of {', '.join(INPUTS)}, got {config['input']!r}")
    if config["input"] != "wav":
        for flag in ("augment", "speed_perturb", "noise_dir", "rir_dir", "wav_dir"):
            if config.get(flag):
                raise UserInputError(f"--{flag} works on recordings: it needs --input wav (training "
                                     "crops are cut from stored features by default)")
        return
    if not config["augment"]:
        for flag in ("noise_dir", "rir_dir"):
            if config.get(flag):
                raise UserInputError(f"--{flag} is only used with --augment")
        return
    if not config.get("noise_dir"):
        raise UserInputError("--augment needs --noise_dir (MUSAN-style noise/, music/, speech/ folders); "
                             "--rir_dir is optional (rooms are simulated without it)")
    check_augment_folders(config["noise_dir"], config.get("rir_dir"))


def training_corpus(features, config: dict, reindex: bool = False, is_main: bool = True):
    """The corpus training draws from: ``features`` itself, or a ``WaveCorpus`` over its recordings."""
    if config.get("input", "features") != "wav":
        return features
    wav_index = load_wav_index(features, config["wav_dir"], reindex, builder=is_main)
    augmenter = Augmenter(config["noise_dir"], config.get("rir_dir"), config["seed"], quiet=not is_main) \
        if config["augment"] else None
    corpus = WaveCorpus(features, wav_index, config["speed_perturb"], augmenter)
    if is_main:
        print(f"note: --input wav: crops cut from the recordings in {wav_index.wav_dir}, features computed "
              "on the fly" + (f"; {augmenter.describe()}" if augmenter else "")
              + (f"; speed perturbation 0.9/1.1: {corpus.n_speakers} speakers" if config["speed_perturb"] else ""),
              file=sys.stderr)
    return corpus


# ---------------------------------------------------------------- speed perturbation
def resampling(speed: float) -> tuple:
    """(up, down) of ``resample_poly`` that plays a recording at ``speed``: 0.9 -> (10, 9)."""
    ratio = Fraction(1 / speed).limit_denominator(100)
    return ratio.numerator, ratio.denominator


def perturbed_samples(n_samples, up: int, down: int):
    """Samples ``resample_poly(x, up, down)`` gives for ``n_samples`` (``ceil(n * up / down)``)."""
    return -(-np.asarray(n_samples, dtype=np.int64) * up // down)


# ---------------------------------------------------------------- the corpus
class WaveCorpus:
    """The recordings of a ``FeatureCorpus`` (with ``--speed_perturb``, three times over), with what
    the episode planner uses (``labels``, ``speakers``, ``n_frames``, ``by_speaker``) and ``crops``."""

    def __init__(self, features, wav_index, speed_perturb: bool = False, augmenter: Augmenter = None):
        self.features, self.wav_index, self.augmenter = features, wav_index, augmenter
        self.speeds = SPEEDS if speed_perturb else SPEEDS[:1]
        self.rates = [resampling(speed) for speed in self.speeds]
        n_base = len(features)
        self.base = np.tile(np.arange(n_base, dtype=np.int64), len(self.speeds))
        self.speed_code = np.repeat(np.arange(len(self.speeds), dtype=np.int64), n_base)
        self.labels = (features.labels[self.base] + features.n_speakers * self.speed_code).astype(np.int32)
        self.speakers = [name if speed == 1.0 else f"{name}@speed{speed}"
                         for speed in self.speeds for name in features.speakers]
        ups, downs = (np.array(values, dtype=np.int64)[self.speed_code] for values in zip(*self.rates))
        self.n_samples = -(-wav_index.n_samples[self.base] * ups // downs)
        self.n_frames = frames_of(self.n_samples)
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], np.arange(len(self.speakers) + 1))
        self.by_speaker = [order[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]
        self.stems = features.keys()
        self.fbank = self.fbank_raw = None   # made in the process that uses them (DataLoader workers)

    def __len__(self) -> int:
        return len(self.base)

    @property
    def n_speakers(self) -> int:
        return len(self.speakers)

    def digest(self) -> str:
        """The feature corpus's digest with the recordings' lengths and the speeds (torchrun ranks agree)."""
        hasher = hashlib.blake2b(self.features.digest().encode(), digest_size=16)
        hasher.update(np.ascontiguousarray(self.n_samples).tobytes())
        hasher.update(repr((self.speeds, self.augmenter is not None)).encode())
        return hasher.hexdigest()

    def wav_path(self, base: int) -> str:
        return os.path.join(self.wav_index.wav_dir,
                            self.stems[base] + AUDIO_SUFFIXES[int(self.wav_index.suffix[base])])

    # ------------------------------------------------------------ samples
    def read_recording(self, base: int, first: int, stop: int) -> np.ndarray:
        """Samples ``[first, stop)`` of recording ``base`` (within it), float64 on the int16 scale."""
        path = self.wav_path(base)
        try:
            data, _ = sf.read(path, start=first, stop=stop, dtype="float64", always_2d=True)
        except Exception as error:  # soundfile's own error types
            raise UserInputError(f"{path}: cannot read audio ({str(error).strip().splitlines()[0]}); "
                                 "if recordings changed, pass --reindex") from None
        if len(data) != stop - first:
            raise UserInputError(f"{path}: {first + len(data)} samples, but the wav index says "
                                 f"{int(self.wav_index.n_samples[base])}: the recording changed; pass --reindex")
        return data.mean(axis=1) * INT16_SCALE

    def read_samples(self, row: int, first: int, stop: int) -> np.ndarray:
        """Samples ``[first, stop)`` of utterance ``row`` (speed-perturbed where it is), cut at its end."""
        base, stop = int(self.base[row]), min(stop, int(self.n_samples[row]))
        up, down = self.rates[int(self.speed_code[row])]
        if up == down:
            return self.read_recording(base, first, stop)
        # output sample up*b of resample_poly is input sample down*b: read whole periods with a margin
        block = max(0, first // up - RESAMPLE_MARGIN_BLOCKS)
        last = min(int(self.wav_index.n_samples[base]), down * (-(-stop // up) + RESAMPLE_MARGIN_BLOCKS))
        resampled = resample_poly(self.read_recording(base, down * block, last), up, down)
        return resampled[first - up * block:stop - up * block]

    def emphasised_crop(self, row: int, start: int, length: int, rng=None) -> tuple:
        """(pre-emphasised samples of the crop's frames, frames): frames ``[start, start + m)``,
        m = min(length, frames); a crop past the end starts at 0 (``fill_crop``'s tiling)."""
        total = int(self.n_frames[row])
        start = 0 if total < start + length else start
        frames = min(length, total)
        frame_length, step = frame_geometry()
        first, width = start * step, (frames - 1) * step + frame_length
        lead = 1 if first > 0 else 0
        samples = self.read_samples(row, first - lead, first + width)
        if self.augmenter is not None:
            samples = self.augmenter(samples, rng)
        differences = samples[1:] - PREEMPHASIS * samples[:-1]
        emphasised = np.zeros(width)   # zeros past the recording's end, as python_speech_features pads
        if lead:
            emphasised[:len(differences)] = differences
        else:
            emphasised[0] = samples[0]
            emphasised[1:len(samples)] = differences
        return emphasised, frames

    # ------------------------------------------------------------ crops for the episodes
    def crops(self, utterances, starts, length: int, positions, key: tuple) -> torch.Tensor:
        """(n, 1, 40, length) float32 model input of crops ``positions`` of episode ``key`` = (seed,
        epoch, index), each with its mean over time subtracted, like ``episodes.crops_tensor``."""
        if self.fbank is None:
            self.fbank, self.fbank_raw = TorchFbank(normalise=True), TorchFbank(normalise=False)
        out = empty_crops(len(utterances), length)
        whole, signals = [], []
        for number, (row, start, position) in enumerate(zip(utterances, starts, positions)):
            rng = None if self.augmenter is None else np.random.default_rng([*key, AUGMENT_STREAM, int(position)])
            emphasised, frames = self.emphasised_crop(int(row), int(start), length, rng)
            if frames == length:
                whole.append(number)
                signals.append(emphasised)
            else:   # shorter than the crop: its frames tiled, then the tiled crop's mean subtracted
                raw = self.fbank_raw(torch.from_numpy(emphasised), emphasised=True)
                tiled = raw[torch.arange(length) % frames].double()
                out[number, 0] = (tiled - tiled.mean(0)).t().float()
        if whole:
            features = self.fbank(torch.from_numpy(np.stack(signals)), emphasised=True)
            out[torch.tensor(whole), 0] = features.transpose(1, 2)
        check_finite_crops(out, [self.wav_path(int(self.base[row])) for row in utterances])
        return out


def check_finite_crops(crops: torch.Tensor, paths: list) -> None:
    bad = sorted({path for path, finite in zip(paths, torch.isfinite(crops[:, 0, :, 0]).all(1).tolist())
                  if not finite})
    if bad:
        raise UserInputError(f"NaN or infinite values in training crops of {', '.join(bad)}")

