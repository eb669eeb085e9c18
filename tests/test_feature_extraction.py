"""The corpus feature-extraction command: reference features, float16, bad-file report, --strict,
Kaldi lists, and a SIGKILL mid-run followed by a resume that redoes nothing."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.errors import UserInputError
from feat_extract import feature_extraction as fe
from feat_extract.fbank import log_mel_fbank

ROOT = Path(__file__).resolve().parents[1]
TEST_WAV = "voxceleb1/test/wav"
TEST_FEAT = "voxceleb1/test/feat/test_logfbank_nfilt40"


def place_golden(reference, save_path, key="id10270/abcdefghijk/00001"):
    target = Path(save_path) / TEST_WAV / f"{key}.wav"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(reference / "golden.wav", target)
    return Path(save_path) / TEST_FEAT / f"{key}.npy"


def test_golden_through_command_matches_reference(reference, tmp_path):
    npy = place_golden(reference, tmp_path)
    summary = fe.main(["--save_path", str(tmp_path), "--workers", "1"])
    assert (summary.extracted, summary.skipped, summary.failed) == (1, 0, [])
    features = np.load(npy)
    assert features.dtype == np.float32 and features.shape == (369, 40)
    np.testing.assert_allclose(features, np.load(reference / "feat.npy"), atol=1e-4)
    report = (tmp_path / TEST_FEAT / fe.REPORT_NAME).read_text()
    assert report.startswith("# feature extraction: 1 extracted, 0 already done, 0 bad, 0 converted")


def test_digital_silence_gets_the_papers_features_not_a_rescaled_floor(reference, tmp_path):
    """A recording that starts with exact zeros (as AAC decoders' priming samples leave in converted
    VoxCeleb2 audio): the silent frames sit on the paper's floor of int16 input, so the stored features
    equal ``log_mel_fbank`` of the int16 samples, the original's computation. Scaling the already
    int16-scale samples a second time (x 32768, as extraction once did) moves every other frame 90.3 dB
    away from that floor, so every value changes once the mean is removed."""
    golden, rate = sf.read(reference / "golden.wav", dtype="int16")
    samples = np.concatenate([np.zeros(3 * 2112, np.int16), golden])   # 6,336 zeros at the start
    key = "id10270/abcdefghijk/00002"
    (tmp_path / TEST_WAV / "id10270/abcdefghijk").mkdir(parents=True)
    sf.write(tmp_path / TEST_WAV / f"{key}.wav", samples, rate, subtype="PCM_16")
    fe.main(["--save_path", str(tmp_path), "--workers", "1"])
    stored = np.load(tmp_path / TEST_FEAT / f"{key}.npy")
    papers = log_mel_fbank(samples)                     # int16 input, as the original reads wavs
    np.testing.assert_allclose(stored, papers, atol=1e-4)
    silent = papers[:38]                                # frames 0..37 lie wholly inside the zeros
    assert np.all(silent == silent[0]) and silent.mean() < -20
    twice_scaled = log_mel_fbank(samples.astype(np.float64))   # float input taken as [-1, 1]: x 32768
    assert np.abs(twice_scaled - papers).max() > 50


def test_float16_halves_the_bytes(reference, tmp_path):
    npy32 = place_golden(reference, tmp_path / "a")
    npy16 = place_golden(reference, tmp_path / "b")
    fe.extract_corpus(tmp_path / "a", workers=1)
    fe.extract_corpus(tmp_path / "b", workers=1, feat_dtype="float16")
    half = np.load(npy16)
    assert half.dtype == np.float16
    assert half.nbytes * 2 == np.load(npy32).nbytes == 369 * 40 * 4
    assert os.path.getsize(npy16) < 0.51 * os.path.getsize(npy32) + 128
    np.testing.assert_allclose(half, np.load(reference / "feat.npy"), atol=0.05)


def write_bad_corpus(root, reference):
    """A test split holding one good file, two convertible ones and every kind of bad audio."""
    wav_root = Path(root) / TEST_WAV / "id10001" / "sessionaaaa"
    wav_root.mkdir(parents=True)
    shutil.copy(reference / "golden.wav", wav_root / "good.wav")
    golden, _ = sf.read(reference / "golden.wav", dtype="int16")
    tone = 0.3 * np.sin(2 * np.pi * 200 * np.arange(8000) / 8000)
    sf.write(wav_root / "rate8k.wav", tone, 8000)
    sf.write(wav_root / "stereo.wav", np.stack([golden, golden], axis=1), 16000)
    sf.write(wav_root / "float32.wav", golden / 32768.0, 16000, subtype="FLOAT")
    (wav_root / "empty.wav").write_bytes(b"")
    (wav_root / "text.wav").write_bytes(b"not audio at all\n" * 50)
    (wav_root / "truncated.wav").write_bytes((reference / "golden.wav").read_bytes()[:30])
    sf.write(wav_root / "silent.wav", np.zeros(16000, dtype=np.int16), 16000)
    sf.write(wav_root / "short.wav", golden[:300], 16000)
    return wav_root


BAD = {"empty.wav": "empty file", "text.wav": "cannot read audio", "truncated.wav": "cannot read audio",
       "silent.wav": "silent audio", "short.wav": "too short"}


def test_bad_files_reported_and_skipped(reference, tmp_path):
    wav_root = write_bad_corpus(tmp_path, reference)
    summary = fe.extract_corpus(tmp_path, workers=2)
    assert summary.extracted == 4 and summary.skipped == 0
    assert sorted(Path(a).name for a, _ in summary.failed) == sorted(BAD)
    lines = (tmp_path / TEST_FEAT / fe.REPORT_NAME).read_text().splitlines()
    assert lines[0] == "# feature extraction: 4 extracted, 0 already done, 5 bad, 2 converted"
    rows = {Path(line.split("\t")[1]).name: line.split("\t") for line in lines[2:]}
    for name, reason in BAD.items():
        assert rows[name][0] == "bad" and reason in rows[name][2]
    assert rows["rate8k.wav"][:1] + rows["rate8k.wav"][2:] == ["converted", "resampled 8000 Hz to 16000 Hz"]
    assert rows["stereo.wav"][2] == "mixed 2 channels to mono"
    feat_root = tmp_path / TEST_FEAT / "id10001" / "sessionaaaa"
    assert sorted(p.name for p in feat_root.glob("*.npy")) == [
        "float32.npy", "good.npy", "rate8k.npy", "stereo.npy"]
    good = np.load(feat_root / "good.npy")
    np.testing.assert_allclose(np.load(feat_root / "stereo.npy"), good, atol=1e-4)
    np.testing.assert_allclose(np.load(feat_root / "float32.npy"), good, atol=1e-4)
    assert wav_root.is_dir()


def test_strict_stops_with_one_error_line(reference, tmp_path):
    write_bad_corpus(tmp_path, reference)
    result = subprocess.run([sys.executable, "feat_extract/feature_extraction.py", "--save_path",
                             str(tmp_path), "--workers", "1", "--strict"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stopped by --strict" in errors[0]
    assert any(name in errors[0] for name in BAD)


def test_kaldi_lists(reference, tmp_path):
    shutil.copy(reference / "golden.wav", tmp_path / "g.wav")
    (tmp_path / "wav.scp").write_text(f"utt1 g.wav\r\n\r\nutt2 {tmp_path / 'g.wav'}")
    (tmp_path / "utt2spk").write_text("utt1 spkA\nutt2 spkB\n")
    fe.main(["--wav_scp", str(tmp_path / "wav.scp"), "--utt2spk", str(tmp_path / "utt2spk"),
             "--out_dir", str(tmp_path / "feat"), "--workers", "1"])
    for speaker, utt in (("spkA", "utt1"), ("spkB", "utt2")):
        np.testing.assert_allclose(np.load(tmp_path / "feat" / speaker / "kaldi" / f"{utt}.npy"),
                                   np.load(reference / "feat.npy"), atol=1e-4)
    (tmp_path / "wav.scp").write_text("utt1 sox g.wav -t wav - |\n")
    with pytest.raises(UserInputError, match="piped command"):
        fe.kaldi_jobs(tmp_path / "wav.scp", tmp_path / "utt2spk", tmp_path / "feat")
    (tmp_path / "utt2spk").write_text("utt1 ../escape\n")
    (tmp_path / "wav.scp").write_text("utt1 g.wav\n")
    with pytest.raises(UserInputError, match="cannot be used as a file or folder name"):
        fe.kaldi_jobs(tmp_path / "wav.scp", tmp_path / "utt2spk", tmp_path / "feat")


def test_no_wav_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserInputError, match="no wav folder"):
        fe.extract_corpus(tmp_path)


def write_tiny_corpus(root, n_files=400, seconds=1.0):
    rng = np.random.default_rng(0)
    for index in range(n_files):
        path = Path(root) / TEST_WAV / f"id{index % 8:05d}" / "sessionaaaa" / f"{index:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (rng.standard_normal(int(16000 * seconds)) * 3000).astype(np.int16), 16000)


def feature_files(root):
    """Finished feature files (a killed worker's hidden ``.<name>.*.tmp.npy`` does not count)."""
    return sorted(p for p in (Path(root) / TEST_FEAT).rglob("*.npy") if not p.name.startswith("."))


def test_sigkill_mid_run_then_resume(tmp_path):
    write_tiny_corpus(tmp_path)
    process = subprocess.Popen([sys.executable, "feat_extract/feature_extraction.py", "--save_path",
                                str(tmp_path), "--workers", "2"], cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(feature_files(tmp_path)) < 40 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)           # the command and its pool workers
    process.wait()
    done_before = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in feature_files(tmp_path)}
    assert 40 <= len(done_before) < 400, "the kill must land mid-run"
    for path in done_before:                          # every .npy present is whole
        assert np.load(path).shape == (99, 40)
    summary = fe.extract_corpus(tmp_path, workers=2)
    assert summary.skipped == len(done_before) and summary.extracted == 400 - len(done_before)
    after = feature_files(tmp_path)
    assert len(after) == 400
    assert all((p.stat().st_ino, p.stat().st_mtime_ns) == done_before[p] for p in done_before)
    assert not [p for p in (tmp_path / TEST_FEAT).rglob("*") if ".tmp" in p.name]


def test_torn_file_is_redone(tmp_path):
    write_tiny_corpus(tmp_path, n_files=2)
    fe.extract_corpus(tmp_path, workers=1)
    first = feature_files(tmp_path)[0]
    first.write_bytes(first.read_bytes()[:200])       # as a non-atomic writer killed mid-file leaves it
    summary = fe.extract_corpus(tmp_path, workers=1)
    assert (summary.extracted, summary.skipped) == (1, 1) and np.load(first).shape == (99, 40)
