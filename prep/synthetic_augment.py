"""A small synthetic augmentation set in the MUSAN and RIRS_NOISES layouts, so that ``--augment`` runs
without downloads (numpy/scipy only, deterministic per seed, ~4 MB, seconds to write).

- noise: coloured noises (white, pink, brown, blue: power spectral density ~ f^0, f^-1, f^-2, f^+1),
  mains hum with harmonics, and crackle (sparse decaying clicks), each slowly amplitude-modulated;
- music: chords of additive-synthesis notes over a bass line, kick and hi-hat, at 80-140 bpm;
- speech: one synthetic talker per file (prep/synthetic.py's synthesizer, no channel), with voices of
  speaker indices from 1,000,000 on, so never a voice of the corpus's training or test speakers; babble
  is made by the augmentation from several of these files, as from MUSAN's speech;
- simulated RIRs: a direct path after the source distance's delay, early reflections and an exponentially
  decaying noise tail with the room's RT60 (small rooms 0.2-0.45 s, medium rooms 0.4-0.8 s) and a
  direct-to-reverberant ratio; ``rir_design`` gives the designed values of each file.

All files are 16 kHz mono 16-bit wav. Layout under ``save_path``::

    augment/musan/{noise,music,speech}/synthetic/<category>-synthetic-NNNN.wav      (--noise_dir augment/musan)
    augment/RIRS_NOISES/simulated_rirs/{smallroom,mediumroom}/RoomNNN/RoomNNN-NNNNN.wav
                                                           (--rir_dir augment/RIRS_NOISES/simulated_rirs)
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt

from feat_extract.fbank import SAMPLE_RATE
from prep.synthetic import AUGMENT_SPEAKER_BASE, KINDS, make_voice, run_parallel, synthesize_speech, write_wav_once

AUGMENT_FOLDER = "augment"
SOUNDS = {"noise": (6, 5.0), "music": (4, 8.0), "speech": (8, 5.0)}          # files, seconds each
NOISE_KINDS = ("white", "pink", "brown", "blue", "hum", "crackle")
COLOUR_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0, "blue": -1.0}   # PSD ~ f^-exponent
LEVEL_DBFS = -26.0
# room type -> (RT60 s, source distance m, direct-to-reverberant ratio dB) ranges
ROOMS = {"smallroom": ((0.2, 0.45), (1.0, 3.0), (2.0, 8.0)),
         "mediumroom": ((0.4, 0.8), (2.0, 6.0), (-3.0, 4.0))}
ROOMS_PER_TYPE, RIRS_PER_ROOM, RIR_SECONDS = 4, 3, 1.0
SPEED_OF_SOUND = 343.0
DECAY_PER_RT60 = 3 * np.log(10)         # amplitude exp(-k t / RT60) is down 60 dB at t = RT60
CATEGORY_CODES = {"noise": 0, "music": 1, "speech": 2, "smallroom": 3, "mediumroom": 4}


@dataclass(frozen=True)
class AugmentJob:
    path: str
    seed: int
    category: str           # noise, music, speech, or a room type
    index: int              # file number, or room number for RIRs
    rir: int = 0            # RIR number within its room


def job_rng(job: AugmentJob):
    return np.random.default_rng([job.seed, KINDS["augment"], CATEGORY_CODES[job.category], job.index, job.rir])


def to_int16(signal: np.ndarray, level_dbfs: float = LEVEL_DBFS) -> np.ndarray:
    """Scale to ``level_dbfs`` RMS (lower if the peak would pass 0.95 full scale); int16."""
    gain = 10 ** (level_dbfs / 20) / (np.sqrt(np.mean(signal ** 2)) + 1e-12)
    gain = min(gain, 0.95 / (np.max(np.abs(signal)) + 1e-12))
    return np.round(signal * gain * 32767).astype(np.int16)


# ------------------------------------------------------------------------------------------ noise
def coloured_noise(rng, n_samples: int, exponent: float) -> np.ndarray:
    """Gaussian noise whose power spectral density falls as f^-exponent (flat below 20 Hz)."""
    spectrum = np.fft.rfft(rng.standard_normal(n_samples))
    frequencies = np.maximum(np.fft.rfftfreq(n_samples, 1 / SAMPLE_RATE), 20.0)
    return np.fft.irfft(spectrum * frequencies ** (-exponent / 2), n_samples)


def hum(rng, n_samples: int) -> np.ndarray:
    t = np.arange(n_samples) / SAMPLE_RATE
    mains = rng.choice([50.0, 60.0])
    tone = sum(np.sin(2 * np.pi * k * mains * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 16))
    background = coloured_noise(rng, n_samples, 1.0)
    return tone + 0.1 * background / np.std(background)


def crackle(rng, n_samples: int) -> np.ndarray:
    clicks = np.zeros(n_samples)
    times = rng.integers(0, n_samples, rng.poisson(40 * n_samples / SAMPLE_RATE))
    clicks[times] = rng.standard_normal(times.size) * rng.uniform(0.2, 1.0, times.size)
    ring = rng.standard_normal(80) * np.exp(-np.arange(80) / 12)
    return np.convolve(clicks, ring)[:n_samples] + 0.02 * rng.standard_normal(n_samples)


def render_noise(job: AugmentJob, n_samples: int) -> np.ndarray:
    rng = job_rng(job)
    kind = NOISE_KINDS[job.index % len(NOISE_KINDS)]
    if kind in COLOUR_EXPONENTS:
        noise = coloured_noise(rng, n_samples, COLOUR_EXPONENTS[kind])
    else:
        noise = hum(rng, n_samples) if kind == "hum" else crackle(rng, n_samples)
    t = np.arange(n_samples) / SAMPLE_RATE
    return noise * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t + rng.uniform(0, 2 * np.pi)))


# ------------------------------------------------------------------------------------------ music
def note(frequency: float, seconds: float, brightness: float) -> np.ndarray:
    """An additive-synthesis note (5 harmonics falling as 1/k^brightness), 10 ms attack, decaying."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    harmonics = sum(np.sin(2 * np.pi * k * frequency * t) / k ** brightness
                    for k in range(1, 6) if k * frequency < 0.45 * SAMPLE_RATE)
    return harmonics * np.minimum(t / 0.01, 1) * np.exp(-t / (0.4 * seconds))


def midi_hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def drums(rng, beat: float, n_beats: int, n_samples: int) -> np.ndarray:
    """Kick on beats 1 and 3 of each bar, hi-hat on every off-beat."""
    kit, t = np.zeros(n_samples), np.arange(int(0.15 * SAMPLE_RATE)) / SAMPLE_RATE
    kick = np.sin(2 * np.pi * np.cumsum(50 + 70 * np.exp(-t / 0.03)) / SAMPLE_RATE) * np.exp(-t / 0.05)
    hat_sos = butter(2, 6000, "highpass", fs=SAMPLE_RATE, output="sos")
    hat = sosfilt(hat_sos, rng.standard_normal(480)) * np.exp(-np.arange(480) / 100)
    for number in range(n_beats):
        for sound, offset in ((kick, 0.0), (hat * 0.3, 0.5)):
            if sound is kick and number % 2:
                continue
            start = int((number + offset) * beat * SAMPLE_RATE)
            end = min(n_samples, start + sound.size)
            kit[start:end] += sound[:max(0, end - start)]
    return kit


def render_music(job: AugmentJob, n_samples: int) -> np.ndarray:
    rng = job_rng(job)
    beat, root = 60 / rng.uniform(80, 140), 48 + int(rng.integers(12))
    scale = [0, 2, 4, 5, 7, 9, 11] if rng.random() < 0.5 else [0, 2, 3, 5, 7, 8, 10]
    progression = [0] + list(rng.permutation([3, 4, 5]))          # I, then IV / V / vi in some order
    brightness, n_beats = rng.uniform(0.8, 2.0), int(np.ceil(n_samples / SAMPLE_RATE / beat))
    music = np.zeros(n_samples + SAMPLE_RATE)
    for number in range(n_beats):
        degree = progression[(number // 4) % 4]
        chord = [root + 12 * ((degree + step) // 7) + scale[(degree + step) % 7] for step in (0, 2, 4)]
        start = int(number * beat * SAMPLE_RATE)
        for pitch in chord + ([chord[0] - 24] if number % 2 == 0 else []):
            piece = note(midi_hz(pitch), beat * 1.5, brightness)
            music[start:start + piece.size] += piece
    return music[:n_samples] + 2 * drums(rng, beat, n_beats, n_samples)


# ----------------------------------------------------------------------------------------- speech
def render_speech(job: AugmentJob, n_samples: int) -> np.ndarray:
    voice = make_voice(job.seed, AUGMENT_SPEAKER_BASE + job.index)
    return synthesize_speech(job_rng(job), voice, n_samples)


# ------------------------------------------------------------------------------------------- RIRs
@dataclass(frozen=True)
class RirDesign:
    rt60: float             # s, the room's (shared by its RIRs)
    distance: float         # m, source to microphone
    drr_db: float           # direct-to-reverberant energy ratio
    direct_sample: int      # where the direct path (the peak) is


def rir_design(job: AugmentJob) -> RirDesign:
    rt60_range, distance_range, drr_range = ROOMS[job.category]
    room_rng = np.random.default_rng([job.seed, KINDS["augment"], CATEGORY_CODES[job.category], job.index])
    rng = job_rng(job)
    distance = rng.uniform(*distance_range)
    return RirDesign(rt60=room_rng.uniform(*rt60_range), distance=distance, drr_db=rng.uniform(*drr_range),
                     direct_sample=int(round(distance / SPEED_OF_SOUND * SAMPLE_RATE)))


def render_rir(job: AugmentJob, n_samples: int) -> np.ndarray:
    """Direct path of amplitude 1, then early reflections (2-30 ms later) and a Gaussian tail whose
    amplitude decays 60 dB per RT60; the reverberant part is scaled to the designed DRR."""
    design, rng = rir_design(job), job_rng(job)
    length = n_samples - design.direct_sample
    t = np.arange(length) / SAMPLE_RATE
    decay = np.exp(-DECAY_PER_RT60 * t / design.rt60)
    reverberant = rng.standard_normal(length) * decay
    taps = rng.integers(int(0.002 * SAMPLE_RATE), int(0.03 * SAMPLE_RATE), 6)
    reverberant[taps] += rng.choice([-1, 1], 6) * rng.uniform(2, 5, 6) * decay[taps]
    reverberant[0] = 0.0
    reverberant *= np.sqrt(10 ** (-design.drr_db / 10) / np.sum(reverberant ** 2))
    rir = np.zeros(n_samples)
    rir[design.direct_sample] = 1.0
    rir[design.direct_sample:] += reverberant
    return rir


# ------------------------------------------------------------------------------------------ files
RENDER = {"noise": render_noise, "music": render_music, "speech": render_speech}


def render(job: AugmentJob) -> np.ndarray:
    """int16 samples of one file; identical for identical jobs."""
    if job.category in ROOMS:
        rir = render_rir(job, int(RIR_SECONDS * SAMPLE_RATE))
        return np.round(rir * 0.9 * 32767 / np.max(np.abs(rir))).astype(np.int16)
    return to_int16(RENDER[job.category](job, int(SOUNDS[job.category][1] * SAMPLE_RATE)))


def write_augment_file(job: AugmentJob) -> str:
    """Worker: render and write one wav atomically (a hidden ``.tmp`` name, never a partial ``.wav``
    for a noise search to find); an existing readable wav is kept."""
    return write_wav_once(job.path, lambda: render(job))


def augment_jobs(root: Path, seed: int) -> list:
    jobs = [AugmentJob(str(root / "musan" / category / "synthetic" / f"{category}-synthetic-{index:04d}.wav"),
                       seed, category, index)
            for category, (n_files, _) in SOUNDS.items() for index in range(n_files)]
    rirs = root / "RIRS_NOISES" / "simulated_rirs"
    jobs += [AugmentJob(str(rirs / room_type / f"Room{room:03d}" / f"Room{room:03d}-{rir:05d}.wav"),
                        seed, room_type, room, rir)
             for room_type in ROOMS for room in range(1, ROOMS_PER_TYPE + 1)
             for rir in range(1, RIRS_PER_ROOM + 1)]
    return jobs


def generate_augment_set(save_path, seed=0, workers=None) -> dict:
    """Write the synthetic augmentation set under ``save_path/augment``; the folders to pass as
    ``--noise_dir`` and ``--rir_dir`` and the number of files."""
    root = Path(save_path) / AUGMENT_FOLDER
    jobs = augment_jobs(root, seed)
    run_parallel(jobs, workers, write=write_augment_file, desc="synthetic augmentation set", unit="file")
    return {"noise_dir": root / "musan", "rir_dir": root / "RIRS_NOISES" / "simulated_rirs",
            "files": len(jobs)}
