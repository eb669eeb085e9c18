"""The synthetic augmentation set (dataprep.py --synthetic_augment): layout, format, determinism, and
sounds that are what they claim: noise colours by their spectral slope, RIRs by their measured
RT60, direct-to-reverberant ratio and peak position."""
import contextlib
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

import dataprep
from common.errors import UserInputError
from prep import synthetic, synthetic_augment as sa

RATE = 16000


def digests(root) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def augment_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment_set")
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        dataprep.main(["--save_path", str(root), "--synthetic_augment", "--seed", "3", "--workers", "2"])
    assert printed.getvalue() == (f"synthetic augmentation set: 42 files; --noise_dir {root}/augment/musan "
                                  f"--rir_dir {root}/augment/RIRS_NOISES/simulated_rirs\n")
    return root


def read(path) -> np.ndarray:
    samples, rate = sf.read(str(path), dtype="int16")
    assert rate == RATE
    return samples.astype(float)


def test_layout_format_and_durations(augment_set):
    files = sorted(p.relative_to(augment_set).as_posix() for p in augment_set.rglob("*") if p.is_file())
    sounds = [f"augment/musan/{c}/synthetic/{c}-synthetic-{i:04d}.wav" for c, n in
              (("music", 4), ("noise", 6), ("speech", 8)) for i in range(n)]
    rirs = [f"augment/RIRS_NOISES/simulated_rirs/{room}/Room{r:03d}/Room{r:03d}-{k:05d}.wav"
            for room in ("mediumroom", "smallroom") for r in (1, 2, 3, 4) for k in (1, 2, 3)]
    assert files == sorted(rirs + sounds)
    seconds = {"noise": 5.0, "music": 8.0, "speech": 5.0, "simulated_rirs": 1.0}
    for name in files:
        info = sf.info(str(augment_set / name))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (RATE, 1, "PCM_16", "WAV")
        assert info.frames == RATE * next(s for key, s in seconds.items() if f"/{key}/" in name)
    assert sum((augment_set / name).stat().st_size for name in files) < 5_000_000


def test_same_seed_same_bytes_serial_or_parallel_other_seed_differs(augment_set, tmp_path):
    sa.generate_augment_set(tmp_path / "again", seed=3, workers=1)
    assert digests(tmp_path / "again") == digests(augment_set)
    sa.generate_augment_set(tmp_path / "other", seed=4, workers=2)
    other, ours = digests(tmp_path / "other"), digests(augment_set)
    assert other.keys() == ours.keys() and all(other[name] != ours[name] for name in ours)


def test_rirs_decay_as_designed(augment_set):
    for job in sa.augment_jobs(augment_set / "augment", seed=3):
        if job.category not in sa.ROOMS:
            continue
        design, rir = sa.rir_design(job), read(job.path)
        rt60_range, distance_range, drr_range = sa.ROOMS[job.category]
        assert rt60_range[0] <= design.rt60 <= rt60_range[1] and drr_range[0] <= design.drr_db <= drr_range[1]
        assert np.argmax(np.abs(rir)) == design.direct_sample == round(design.distance / 343 * RATE)
        assert design.direct_sample < 0.02 * RATE and not rir[:design.direct_sample].any()
        # Schroeder backward integration, line fitted from -5 to -35 dB (T30), extrapolated to -60 dB
        energy = np.cumsum(rir[::-1] ** 2)[::-1]
        decay_db = 10 * np.log10(np.maximum(energy, 1e-9) / energy[0])
        fitted = np.flatnonzero((decay_db <= -5) & (decay_db >= -35))
        slope = np.polyfit(fitted / RATE, decay_db[fitted], 1)[0]
        assert -60 / slope == pytest.approx(design.rt60, rel=0.08)
        direct = rir[design.direct_sample] ** 2
        assert 10 * np.log10(direct / (np.sum(rir ** 2) - direct)) == pytest.approx(design.drr_db, abs=0.05)


def test_rooms_share_rt60_and_rirs_differ(augment_set):
    jobs = [job for job in sa.augment_jobs(augment_set / "augment", seed=3) if job.category == "smallroom"]
    room_one = [job for job in jobs if job.index == 1]
    assert len({sa.rir_design(job).rt60 for job in room_one}) == 1
    assert len({sa.rir_design(job).rt60 for job in jobs}) == sa.ROOMS_PER_TYPE
    assert len({read(job.path).tobytes() for job in jobs}) == len(jobs)


def log_log_slope(samples: np.ndarray) -> float:
    frequencies, power = welch(samples, RATE, nperseg=4096)
    band = (frequencies >= 100) & (frequencies <= 4000)
    return np.polyfit(np.log10(frequencies[band]), np.log10(power[band]), 1)[0]


def flatness(samples: np.ndarray) -> float:
    power = welch(samples, RATE, nperseg=4096)[1][1:] + 1e-12
    return np.exp(np.mean(np.log(power))) / np.mean(power)


def test_sounds_are_what_they_claim(augment_set):
    musan = augment_set / "augment/musan"
    noises = [read(musan / f"noise/synthetic/noise-synthetic-{i:04d}.wav") for i in range(6)]
    for samples, colour in zip(noises, sa.NOISE_KINDS):
        if colour in sa.COLOUR_EXPONENTS:                 # white 0, pink -1, brown -2, blue +1 (PSD log-log)
            assert log_log_slope(samples) == pytest.approx(-sa.COLOUR_EXPONENTS[colour], abs=0.1)
    hum = noises[sa.NOISE_KINDS.index("hum")]
    frequencies, power = welch(hum, RATE, nperseg=RATE)
    assert frequencies[np.argmax(power)] in (50.0, 60.0)
    white = flatness(noises[0])
    assert white > 0.9
    for i in range(4):                                    # music is tonal: far from flat
        assert flatness(read(musan / f"music/synthetic/music-synthetic-{i:04d}.wav")) < 0.01 * white
    for i in range(8):                                    # speech has pauses and syllables, noise not
        frames = read(musan / f"speech/synthetic/speech-synthetic-{i:04d}.wav").reshape(-1, 320)
        energy_db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1)
        assert np.mean(energy_db < np.median(energy_db) - 20) > 0.03
    frames = noises[1].reshape(-1, 320)
    energy_db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1)
    assert np.mean(energy_db < np.median(energy_db) - 20) == 0
    levels = [20 * np.log10(np.sqrt(np.mean(s ** 2)) / 32767) for s in noises[:4]]
    assert levels == pytest.approx([sa.LEVEL_DBFS] * 4, abs=0.01)


def test_speech_voices_are_not_corpus_speakers():
    voices = {sa.make_voice(0, synthetic.AUGMENT_SPEAKER_BASE + i).f0 for i in range(sa.SOUNDS["speech"][0])}
    corpus = {synthetic.make_voice(0, speaker).f0 for speaker in range(60)}
    assert len(voices) == sa.SOUNDS["speech"][0] and not voices & corpus
    with pytest.raises(UserInputError, match="at most 1,000,000 speakers in all"):
        synthetic.generate_corpus("/nonexistent", n_speakers=999_999, n_test_speakers=2)
