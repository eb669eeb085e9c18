"""The trained encoder on users' recordings: ``SpeakerEncoder`` (audio -> features -> embedding,
enrolment, scoring, identification, calibrated decisions) and the one-call ``embed`` / ``score``.

``speaker_api.py`` re-exports this module for users (``import speaker_api``); ``embed.py``,
``score.py`` and ``verify.py`` use it through ``evaluation.batch_embedding``, ``evaluation.score_trials``
and ``evaluation.verification``.
"""
import functools
import warnings
from pathlib import Path

import numpy as np
import torch

from dataclasses import dataclass

from common.errors import UserInputError
from evaluation.api_arguments import (mapping_value, path_value, probability_value, recordings_value,
                                      sample_rate_value, top_k_value, whole_number)
from feat_extract.audio import read_audio, to_target_rate, validate_samples
from evaluation.calibration import duration_qualities
from evaluation.embedding import strict_fp32
from evaluation.long_recordings import DEFAULT_CHUNK_FRAMES, embed_long
from evaluation.recordings import embed_recording
from feat_extract.audio_stream import BLOCK_SECONDS, ArrayStream
from feat_extract.fbank import INT16_SCALE, SAMPLE_RATE, log_mel_fbank_int16
from feat_extract.features import check_features, model_input
from model.checkpoint import load_encoder, resolve_checkpoint, trained_epochs


class ConversionNote(UserWarning):
    """Audio was converted (resampled, mixed to mono) before feature extraction."""


class CalibrationMismatch(UserWarning):
    """A calibration fitted on another checkpoint's scores: its LLRs do not hold for this model."""


class ShortRecording(UserWarning):
    """A recording shorter than ``MIN_SECONDS``: its embedding and any decision on it are unreliable."""


# The encoder learnt from 1-2 s crops and the paper's shortest test is 1 s; below half a second
# (50 frames, 7 time steps after the ResNet's three stride-2 stages) the model sees far less speech than
# anything it was trained or evaluated on (a judgement from the paper's lengths, see README).
MIN_SECONDS = 0.5


def short_recording_message(source, n_samples: int):
    """The warning for a recording of ``n_samples`` at 16 kHz shorter than ``MIN_SECONDS``; else None."""
    seconds = n_samples / SAMPLE_RATE
    if seconds >= MIN_SECONDS:
        return None
    return (f"{source}: only {seconds:.2f} s of audio, below the {MIN_SECONDS} s minimum; embeddings "
            "and decisions on recordings this short are not reliable")


def default_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def array_to_mono_16k(samples, sample_rate, source="array"):
    """(int16-scale float64 mono samples at 16 kHz, notes) from a user array.

    ``samples``: float in [-1, 1] or integer (int16 scale); 1-d, or 2-d with channels on the shorter
    axis (soundfile's (frames, channels) or (channels, frames)); ``sample_rate`` is required."""
    sample_rate = sample_rate_value(sample_rate, source)
    samples = np.asarray(samples)
    if samples.dtype.kind not in "fiu" or samples.ndim not in (1, 2) or samples.size == 0:
        raise UserInputError(f"{source}: expected a non-empty 1-d or 2-d numeric array, got "
                             f"{samples.dtype} {samples.shape}")
    if samples.dtype.kind == "f":
        peak = float(np.abs(samples).max())
        if not np.isfinite(peak):
            raise UserInputError(f"{source}: samples contain NaN or inf")
        if peak > 1.5:
            raise UserInputError(f"{source}: float samples must lie in [-1, 1] (peak {peak:.1f}); "
                                 f"pass int16 values as an integer array")
        samples = samples.astype(np.float64) * INT16_SCALE
    else:
        samples = samples.astype(np.float64)
    notes = []
    if samples.ndim == 2:
        channel_axis = 1 if samples.shape[1] <= samples.shape[0] else 0
        notes.append(f"mixed {samples.shape[channel_axis]} channels to mono")
        samples = samples.mean(axis=channel_axis)
    # the same scipy resampling (and notes) as feat_extract.audio.read_audio applies to files
    return to_target_rate(samples, sample_rate, SAMPLE_RATE, notes)


def load_samples(path_or_array, sample_rate=None):
    """(int16-scale mono 16 kHz samples, notes, source name) for a path or an array."""
    if isinstance(path_or_array, (str, Path)):
        if sample_rate is not None:
            raise UserInputError(f"{path_or_array}: sample_rate is only for arrays; a file's rate is "
                                 f"read from the file")
        audio = read_audio(path_or_array)
        samples, notes, source = np.asarray(audio.samples, np.float64), list(audio.notes), str(path_or_array)
    else:
        samples, notes = array_to_mono_16k(path_or_array, sample_rate)
        source = "array"
        validate_samples(source, samples, SAMPLE_RATE)   # too short, silent, NaN: as for files
    return samples, notes, source


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    if norms == 0:
        raise UserInputError("cannot score an all-zero embedding")
    return float(a @ b / norms)


@dataclass
class Verification:
    score: float                 # cosine similarity
    llr: float                   # calibrated log-likelihood ratio (natural log)
    p_target: float
    llr_threshold: float         # Bayes threshold log((1 - p_target) / p_target)
    accepted: bool               # llr >= llr_threshold
    calibration_file: str        # which calibration gave the LLR


def enrolment_embedding(embeddings) -> np.ndarray:
    """A speaker model from several embeddings: the mean of their unit-length versions (each
    recording counts the same whatever its embedding's norm), itself scaled to unit length."""
    stacked = np.atleast_2d(np.asarray(embeddings, np.float64))
    norms = np.linalg.norm(stacked, axis=1, keepdims=True)
    if stacked.size == 0 or (norms == 0).any():
        raise UserInputError("enrolment needs at least one recording with a non-zero embedding")
    mean = (stacked / norms).mean(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


class SpeakerEncoder:
    """A trained encoder (any registered model, model/encoder.py) in eval mode, with audio -> features ->
    embedding (256-d for the registered models)."""

    def __init__(self, model, device=None, checkpoint_path=None, epoch=None, note_handler=None,
                 warning_handler=None):
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.epoch = epoch
        self.note_handler = note_handler    # callable(str); default: warnings.warn(ConversionNote)
        self.warning_handler = warning_handler  # callable(str); default: warnings.warn(ShortRecording)
        self.chunk_frames = DEFAULT_CHUNK_FRAMES  # longer recordings: exact chunks (evaluation.long_recordings)
        self.block_seconds = BLOCK_SECONDS        # audio read this many seconds at a time

    @classmethod
    def from_checkpoint(cls, path=None, n_folder=None, cp_num=None, device=None, note_handler=None,
                        model_dir=None, warning_handler=None):
        """Load ``path`` or ``<model_dir>/baseline_{n_folder:03d}/checkpoint_{cp_num:03d}.pth``
        (``model_dir`` default: saved_model/)."""
        path = checkpoint_file(path, n_folder, cp_num, model_dir)
        device = torch.device(device) if device is not None else default_device()
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserInputError(f"device {device} requested but no CUDA GPU is available; use device='cpu'")
        model, checkpoint = load_encoder(path, device=device)
        return cls(model, device, path, trained_epochs(checkpoint, path), note_handler, warning_handler)

    def _note(self, source: str, note: str, depth: int = 0) -> None:
        """``depth``: frames between the method the user called and the caller of ``_note``."""
        message = f"{source}: {note}"
        if self.note_handler is not None:
            self.note_handler(message)
        else:
            warnings.warn(message, ConversionNote, stacklevel=3 + depth)

    def features(self, path_or_array, sample_rate=None) -> np.ndarray:
        """(frames, 40) float32 log-mel features of a recording (16 kHz mono after conversion)."""
        samples, notes, source = load_samples(path_or_array, sample_rate)
        for note in notes:
            self._note(source, note)
        self._warn_if_short(source, samples.size)
        return log_mel_fbank_int16(samples)

    def _warn_if_short(self, source: str, n_samples: int, depth: int = 0) -> None:
        short = short_recording_message(source, n_samples)
        if short:
            self._warn(short, ShortRecording, depth)

    def _warn(self, text: str, category, depth: int = 0) -> None:
        if self.warning_handler is not None:
            self.warning_handler(text)
        else:
            warnings.warn(text, category, stacklevel=4 + depth)

    @torch.no_grad()
    def embed_features(self, features: np.ndarray) -> np.ndarray:
        """(frames, 40) features -> (256,) float32 embedding (in exact chunks when longer than
        ``chunk_frames``)."""
        features = check_features(np.asarray(features, np.float32), "features")
        if len(features) > self.chunk_frames:
            return embed_long(self.model, features, self.device, self.chunk_frames)
        batch = model_input(features[None]).to(self.device)   # normalize_frames, as EER_full
        with strict_fp32(self.device):
            return self.model(batch)[0].float().cpu().numpy()

    def embed(self, path_or_array, sample_rate=None) -> np.ndarray:
        """(256,) embedding of an audio file (any format ``read_audio`` reads) or a sample array.

        A file is read in blocks and a recording longer than ``chunk_frames`` embedded in exact
        chunks (evaluation.recordings), so memory does not grow with its length."""
        return self._embedded(path_or_array, sample_rate, depth=1).embedding

    def _embedded(self, path_or_array, sample_rate=None, depth: int = 0):
        """``evaluation.recordings.Embedded`` of a recording: its embedding and its duration. Notes
        and warnings point ``depth`` frames above the caller (at the user's line)."""
        if isinstance(path_or_array, (str, Path)):
            if sample_rate is not None:
                raise UserInputError(f"{path_or_array}: sample_rate is only for arrays; a file's rate is "
                                     f"read from the file")
            source = path_or_array
        else:
            samples, notes = array_to_mono_16k(path_or_array, sample_rate)
            source = ArrayStream(samples, "array", notes, self.block_seconds)
        embedded = embed_recording(self.model, source, self.device, self.chunk_frames, self.block_seconds)
        name = str(path_or_array) if isinstance(path_or_array, (str, Path)) else "array"
        for note in embedded.notes:
            self._note(name, note, depth)
        self._warn_if_short(name, round(embedded.duration_s * SAMPLE_RATE), depth)
        return embedded

    def as_embedding(self, item) -> np.ndarray:
        """An embedding as is; a path or a (samples, sample_rate) tuple is embedded first."""
        return self._with_duration(item)[0]

    def _with_duration(self, item) -> tuple:
        """(embedding, seconds) of a path or (samples, sample_rate) tuple; (embedding, None) for an
        embedding given as is."""
        if isinstance(item, (str, Path)):
            embedded = self._embedded(item, depth=2)
            return embedded.embedding, embedded.duration_s
        if isinstance(item, tuple) and len(item) == 2:
            embedded = self._embedded(item[0], sample_rate=item[1], depth=2)
            return embedded.embedding, embedded.duration_s
        array = np.asarray(item)
        if array.shape != (self.embedding_size,) or array.dtype.kind not in "fiu":
            raise UserInputError(f"score() takes embeddings of shape ({self.embedding_size},), paths, "
                                 f"or (samples, sample_rate) tuples; got an array of shape {array.shape}")
        return array, None

    def score(self, a, b) -> float:
        """Cosine similarity of two embeddings (or of two recordings given as paths/tuples)."""
        return cosine(self.as_embedding(a), self.as_embedding(b))

    def enroll(self, recordings) -> np.ndarray:
        """One (256,) unit-length speaker model from several recordings (paths, (samples, rate)
        tuples or embeddings): the mean of their unit-length embeddings, see ``enrolment_embedding``."""
        return enrolment_embedding([self.as_embedding(item) for item in recordings_value(recordings)])

    def enroll_gallery(self, speakers: dict) -> dict:
        """{speaker: [recordings]} -> {speaker: speaker model} (see ``enroll``)."""
        speakers = mapping_value(speakers, "enroll_gallery() speakers")
        return {name: self.enroll(recordings) for name, recordings in speakers.items()}

    def identify(self, probe, gallery: dict, top_k: int = 5) -> list:
        """The ``top_k`` enrolled speakers closest to ``probe``: [(speaker, cosine)], best first."""
        gallery, top_k = mapping_value(gallery, "identify() gallery"), top_k_value(top_k)
        probe = self.as_embedding(probe)
        ranked = sorted(((cosine(self.as_embedding(model), probe), name) for name, model in gallery.items()),
                        reverse=True)
        return [(name, score) for score, name in ranked[:top_k]]

    def calibration(self, path=None):
        """(Calibration, its file): ``path``, else ``<checkpoint>.calibration.json`` when it exists."""
        from evaluation.calibration import Calibration, calibration_beside
        path = path_value(path, "calibration")
        if path is None and self.checkpoint_path is not None:
            path = calibration_beside(self.checkpoint_path)
            if not path.is_file():
                raise UserInputError(f"no calibration for {self.checkpoint_path} (looked for {path}); fit one "
                                     f"with score.py --calibrate_out on a labelled trial list")
        if path is None:
            raise UserInputError("give a calibration file (score.py --calibrate_out writes one)")
        calibration = Calibration.load(path)
        if calibration.score_norm != "none":
            raise UserInputError(f"{path} calibrates {calibration.score_norm} scores; verification scores "
                                 f"raw cosines, so it needs a calibration fitted without --score_norm")
        if mismatch := calibration.model_mismatch(self.checkpoint_path):
            self._warn(f"{path}: {mismatch}", CalibrationMismatch)
        return calibration, Path(path)

    def verify(self, enroll, test, p_target: float = 0.5, calibration=None, enroll_seconds=None,
               test_seconds=None) -> Verification:
        """Calibrated decision: LLR of the cosine score, accepted at the Bayes threshold of ``p_target``.
        ``enroll``: a recording, an embedding, or a list of recordings (see ``enroll``). A
        duration-aware calibration (qmf duration) uses the recordings' durations (an enrolment of
        several: their total); give ``enroll_seconds``/``test_seconds`` for sides passed as embeddings."""
        p_target = probability_value(p_target, "p_target")
        model, path = self.calibration(calibration)
        if isinstance(enroll, list) and not enroll:
            raise UserInputError("enroll() takes a non-empty list of recordings")
        enrolled = [self._with_duration(item) for item in (enroll if isinstance(enroll, list) else [enroll])]
        speaker = enrolment_embedding([e for e, _ in enrolled]) if isinstance(enroll, list) else enrolled[0][0]
        test_vector, test_duration = self._with_duration(test)
        score = cosine(speaker, test_vector)
        qualities = None
        if model.qmf == "duration":
            enroll_seconds = enroll_seconds or side_seconds([d for _, d in enrolled], "enrolment")
            qualities = duration_qualities(enroll_seconds, test_seconds or side_seconds([test_duration], "test"))
        llr = float(np.ravel(model.llr(score, qualities))[0])
        threshold = float(np.log((1 - p_target) / p_target))
        return Verification(score, llr, p_target, threshold, llr >= threshold, str(path))

    @property
    def embedding_size(self) -> int:
        return self.model.embedding_size


def side_seconds(durations: list, side: str) -> float:
    """Total duration of one side's recordings; an error when a side was given as an embedding."""
    if any(duration is None for duration in durations):
        raise UserInputError(f"the calibration is duration-aware (qmf duration): the {side} side was given as "
                             f"an embedding, so pass {'enroll' if side == 'enrolment' else 'test'}_seconds too")
    return float(sum(durations))


def checkpoint_file(path=None, n_folder=None, cp_num=None, model_dir=None) -> Path:
    path, model_dir = path_value(path, "checkpoint path"), path_value(model_dir, "model_dir")
    n_folder = None if n_folder is None else whole_number(n_folder, "n_folder", 0)
    cp_num = None if cp_num is None else whole_number(cp_num, "cp_num", 0)
    if path is None and (n_folder is None or cp_num is None):
        raise UserInputError("give a checkpoint path, or both n_folder and cp_num")
    return resolve_checkpoint(n_folder, cp_num, path, model_dir)


@functools.lru_cache(maxsize=8)
def encoder_for_file(resolved_path: str) -> SpeakerEncoder:
    """The encoder of one checkpoint file, loaded once per process (``embed`` / ``score`` below)."""
    return SpeakerEncoder.from_checkpoint(resolved_path)


def _encoder(checkpoint=None, n_folder=None, cp_num=None, model_dir=None):
    return encoder_for_file(str(checkpoint_file(checkpoint, n_folder, cp_num, model_dir).resolve()))


def embed(path_or_array, sample_rate=None, checkpoint=None, n_folder=None, cp_num=None,
          model_dir=None) -> np.ndarray:
    """One-call embedding; the encoder for the given checkpoint file is loaded once and cached."""
    return _encoder(checkpoint, n_folder, cp_num, model_dir).embed(path_or_array, sample_rate)


def score(a, b, checkpoint=None, n_folder=None, cp_num=None, model_dir=None) -> float:
    """One-call cosine score of two embeddings, paths or (samples, sample_rate) tuples."""
    return _encoder(checkpoint, n_folder, cp_num, model_dir).score(a, b)
