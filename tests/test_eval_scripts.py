"""EER_full.py, EER_short.py and identification.py run as real commands on a tiny VoxCeleb1 layout."""
import contextlib
import importlib
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import configure
from common.errors import run_main
from evaluation.cli import read_scores
from evaluation.metrics import compute_eer
from model.checkpoint import save_checkpoint
from model.model import background_resnet
from tests.conftest import write_random_features

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Data root with VoxCeleb1 test (4 speakers) + dev (3) + VoxCeleb2 dev features, a checkpoint
    and a VoxCeleb1-O style trial list (CRLF, blank line, no final newline)."""
    base = tmp_path_factory.mktemp("eval")
    data = base / "data"
    test_root = write_random_features(configure.feature_dir(data, "voxceleb1", "test"), 4, 4, (80, 240), seed=1)
    dev_root = write_random_features(base / "dev_tmp", 3, 3, (80, 240), seed=2)
    configure.feature_dir(data, "voxceleb1", "dev").mkdir(parents=True)
    for speaker in sorted(dev_root.iterdir()):
        speaker.rename(configure.feature_dir(data, "voxceleb1", "dev") / speaker.name.replace("id0", "id1"))
    write_random_features(configure.feature_dir(data, "voxceleb2", "dev"), 5, 2, (80, 160), seed=3)
    torch.manual_seed(0)
    save_checkpoint(base / "cp.pth", epoch=1, state_dict=background_resnet(5, channels=4).state_dict(),
                    optimizer={})
    names = sorted(p.relative_to(test_root).with_suffix(".wav").as_posix() for p in test_root.glob("*/*/*.npy"))
    lines = [f"{int(a[:7] == b[:7])} {a} {b}" for a, b in itertools.combinations(names, 2)]
    lines.insert(3, "")
    (base / "trials.txt").write_bytes("\r\n".join(lines).encode())
    return base


def script_flags(setup, flags, out):
    return ["--checkpoint", str(setup / "cp.pth"), "--save_path", str(setup / "data"), "--out_dir",
            str(setup / out), "--use_cuda", "False", *map(str, flags)]


def run(script, setup, *flags, out="out"):
    """The real command in a fresh interpreter."""
    command = [sys.executable, script, *script_flags(setup, flags, out)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def run_here(script, setup, *flags, out="out"):
    """The same entry point (``run_main(main)``) in this process: cheaper than a new
    interpreter, same exit code and output lines."""
    module = importlib.import_module(Path(script).stem)
    argv = script_flags(setup, flags, out)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            run_main(lambda: module.main(argv))
        except SystemExit as exit_:
            code = exit_.code
    return subprocess.CompletedProcess([script, *argv], code, stdout.getvalue(), stderr.getvalue())


def printed(output: str, key: str) -> float:
    return float(re.search(rf"^{re.escape(key)}: (\S+)", output, re.M).group(1))


def test_eer_full_outputs_agree(setup):
    result = run("EER_full.py", setup, "--trials", setup / "trials.txt", "--cp_num", 7,
                 "--score_norm", "asnorm", "--cohort_size", 3)
    assert result.returncode == 0, result.stderr
    out = setup / "out"
    labels, scores = read_scores(out / "scores_full_cp007.txt")
    assert len(labels) == 120 and labels.sum() == 4 * 6
    eer, threshold = compute_eer(labels, scores)
    assert printed(result.stdout, "EER") == pytest.approx(eer, abs=1e-6)
    summary = json.loads((out / "eer_full_cp007.json").read_text())
    assert summary["eer"] == eer and summary["threshold"] == threshold and summary["n_trials"] == 120
    norm_labels, norm_scores = read_scores(out / "scores_full_asnorm_cp007.txt")
    assert printed(result.stdout, "AS-norm EER") == pytest.approx(compute_eer(norm_labels, norm_scores)[0], abs=1e-6)
    assert summary["asnorm"]["cohort_speakers"] == 5
    assert (out / "det_full_cp007.png").read_bytes()[:4] == b"\x89PNG"


def test_eer_short_seeded_and_batch_size_free(setup):
    first = run("EER_short.py", setup, "--test_length", 100, 50, "--pairs_per_speaker", 3, "--seed", 3,
                "--batch_size", 32, out="short1")
    second = run_here("EER_short.py", setup, "--test_length", 100, "--pairs_per_speaker", 3, "--seed", 3,
                 "--batch_size", 5, out="short2")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    lines = [(setup / d / "scores_short_100_cp100.txt").read_text().splitlines() for d in ("short1", "short2")]
    assert [line.split()[2:] for line in lines[0]] == [line.split()[2:] for line in lines[1]]  # same trials
    scores = [read_scores(setup / d / "scores_short_100_cp100.txt")[1] for d in ("short1", "short2")]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-5)
    assert len(scores[0]) == 7 * 6          # VoxCeleb1 dev + test speakers for a vox2 model
    summary = json.loads((setup / "short1" / "eer_short_cp100.json").read_text())
    for length in ("100", "50"):
        labels, values = read_scores(setup / "short1" / f"scores_short_{length}_cp100.txt")
        assert summary["by_test_length"][length]["eer"] == compute_eer(labels, values)[0]
        assert f"| {length} | {summary['by_test_length'][length]['eer']:.4f} |" in first.stdout
    assert (setup / "short1" / "det_short_cp100.png").is_file()


def test_identification_prints_accuracy(setup):
    result = run("identification.py", setup, "--nb_class_test", 3, "--n_shot", 1, "--n_query", 2,
                 "--nb_episode", 4, "--enroll_length", 120, "--test_length", 50, "--data_type", "vox1")
    assert result.returncode == 0, result.stderr
    match = re.search(r"Accuracy_test 1-shot 3-way: (\S+) % \+- (\S+) \(95 % CI, 4 episodes\)", result.stdout)
    summary = json.loads((setup / "out" / "identification_cp100.json").read_text())
    assert float(match.group(1)) == pytest.approx(summary["accuracy"], abs=5e-3)
    assert 0 <= summary["accuracy"] <= 100 and summary["accuracy"] * 4 / (100 / 6) == pytest.approx(
        round(summary["accuracy"] * 4 / (100 / 6)))  # 6 queries per episode: multiples of 100/6 per episode


def expect_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_bad_trial_lists(setup):
    malformed = setup / "malformed.txt"
    malformed.write_bytes(b"1 id00000/session0/00000.wav id00000/session1/00001.wav\r\n\r\nbroken line\r\n")
    expect_error(run("EER_full.py", setup, "--trials", malformed), "malformed.txt, line 3")
    missing = setup / "missing.txt"
    missing.write_bytes(b"1 id00000/session0/00000.wav id09999/x/00001.wav\n0 id09999/x/00002.wav id00001/session0/00000.wav")
    expect_error(run_here("EER_full.py", setup, "--trials", missing), "2 of 4 utterances",
                 "id09999/x/00001.wav, id09999/x/00002.wav")


@pytest.mark.parametrize("bad", ["truncated", "text", "nan", "filters41"])
def test_bad_feature_files(setup, bad):
    data = setup / f"bad_{bad}"
    test_root = write_random_features(configure.feature_dir(data, "voxceleb1", "test"), 2, 2, 100, seed=4)
    target = test_root / "id00001" / "session1" / "00001.npy"
    if bad == "truncated":
        target.write_bytes(target.read_bytes()[:3000])
    elif bad == "text":
        target.write_bytes(b"not numbers at all\n")
    else:
        np.save(target, np.full((100, 40), np.nan, np.float32) if bad == "nan" else np.zeros((100, 41), np.float32))
    trials = data / "trials.txt"
    trials.write_bytes(b"1 id00001/session0/00000.wav id00001/session1/00001.wav\r\n"
                       b"0 id00000/session0/00000.wav id00001/session1/00001.wav")
    flags = ["--save_path", data, "--trials", trials]
    expect_error(run_here("EER_full.py", setup, *flags), str(target))
    if bad in ("nan", "filters41"):     # EER_short reads the same files through its own path
        expect_error(run_here("EER_short.py", setup, "--save_path", data, "--data_type", "vox1",
                         "--pairs_per_speaker", 10, "--test_length", 50), str(target))


def test_missing_checkpoint_and_data(setup, tmp_path):
    result = subprocess.run([sys.executable, "EER_full.py", "--n_folder", "987", "--cp_num", "3",
                             "--save_path", str(setup / "data"), "--trials", str(setup / "trials.txt")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    expect_error(result, "--cp_num 3", "none")
    expect_error(run_here("identification.py", setup, "--save_path", tmp_path), "evaluation features")


@pytest.mark.parametrize("flags, message", [
    (("--cohort_size", 6), "--cohort_size 6 must be between 1 and the cohort's 5 speakers"),
    (("--cohort_size", 0), "--cohort_size must be a positive integer, got 0"),
    (("--cohort_utterances", 0), "--cohort_utterances must be a positive integer, got 0"),
    (("--data_type", "vox1", "--cohort_size", 4), "--cohort_size 4 must be between 1 and the cohort's 3 speakers"),
])
def test_eer_full_checks_cohort_inputs_before_any_embedding(setup, tmp_path, flags, message):
    """Bad AS-norm inputs stop EER_full before the model is loaded or any trial utterance embedded."""
    result = run_here("EER_full.py", setup, "--trials", setup / "trials.txt", "--score_norm", "asnorm", *flags,
                      out=tmp_path.name)
    assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1]
    assert "checkpoint:" not in result.stdout and "embedding" not in result.stderr
    assert not (setup / tmp_path.name).exists()


def test_eer_full_cohort_of_missing_training_features(setup, tmp_path):
    data = tmp_path / "data"
    test_root = configure.feature_dir(setup / "data", "voxceleb1", "test")
    shutil.copytree(test_root, configure.feature_dir(data, "voxceleb1", "test"))
    result = run_here("EER_full.py", setup, "--trials", setup / "trials.txt", "--score_norm", "asnorm",
                      "--save_path", data, out=tmp_path.name)
    assert result.returncode == 2 and "AS-norm cohort: training features of --data_type vox2 not found" \
        in result.stderr.strip().splitlines()[-1]
    assert "checkpoint:" not in result.stdout
