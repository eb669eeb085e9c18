"""A built-in synthetic speaker corpus in the VoxCeleb layout (numpy/scipy only, deterministic per seed).

Source-filter speech: a glottal pulse train (per-speaker pitch range, open quotient, spectral tilt,
breathiness, jitter) excites cascaded formant resonators (a shared vowel/nasal inventory scaled by the
speaker's vocal-tract length, plus per-speaker formant quirks and higher formants); fricatives are
band-passed noise; words are separated by pauses; the speaking rate is per speaker. Each utterance
says different things at a different length; each session has its own channel (band limits, an EQ
peak, a short room reverb, noise at a session-dependent SNR, and a level).

Layout written under ``save_path``::

    voxceleb1/dev/wav/idXXXXX/<session>/<utt>.wav     training speakers
    voxceleb1/test/wav/idYYYYY/<session>/<utt>.wav    disjoint unseen speakers
    voxceleb1/test/veri_test.txt                       VoxCeleb1-O style trials (label enroll test)
"""
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import fftconvolve, lfilter, sosfilt

from common.errors import UserInputError
from common.files import atomic_path, write_text
from feat_extract.fbank import SAMPLE_RATE

FIRST_SPEAKER_ID = 10001
UTTERANCES_PER_SESSION = 5
SESSION_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
# average adult vowel formants F1-F3 (Hz), plus two nasal murmurs
PHONES = np.array([[270, 2290, 3010], [390, 1990, 2550], [530, 1840, 2480], [660, 1720, 2410],
                   [730, 1090, 2440], [570, 840, 2410], [440, 1020, 2240], [300, 870, 2240],
                   [490, 1350, 1690], [520, 1190, 2390], [250, 1100, 2300], [280, 1700, 2500]],
                  dtype=float)
NASALS = (10, 11)
KINDS = {"dev": 0, "test": 1, "session": 2, "trials": 3, "augment": 4}   # seed streams
AUGMENT_SPEAKER_BASE = 10 ** 6   # voices of the synthetic augmentation set's speech (prep/synthetic_augment.py)


@dataclass(frozen=True)
class Voice:
    f0: float               # mean pitch (Hz)
    f0_span: float          # intonation range (semitones)
    tract_scale: float      # formant scaling from vocal-tract length
    quirks: np.ndarray      # (n_phones, 3) per-speaker formant factors
    high_formants: tuple    # F4, F5 (Hz)
    bandwidth: float        # formant bandwidth factor
    tilt: float             # one-pole low-pass coefficient of the source
    open_quotient: float
    breathiness: float
    rate: float             # speaking-rate factor (>1 = faster)
    jitter: float


def make_voice(seed: int, speaker: int) -> Voice:
    """A stable voice for global speaker index ``speaker``; pitch ranges of the sexes overlap."""
    rng = np.random.default_rng([seed, KINDS["dev"], speaker, 7])
    female = rng.random() < 0.5
    tract = rng.uniform(1.02, 1.2) if female else rng.uniform(0.86, 1.04)
    return Voice(
        f0=float(np.exp(rng.normal(np.log(200 if female else 118), 0.16))),
        f0_span=rng.uniform(1.5, 5.0), tract_scale=tract,
        quirks=rng.normal(1.0, 0.05, size=PHONES.shape),
        high_formants=(rng.uniform(3200, 3900) * tract, rng.uniform(4100, 4800) * tract),
        bandwidth=rng.uniform(0.7, 1.5), tilt=rng.uniform(0.55, 0.93),
        open_quotient=rng.uniform(0.35, 0.75), breathiness=rng.uniform(0.01, 0.25),
        rate=rng.uniform(0.8, 1.25), jitter=rng.uniform(0.002, 0.02))


def resonator(frequency: float, bandwidth: float) -> list:
    """Klatt second-order resonator with unit gain at 0 Hz, as one SOS row."""
    radius = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    pole = 2 * radius * np.cos(2 * np.pi * frequency / SAMPLE_RATE)
    return [1 - pole + radius ** 2, 0.0, 0.0, 1.0, -pole, radius ** 2]


def phone_filter(voice: Voice, phone: int) -> np.ndarray:
    formants = list(PHONES[phone] * voice.tract_scale * voice.quirks[phone]) + list(voice.high_formants)
    bandwidths = np.array([60, 90, 120, 180, 250]) * voice.bandwidth
    return np.array([resonator(min(f, 0.45 * SAMPLE_RATE), b) for f, b in zip(formants, bandwidths)])


def plan_segments(rng, voice: Voice, n_samples: int) -> list:
    """(kind, length, phone) segments filling ``n_samples``: syllables (consonant + vowel), pauses."""
    segments, total = [], 0
    while total < n_samples:
        if segments and rng.random() < 0.12:
            segments.append(("pause", rng.uniform(0.08, 0.35), 0))
        if rng.random() < 0.55:
            segments.append(("fricative", rng.uniform(0.05, 0.13) / voice.rate, int(rng.integers(3))))
        elif rng.random() < 0.5:
            segments.append(("voiced", rng.uniform(0.04, 0.09) / voice.rate, int(rng.choice(NASALS))))
        segments.append(("voiced", rng.uniform(0.07, 0.22) / voice.rate, int(rng.integers(10))))
        total = sum(int(seconds * SAMPLE_RATE) for _, seconds, _ in segments)
    return [(kind, int(seconds * SAMPLE_RATE), phone) for kind, seconds, phone in segments]


def pitch_contour(rng, voice: Voice, n_samples: int) -> np.ndarray:
    knots = max(2, int(n_samples / SAMPLE_RATE * 3))
    semitones = rng.normal(0, voice.f0_span / 2, size=knots) - np.linspace(0, voice.f0_span / 2, knots)
    contour = np.interp(np.arange(n_samples), np.linspace(0, n_samples, knots), semitones)
    jitter = rng.normal(0, voice.jitter, size=n_samples)
    return voice.f0 * 2 ** (contour / 12) * (1 + jitter)


def glottal_source(rng, voice: Voice, n_samples: int) -> np.ndarray:
    """Differentiated raised-cosine glottal pulses, tilted, with pulse-synchronous breath noise."""
    phase = np.cumsum(pitch_contour(rng, voice, n_samples) / SAMPLE_RATE) % 1.0
    opening = phase < voice.open_quotient
    flow = np.where(opening, 0.5 * (1 - np.cos(2 * np.pi * phase / voice.open_quotient)), 0.0)
    source = np.diff(flow, prepend=0.0) * 20
    source += voice.breathiness * rng.standard_normal(n_samples) * (0.3 + flow)
    return lfilter([1 - voice.tilt], [1, -voice.tilt], source)


def envelope(length: int, ramp: int = 160) -> np.ndarray:
    ramp = min(ramp, length // 2)
    window = np.ones(length)
    if ramp:
        rise = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
        window[:ramp], window[length - ramp:] = rise, rise[::-1]
    return window


FRICATIVE_BANDS = ((4500, 7500), (2300, 4200), (1200, 7000))


def fricative_noise(rng, voice: Voice, phone: int, length: int) -> np.ndarray:
    low, high = (np.array(FRICATIVE_BANDS[phone]) * min(voice.tract_scale, 1.06)).tolist()
    sos = np.array([resonator((low + high) / 2, high - low), [1.0, -1.0, 0, 1.0, -0.5, 0]])
    return sosfilt(sos, rng.standard_normal(length)) * rng.uniform(0.02, 0.08)


def synthesize_speech(rng, voice: Voice, n_samples: int) -> np.ndarray:
    """Clean speech of about ``n_samples`` samples for ``voice`` (float, roughly unit RMS)."""
    segments = plan_segments(rng, voice, n_samples)
    source = glottal_source(rng, voice, sum(length for _, length, _ in segments))
    speech, state, start = np.zeros_like(source), np.zeros((5, 2)), 0
    for kind, length, phone in segments:
        piece = slice(start, start + length)
        if kind == "voiced":
            gain = rng.uniform(0.5, 1.0) * (0.35 if phone in NASALS else 1.0)
            excitation = source[piece] * envelope(length) * gain
            speech[piece], state = sosfilt(phone_filter(voice, phone), excitation, zi=state)
        else:
            silent = np.zeros(length)
            speech[piece], state = sosfilt(phone_filter(voice, 4), silent, zi=state)  # ring-out
            if kind == "fricative":
                speech[piece] += fricative_noise(rng, voice, phone, length) * envelope(length)
        start += length
    speech = speech[:n_samples]
    return speech / (np.sqrt(np.mean(speech ** 2)) + 1e-9)


@dataclass(frozen=True)
class Channel:
    highpass: float
    lowpass: float
    peak: tuple             # (frequency, gain dB)
    reverb: float           # decay time constant (s), 0 = dry
    snr_db: float           # session mean SNR
    level_db: float         # RMS level (dBFS)
    noise_color: float      # 0 white .. 0.95 brown-ish


def make_channel(seed: int, speaker: int, session: int) -> Channel:
    rng = np.random.default_rng([seed, KINDS["session"], speaker, session])
    return Channel(highpass=rng.uniform(40, 300), lowpass=rng.choice([3400, 4500, 6000, 7600]),
                   peak=(rng.uniform(300, 4000), rng.uniform(-8, 8)),
                   reverb=rng.choice([0.0, rng.uniform(0.02, 0.12)]), snr_db=rng.uniform(5, 30),
                   level_db=rng.uniform(-32, -14), noise_color=rng.uniform(0, 0.95))


def peaking_eq(frequency: float, gain_db: float, q: float = 1.0) -> list:
    """RBJ audio-EQ-cookbook peaking biquad as one SOS row."""
    amplitude, omega = 10 ** (gain_db / 40), 2 * np.pi * frequency / SAMPLE_RATE
    alpha = np.sin(omega) / (2 * q)
    b = [1 + alpha * amplitude, -2 * np.cos(omega), 1 - alpha * amplitude]
    a = [1 + alpha / amplitude, -2 * np.cos(omega), 1 - alpha / amplitude]
    return [v / a[0] for v in b + a]


def apply_channel(rng, channel: Channel, speech: np.ndarray) -> np.ndarray:
    """Room, band limits, EQ, noise at the session's SNR (+-3 dB per utterance), level; int16."""
    from scipy.signal import butter
    if channel.reverb:
        tail = np.arange(int(channel.reverb * 4 * SAMPLE_RATE)) / SAMPLE_RATE
        impulse = rng.standard_normal(tail.size) * np.exp(-tail / channel.reverb) * 0.15
        impulse[0] = 1.0
        speech = fftconvolve(speech, impulse)[:speech.size]
    sos = np.vstack([butter(2, channel.highpass, "highpass", fs=SAMPLE_RATE, output="sos"),
                     butter(4, channel.lowpass, "lowpass", fs=SAMPLE_RATE, output="sos"),
                     [peaking_eq(*channel.peak)]])
    speech = sosfilt(sos, speech)
    noise = lfilter([1.0], [1.0, -channel.noise_color], rng.standard_normal(speech.size))
    snr = channel.snr_db + rng.uniform(-3, 3)
    speech_rms, noise_rms = np.sqrt(np.mean(speech ** 2)), np.sqrt(np.mean(noise ** 2))
    mixture = speech + noise * speech_rms / noise_rms * 10 ** (-snr / 20)
    level = 10 ** ((channel.level_db + rng.uniform(-3, 3)) / 20) * 32768
    mixture *= level / np.sqrt(np.mean(mixture ** 2))
    return np.clip(np.round(mixture), -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class UtteranceJob:
    path: str
    seed: int
    speaker: int            # global speaker index (dev speakers first, then test speakers)
    session: int
    utterance: int
    min_seconds: float
    max_seconds: float
    short_fraction: float


def utterance_seconds(rng, job: UtteranceJob) -> float:
    """Most utterances uniform in [min, max] seconds; ``short_fraction`` of them 1-2 s."""
    if rng.random() < job.short_fraction:
        return rng.uniform(1.0, 2.0)
    return rng.uniform(job.min_seconds, job.max_seconds)


def synthesize_utterance(job: UtteranceJob) -> np.ndarray:
    """int16 samples of one utterance; identical for identical jobs."""
    rng = np.random.default_rng([job.seed, job.speaker, job.utterance])
    n_samples = int(utterance_seconds(rng, job) * SAMPLE_RATE)
    speech = synthesize_speech(rng, make_voice(job.seed, job.speaker), n_samples)
    return apply_channel(rng, make_channel(job.seed, job.speaker, job.session), speech)


def write_wav_once(path, render, suffix: str = "") -> str:
    """Write ``render()`` (16 kHz samples) as a PCM-16 wav at ``path`` through a temporary name
    (ending in ``suffix``); a readable wav already there is kept, so a rerun resumes. Returns ``path``."""
    if Path(path).is_file():
        try:
            sf.info(str(path))
            return str(path)
        except RuntimeError:
            pass
    with atomic_path(path, suffix) as tmp:
        sf.write(str(tmp), render(), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return str(path)


def write_utterance(job: UtteranceJob) -> str:
    """Worker: synthesize and write one wav atomically; an existing readable wav is kept."""
    return write_wav_once(job.path, lambda: synthesize_utterance(job), ".wav")


def session_names(seed: int, speaker: int, n_sessions: int) -> list:
    """VoxCeleb-like 11-character session (video) ids, stable per seed and speaker."""
    rng = np.random.default_rng([seed, KINDS["session"], speaker, 10 ** 6])
    return ["".join(rng.choice(SESSION_ALPHABET, 11)) for _ in range(n_sessions)]


def speaker_jobs(root: Path, speaker: int, n_utterances: int, options: dict) -> list:
    """Jobs of one speaker: utterances dealt round-robin to sessions, numbered 00001.. per session."""
    n_sessions = max(2, -(-n_utterances // UTTERANCES_PER_SESSION))
    sessions = session_names(options["seed"], speaker, n_sessions)
    counts, jobs = [0] * n_sessions, []
    for utterance in range(n_utterances):
        session = utterance % n_sessions
        counts[session] += 1
        path = root / f"id{FIRST_SPEAKER_ID + speaker:05d}" / sessions[session] / f"{counts[session]:05d}.wav"
        jobs.append(UtteranceJob(str(path), speaker=speaker, session=session, utterance=utterance,
                                 **options))
    return jobs


def write_trials(test_root: Path, paths: list, seed: int, per_utterance: int = 2) -> Path:
    """Balanced VoxCeleb1-O style trials: per enrolment utterance ``per_utterance`` target and
    ``per_utterance`` non-target test utterances; ``label enroll test`` lines, paths relative."""
    rng = np.random.default_rng([seed, KINDS["trials"]])
    keys = sorted(str(Path(p).relative_to(test_root)) for p in paths)
    speakers = np.array([key.split("/")[0] for key in keys])
    lines = []
    for index, enroll in enumerate(keys):
        same = [k for k in np.flatnonzero(speakers == speakers[index]) if k != index]
        other = np.flatnonzero(speakers != speakers[index])
        for label, pool in ((1, same), (0, other)):
            for pick in rng.choice(pool, size=min(per_utterance, len(pool)), replace=False):
                lines.append(f"{label} {enroll} {keys[pick]}")
    trials = test_root.parent / "veri_test.txt"
    write_text(trials, "\n".join(lines) + "\n")
    return trials


def generate_corpus(save_path, n_speakers=40, n_test_speakers=10, utterances_per_speaker=20,
                    test_utterances_per_speaker=10, seed=0, workers=None, min_seconds=3.0,
                    max_seconds=8.0, short_fraction=0.1) -> dict:
    """Write the synthetic corpus under ``save_path``; returns counts and the trial-list path."""
    check_sizes(n_speakers, n_test_speakers, utterances_per_speaker, test_utterances_per_speaker,
                min_seconds, max_seconds)
    options = dict(seed=seed, min_seconds=min_seconds, max_seconds=max_seconds,
                   short_fraction=short_fraction)
    dev_root = Path(save_path) / "voxceleb1/dev/wav"
    test_root = Path(save_path) / "voxceleb1/test/wav"
    dev_jobs = [job for s in range(n_speakers)
                for job in speaker_jobs(dev_root, s, utterances_per_speaker, options)]
    test_jobs = [job for s in range(n_speakers, n_speakers + n_test_speakers)
                 for job in speaker_jobs(test_root, s, test_utterances_per_speaker, options)]
    run_parallel(dev_jobs + test_jobs, workers)
    trials = write_trials(test_root, [job.path for job in test_jobs], seed)
    return {"dev_utterances": len(dev_jobs), "test_utterances": len(test_jobs),
            "dev_root": dev_root, "test_root": test_root, "trials": trials}


def check_sizes(n_speakers, n_test_speakers, per_speaker, per_test_speaker, min_seconds, max_seconds):
    if n_speakers < 1 or n_test_speakers < 2:
        raise UserInputError(f"need at least 1 training and 2 test speakers (got --n_speakers "
                             f"{n_speakers}, --n_test_speakers {n_test_speakers})")
    if n_speakers + n_test_speakers > AUGMENT_SPEAKER_BASE:
        raise UserInputError(f"at most {AUGMENT_SPEAKER_BASE:,} speakers in all (the voices above are "
                             "kept for the synthetic augmentation set's speech)")
    if per_speaker < 1 or per_test_speaker < 2:
        raise UserInputError("need at least 1 utterance per training speaker and 2 per test speaker")
    if not 0.1 <= min_seconds <= max_seconds:
        raise UserInputError(f"utterance length range {min_seconds}-{max_seconds} s is not valid")


def run_parallel(jobs: list, workers=None, write=write_utterance, desc="synthetic corpus", unit="utt") -> None:
    """``write(job)`` for every job, on ``workers`` processes (default: all cores), with a progress bar."""
    from multiprocessing import Pool

    from tqdm import tqdm
    workers = workers or os.cpu_count() or 1
    bar = dict(total=len(jobs), desc=desc, unit=unit)
    if workers == 1:
        for job in tqdm(jobs, **bar):
            write(job)
        return
    with Pool(workers) as pool:
        chunksize = max(1, len(jobs) // (workers * 16))
        for _ in tqdm(pool.imap_unordered(write, jobs, chunksize), **bar):
            pass
