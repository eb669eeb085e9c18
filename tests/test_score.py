"""score.py on a trained demo model: wav trial lists score exactly like EER_full's features,
embeddings from embed.py (Kaldi ark) score the same, calibration lowers held-out Cllr without moving the
EER, verify.py uses it; hand-computed actDCF / Cllr / minCllr; bad input."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import configure
import score as score_cmd
from evaluation.cli import read_scores
from evaluation.llr_metrics import actual_dcf, cllr, min_cllr
from evaluation.metrics import compute_eer
from evaluation.score_norm import as_norm
from tests.conftest import ROOT
from speaker_api import SpeakerEncoder
from tests.test_api import as_int16, run_in_process, tiny_checkpoint, voice_like

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def run(*args, check=True):
    completed = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                               text=True, timeout=600)
    if check:
        assert completed.returncode == 0, completed.stderr[-2000:]
    return completed


def metric(text, name):
    return float(re.search(rf"^{re.escape(name)}: ([\d.]+)", text, re.M).group(1))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's chain at toy size: synthetic corpus -> features -> prototypical + GC training."""
    data = tmp_path_factory.mktemp("score") / "data"
    run("dataprep.py", "--synthetic", "--save_path", data, "--n_speakers", 8, "--n_test_speakers", 6,
        "--utterances_per_speaker", 6, "--test_utterances_per_speaker", 6, "--min_seconds", 1,
        "--max_seconds", 2, "--workers", 1)
    run("feat_extract/feature_extraction.py", "--save_path", data, "--workers", 1)
    run("train.py", "--loss_type", "prototypical", "--use_GC", "True", "--nb_class_train", 4, "--n_query", 2,
        "--data_type", "vox1", "--save_path", data, "--model_dir", data / "models", "--channels", 4,
        "--n_episode", 8, "--max_epoch", 3, "--workers", 0)
    return data, data / "models" / "baseline_000" / "checkpoint_003.pth"


def test_wav_trial_list_scores_exactly_like_eer_full_features(demo, tmp_path):
    data, checkpoint = demo
    trials = data / "voxceleb1" / "test" / "veri_test.txt"
    run("EER_full.py", "--checkpoint", checkpoint, "--save_path", data, "--data_type", "vox1",
        "--trials", trials, "--out_dir", tmp_path / "eer")
    printed = run("score.py", "--checkpoint", checkpoint, "--trials", trials, "--audio_root",
                  data / "voxceleb1" / "test" / "wav", "--save_path", tmp_path / "no_features",
                  "--out_dir", tmp_path / "score").stdout
    assert (tmp_path / "score" / "scores.txt").read_text() == (tmp_path / "eer" / "scores_full_cp003.txt").read_text()
    labels, scores = read_scores(tmp_path / "score" / "scores.txt")
    assert metric(printed, "EER") == pytest.approx(compute_eer(labels, scores)[0], abs=1e-6)
    assert metric(printed, "(scores as LLRs) Cllr") == pytest.approx(cllr(labels, scores), abs=1e-6)
    assert (tmp_path / "score" / "det.png").read_bytes()[:4] == b"\x89PNG"
    # the same list through embed.py's Kaldi ark (keys = relative paths without suffix)
    run("embed.py", "--checkpoint", checkpoint, "--out", tmp_path / "emb", "--out_format", "ark",
        data / "voxceleb1" / "test" / "wav")
    run("score.py", "--trials", trials, "--embeddings", tmp_path / "emb" / "embeddings.scp",
        "--out_dir", tmp_path / "from_ark", "--save_path", tmp_path / "no_features")
    _, from_ark = read_scores(tmp_path / "from_ark" / "scores.txt")
    np.testing.assert_allclose(from_ark, scores, rtol=0, atol=1e-5)


def split_trials(trials, folder):
    """Development list: the odd-numbered trials; held-out: the even-numbered ones (no trial in both)."""
    lines = [line for line in trials.read_text().splitlines() if line.strip()]
    (folder / "dev.txt").write_text("\n".join(lines[0::2]) + "\n")
    (folder / "held_out.txt").write_text("\n".join(lines[1::2]) + "\n")
    return folder / "dev.txt", folder / "held_out.txt"


def test_calibration_lowers_held_out_cllr_and_keeps_eer_then_verify_uses_it(demo, tmp_path):
    data, checkpoint = demo
    dev, held_out = split_trials(data / "voxceleb1" / "test" / "veri_test.txt", tmp_path)
    common = ["--checkpoint", checkpoint, "--save_path", data]      # VoxCeleb keys -> stored features
    calibration = checkpoint.with_name("checkpoint_003.calibration.json")
    fitted = run("score.py", *common, "--trials", dev, "--calibrate_out", calibration, "--out_dir", tmp_path / "dev").stdout
    assert re.search(r"^Cllr: [\d.]+ before calibration, [\d.]+ after$", fitted, re.M)
    raw = run("score.py", *common, "--trials", held_out, "--out_dir", tmp_path / "raw").stdout
    calibrated = run("score.py", *common, "--trials", held_out, "--calibration", calibration,
                     "--out_dir", tmp_path / "cal").stdout
    before, after = metric(calibrated, "(scores as LLRs) Cllr"), metric(calibrated, "calibrated Cllr")
    assert before == metric(raw, "(scores as LLRs) Cllr") and after < before - 0.05, (before, after)
    assert metric(calibrated, "EER") == metric(raw, "EER")         # an increasing map keeps every ranking
    rows = [line.split() for line in (tmp_path / "cal" / "scores.txt").read_text().splitlines()]
    saved = json.loads(calibration.read_text())
    llrs = np.array([float(r[2]) for r in rows])
    np.testing.assert_allclose(llrs, saved["slope"] * np.array([float(r[1]) for r in rows]) + saved["offset"])
    labels = np.array([int(r[0]) for r in rows])
    assert metric(calibrated, "calibrated Cllr") == pytest.approx(cllr(labels, llrs), abs=1e-6)
    # verify.py finds <checkpoint>.calibration.json by default and decides at the Bayes threshold
    label, score, llr, enroll, test = rows[0]
    wav = data / "voxceleb1" / "test" / "wav"
    printed = run("verify.py", "--checkpoint", checkpoint, "--p_target", 0.01, wav / enroll, wav / test).stdout
    lines = printed.splitlines()
    assert lines[1] == f"llr: {float(llr):.6f} (calibration {calibration})"
    assert lines[2] == f"threshold: llr {np.log(99):.6f} (Bayes decision at p_target 0.01)"
    assert lines[3].startswith("decision: ACCEPT" if float(llr) >= np.log(99) else "decision: REJECT")


def test_hand_computed_actdcf_cllr_min_cllr():
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    llrs = np.array([3.0, 0.5, -1.0, -2.0, 0.2, -4.0, 1.0])
    # p = 0.5: threshold 0; misses {-1.0} -> 1/3; false alarms {0.2, 1.0} -> 2/4; (0.5/3 + 0.25) / 0.5
    assert actual_dcf(labels, llrs, 0.5) == pytest.approx(5 / 6)
    # p = 0.1: threshold ln 9 = 2.197; misses 2/3, false alarms 0; (0.1 * 2/3) / 0.1
    assert actual_dcf(labels, llrs, 0.1) == pytest.approx(2 / 3)
    expected = (np.mean(np.log2(1 + np.exp(-llrs[:3]))) + np.mean(np.log2(1 + np.exp(llrs[3:])))) / 2
    assert cllr(labels, llrs) == pytest.approx(expected) and cllr(labels, llrs) == pytest.approx(0.8483731868502693)
    # PAV on scores sorted [-4 n, -2 n, -1 t, 0.2 n, 0.5 t, 1.0 n, 3.0 t]: posteriors 0, 0, 1/2, 1/2, 1/2, 1/2, 1;
    # prior 3/7 -> LLR of 1/2 is ln(4/3); Cllr = ((2 log2(1 + 3/4)) / 3 + (2 log2(1 + 4/3)) / 4) / 2
    assert min_cllr(labels, llrs) == pytest.approx((2 * np.log2(7 / 4) / 3 + 2 * np.log2(7 / 3) / 4) / 2)
    assert cllr(labels, np.zeros(7)) == pytest.approx(1.0)


def test_audio_trials_score_the_api_cosines_for_every_model(tmp_path, capsys, keep_save_path, model_name):
    """score.py on a tiny checkpoint of each registered model: each score is the API's cosine."""
    tiny_checkpoint(tmp_path / "cp.pth", name=model_name)
    for index, (seconds, pitch) in enumerate([(1.1, 120.0), (0.9, 125.0), (1.4, 260.0)]):
        sf.write(tmp_path / f"r{index}.wav", as_int16(voice_like(seconds, pitch=pitch, seed=index)), 16000)
    trials = [("1", "r0.wav", "r1.wav"), ("0", "r0.wav", "r2.wav"), ("0", "r1.wav", "r2.wav")]
    (tmp_path / "trials.txt").write_text("".join(" ".join(t) + "\n" for t in trials))
    result = run_in_process(score_cmd.main, capsys, "--checkpoint", tmp_path / "cp.pth", "--trials",
                            tmp_path / "trials.txt", "--audio_root", tmp_path, "--out_dir", tmp_path / "out",
                            "--save_path", tmp_path)
    assert result.returncode == 0, result.stderr
    encoder = SpeakerEncoder.from_checkpoint(tmp_path / "cp.pth", device="cpu")
    expected = [encoder.score(tmp_path / e, tmp_path / t) for _, e, t in trials]
    labels, scores = read_scores(tmp_path / "out" / "scores.txt")
    assert labels.tolist() == [1, 0, 0]
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)


@pytest.fixture
def keep_save_path(monkeypatch):
    monkeypatch.setattr(configure, "save_path", configure.save_path)   # main() sets it module-wide


def test_asnorm_with_an_embedding_cohort_equals_the_formula(tmp_path, capsys, keep_save_path):
    rng = np.random.default_rng(0)
    vectors = {f"spk{i}/u{j}": rng.standard_normal(8).astype(np.float32) for i in range(3) for j in range(2)}
    cohort = rng.standard_normal((5, 8)).astype(np.float32)
    np.save(tmp_path / "embeddings.npy", np.stack(list(vectors.values())))
    (tmp_path / "keys.txt").write_text("\n".join(vectors) + "\n")
    (tmp_path / "cohort").mkdir()
    np.save(tmp_path / "cohort" / "embeddings.npy", cohort)
    (tmp_path / "cohort" / "keys.txt").write_text("\n".join(f"c{i}" for i in range(5)) + "\n")
    trials = [("1", "spk0/u0.wav", "spk0/u1.wav"), ("0", "spk0/u0.wav", "spk1/u0.wav"), ("0", "spk2/u1", "spk1/u1")]
    (tmp_path / "trials.txt").write_text("".join(" ".join(t) + "\n" for t in trials))
    result = run_in_process(score_cmd.main, capsys, "--trials", tmp_path / "trials.txt", "--embeddings",
                            tmp_path / "embeddings.npy", "--score_norm", "asnorm", "--cohort",
                            tmp_path / "cohort" / "embeddings.npy", "--cohort_size", 2,
                            "--out_dir", tmp_path / "out", "--save_path", tmp_path)
    assert result.returncode == 0, result.stderr
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    stats = {}
    for key, vector in vectors.items():
        top = np.sort([unit(vector.astype(np.float64)) @ unit(c.astype(np.float64)) for c in cohort])[-2:]
        stats[key] = (top.mean(), top.std())
    expected = []
    for _, e, t in trials:
        e, t = e.replace(".wav", ""), t.replace(".wav", "")
        raw = float(unit(vectors[e]) @ unit(vectors[t]))
        expected.append(as_norm([raw], stats[e], stats[t])[0])
    scores = [float(line.split()[1]) for line in (tmp_path / "out" / "scores.txt").read_text().splitlines()]
    np.testing.assert_allclose(scores, expected, atol=1e-6)


BAD_INPUTS = {
    "malformed line": (["--trials", "{t}/bad.txt"], "{t}/bad.txt, line 2: expected 'label enroll test'"),
    "entries found nowhere": (["--trials", "{t}/missing.txt"], "2 of 2 trial-list entries were found nowhere"),
    "corrupt calibration": (["--trials", "{t}/ok.txt", "--calibration", "{t}/cal.json"],
                            "{t}/cal.json: not a calibration file written by score.py --calibrate_out"),
    "bad embeddings": (["--trials", "{t}/ok.txt", "--embeddings", "{t}/cal.json"],
                       "{t}/cal.json: embeddings must be a folder written by embed.py"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_error_line_and_nothing_written(tmp_path, case, capsys, keep_save_path):
    (tmp_path / "bad.txt").write_text("1 a.wav b.wav\n2 a.wav b.wav\n")
    (tmp_path / "missing.txt").write_text("1 nowhere/a.wav nowhere/b.wav\n0 nowhere/b.wav nowhere/a.wav\n")
    np.save(tmp_path / "embeddings.npy", np.ones((2, 4), np.float32))
    (tmp_path / "keys.txt").write_text("a\nb\n")
    (tmp_path / "ok.txt").write_text("1 a b\n0 b a\n")
    (tmp_path / "cal.json").write_text('{"slope": -1, "offset": 0}')
    flags, message = BAD_INPUTS[case]
    flags = [flag.format(t=tmp_path) for flag in flags]
    if "--embeddings" not in flags:
        flags += ["--embeddings", str(tmp_path / "embeddings.npy")] if case != "entries found nowhere" else []
    completed = run_in_process(score_cmd.main, capsys, *flags, "--out_dir", tmp_path / "out", "--save_path", tmp_path)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [completed.stderr.strip().splitlines()[-1]]
    assert completed.stderr.startswith("error: " + message.format(t=tmp_path)), completed.stderr
    assert not (tmp_path / "out").exists()
