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
import functools
import hashlib
import os
import sys
from fractions import Fraction

import numpy as np
import soundfile as sf
import torch

import configure
from common.errors import UserInputError
from data_loading.augment import Augmenter, check_augment_folders
from data_loading.episodes import empty_crops
from data_loading.wav_index import frames_of, load_wav_index
from feat_extract.audio_formats import SOUNDFILE_SUFFIXES
from feat_extract.fbank import INT16_SCALE, PREEMPHASIS
from feat_extract.torch_fbank import TorchFbank, frame_geometry

INPUTS = ("features", "wav")          # --input, the default first: crops from stored features or recordings
FBANK_PLACES = ("workers", "device")   # --wav_fbank, the default first: where --input wav computes the features
SPEEDS = (1.0, 0.9, 1.1)
AUGMENT_STREAM = 104729        # seeds each crop's augmentation apart from the episode's own stream
RESAMPLE_MARGIN_BLOCKS = 8     # resampling periods read beyond a stretch (>= the filter's half length)


# ---------------------------------------------------------------- configuration
def resolve_waveform_config(config: dict) -> dict:
    """Defaults of the waveform settings (``wav_dir``: the wav folder the training features mirror,
    configure.SPLITS)."""
    settings = {"input": config.get("input") or INPUTS[0], "augment": bool(config.get("augment")),
                "speed_perturb": bool(config.get("speed_perturb")),
                "wav_fbank": config.get("wav_fbank") or FBANK_PLACES[0]}
    if settings["input"] == "wav" and not config.get("wav_dir"):
        settings["wav_dir"] = str(configure.wav_dir(config["save_path"], *configure.TRAIN_DATA[config["data_type"]]))
    return settings


def check_waveform_config(config: dict) -> None:
    """Flags that do not fit together, and augmentation folders that cannot be used: one error each."""
    if config["input"] not in INPUTS:
        raise UserInputError(f"--input must be one of {', '.join(INPUTS)}, got {config['input']!r}")
    if config["wav_fbank"] not in FBANK_PLACES:
        raise UserInputError(f"--wav_fbank must be one of {', '.join(FBANK_PLACES)}, got {config['wav_fbank']!r}")
    if config["input"] != "wav":
        given = [flag for flag in ("augment", "speed_perturb", "noise_dir", "rir_dir", "wav_dir") if config.get(flag)]
        given += ["wav_fbank"] if config["wav_fbank"] != FBANK_PLACES[0] else []
        if given:
            raise UserInputError(f"--{given[0]} works on recordings: it needs --input wav (training crops are "
                                 "cut from stored features by default)")
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
    corpus = WaveCorpus(features, wav_index, config["speed_perturb"], augmenter, config["wav_fbank"])
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


def perturbed_samples(n_samples, up, down) -> np.ndarray:
    """Samples ``resample_poly(x, up, down)`` gives for ``n_samples`` (``ceil(n * up / down)``; arrays
    of any of them work element by element)."""
    return -(-np.asarray(n_samples, dtype=np.int64) * up // down)


# ---------------------------------------------------------------- the corpus
class WaveCorpus:
    """The recordings of a ``FeatureCorpus`` (with ``--speed_perturb``, three times over), with what
    the episode planner uses (``labels``, ``speakers``, ``n_frames``, ``by_speaker``) and ``crops``."""

    def __init__(self, features, wav_index, speed_perturb: bool = False, augmenter: Augmenter = None,
                 fbank_on: str = "workers"):
        self.features, self.wav_index, self.augmenter, self.fbank_on = features, wav_index, augmenter, fbank_on
        self.speeds = SPEEDS if speed_perturb else SPEEDS[:1]
        self.rates = [resampling(speed) for speed in self.speeds]
        n_base = len(features)
        self.base = np.tile(np.arange(n_base, dtype=np.int64), len(self.speeds))
        self.speed_code = np.repeat(np.arange(len(self.speeds), dtype=np.int64), n_base)
        self.labels = (features.labels[self.base] + features.n_speakers * self.speed_code).astype(np.int32)
        self.speakers = [name if speed == 1.0 else f"{name}@speed{speed}"
                         for speed in self.speeds for name in features.speakers]
        ups, downs = (np.array(values, dtype=np.int64)[self.speed_code] for values in zip(*self.rates))
        self.n_samples = perturbed_samples(wav_index.n_samples[self.base], ups, downs)
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
                            self.stems[base] + SOUNDFILE_SUFFIXES[int(self.wav_index.suffix[base])])

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
        from scipy.signal import resample_poly  # only --speed_perturb pays for scipy's import
        resampled = resample_poly(self.read_recording(base, down * block, last), up, down)
        return resampled[first - up * block:stop - up * block]

    def crop_samples(self, row: int, start: int, length: int, rng=None) -> tuple:
        """(samples, valid, frames) of a crop of frames ``[start, start + m)``, m = min(length, frames)
        (a crop past the end starts at 0: ``fill_crop``'s tiling). ``samples`` (1 + the frames' span)
        holds the sample before the first frame (0 at the recording's start, which makes pre-emphasis
        keep the first sample as python_speech_features does), then the frames' samples, augmented
        when there is an augmenter, zero past the recording's end; ``valid`` of them exist."""
        total = int(self.n_frames[row])
        start = 0 if total < start + length else start
        frames = min(length, total)
        frame_length, step = frame_geometry()
        first, width = start * step, (frames - 1) * step + frame_length
        lead = 1 if first > 0 else 0
        samples = self.read_samples(row, first - lead, first + width)
        if self.augmenter is not None:
            samples = self.augmenter(samples, rng)
        padded = np.zeros(1 + width)
        padded[1 - lead:1 - lead + len(samples)] = samples
        return padded, len(samples) - lead, frames

    # ------------------------------------------------------------ crops for the episodes
    def crops(self, utterances, starts, length: int, positions, key: tuple):
        """(n, 1, 40, length) float32 model input of crops ``positions`` of episode ``key`` = (seed,
        epoch, index), each with its mean over time subtracted, like ``episodes.crops_tensor``. With
        ``fbank_on="device"`` a ``DeviceCrops`` instead, whose features are computed where it is moved."""
        if self.fbank_raw is None:
            self.fbank, self.fbank_raw = TorchFbank(normalise=True), TorchFbank(normalise=False)
        out = empty_crops(len(utterances), length)
        whole, signals, valid = [], [], []
        for number, (row, start, position) in enumerate(zip(utterances, starts, positions)):
            rng = None if self.augmenter is None else np.random.default_rng([*key, AUGMENT_STREAM, int(position)])
            samples, n_valid, frames = self.crop_samples(int(row), int(start), length, rng)
            if frames == length:
                whole.append(number)
                signals.append(samples)
                valid.append(n_valid)
            else:   # shorter than the crop: its frames tiled, then the tiled crop's mean subtracted
                emphasised = preemphasis(torch.from_numpy(samples[None]), torch.tensor([n_valid]))[0]
                raw = self.fbank_raw(emphasised, emphasised=True)
                tiled = raw[torch.arange(length) % frames].double()
                out[number, 0] = (tiled - tiled.mean(0)).t().float()
        valid = torch.tensor(valid, dtype=torch.int64)
        if self.fbank_on == "device":   # float32 holds int16-scale samples exactly
            samples = torch.from_numpy(np.stack(signals).astype(np.float32)) if signals else torch.zeros(0, 2)
            return DeviceCrops(samples, valid, torch.tensor(whole, dtype=torch.int64), out)
        if whole:
            features = self.fbank(preemphasis(torch.from_numpy(np.stack(signals)), valid), emphasised=True)
            out[torch.tensor(whole), 0] = features.transpose(1, 2)
        check_finite_crops(out, [self.wav_path(int(self.base[row])) for row in utterances])
        return out


def preemphasis(samples: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(n, 1 + span) samples as ``crop_samples`` lays them out -> (n, span) float64 pre-emphasised
    samples, zero from each row's ``valid`` on (python_speech_features pads after pre-emphasis)."""
    samples = samples.double()
    emphasised = samples[:, 1:] - PREEMPHASIS * samples[:, :-1]
    inside = torch.arange(emphasised.shape[1], device=samples.device)[None, :] < valid.to(samples.device)[:, None]
    return emphasised * inside


class DeviceCrops:
    """Crops whose features are computed on the training device (``--wav_fbank device``): the samples
    of the crops that need no tiling (float32, laid out as ``crop_samples`` makes them, with their
    ``valid`` counts) and the model input of the others (made in the worker: an utterance shorter than
    the crop is rare). ``to(device)``, which
    the training step calls on every batch part, computes the features there (float64 ``TorchFbank``,
    the crop's mean subtracted) and returns the (n, 1, 40, frames) tensor. The DataLoader pins its
    tensors (``pin_memory``) like any other."""

    def __init__(self, samples: torch.Tensor, valid: torch.Tensor, rows: torch.Tensor, features: torch.Tensor):
        self.samples, self.valid, self.rows, self.features = samples, valid, rows, features

    @property
    def shape(self) -> torch.Size:
        return self.features.shape

    def __len__(self) -> int:
        return len(self.features)

    def pin_memory(self) -> "DeviceCrops":
        return DeviceCrops(self.samples.pin_memory(), self.valid, self.rows, self.features.pin_memory())

    def to(self, device, non_blocking: bool = False, memory_format=torch.contiguous_format) -> torch.Tensor:
        device = torch.device(device)
        features = self.features.to(device, non_blocking=non_blocking)
        if len(self.rows):
            emphasised = preemphasis(self.samples.to(device, non_blocking=non_blocking), self.valid)
            computed = device_fbank(device)(emphasised, emphasised=True)
            features[self.rows.to(device)] = computed.transpose(1, 2).unsqueeze(1)
        if not torch.isfinite(features[:, 0, :, 0]).all():
            raise UserInputError("NaN or infinite values in training crops computed from recordings")
        return features.contiguous(memory_format=memory_format)


@functools.lru_cache(maxsize=None)
def device_fbank(device: torch.device) -> TorchFbank:
    """One ``TorchFbank`` per device (its window and filters moved there once)."""
    return TorchFbank(normalise=True).to(device)


def check_finite_crops(crops: torch.Tensor, paths: list) -> None:
    bad = sorted({path for path, finite in zip(paths, torch.isfinite(crops[:, 0, :, 0]).all(1).tolist())
                  if not finite})
    if bad:
        raise UserInputError(f"NaN or infinite values in training crops of {', '.join(bad)}")

