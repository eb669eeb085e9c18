"""The whole chain with the real commands, as a user runs it: synthetic corpus -> features -> train.py
(both loss types, save, resume) -> EER_full.py, EER_short.py, identification.py."""
import json
import os
import re
import subprocess
import sys

import pytest

from evaluation.cli import read_scores
from evaluation.metrics import compute_eer
from tests.conftest import ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def run(*args) -> str:
    completed = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=ENV,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e") / "data"
    run("dataprep.py", "--synthetic", "--save_path", root, "--n_speakers", 6, "--n_test_speakers", 4,
        "--utterances_per_speaker", 4, "--test_utterances_per_speaker", 4, "--min_seconds", 1,
        "--max_seconds", 2, "--workers", 1)
    run("feat_extract/feature_extraction.py", "--save_path", root, "--workers", 1)
    return root


def train(data, models, loss_type, max_epoch, *extra):
    return run("train.py", "--loss_type", loss_type, "--nb_class_train", 3, "--data_type", "vox1",
               "--save_path", data, "--model_dir", models, "--channels", 4, "--n_episode", 2,
               "--max_epoch", max_epoch, "--workers", 0, *extra)


@pytest.mark.parametrize("loss_type", ["softmax", "prototypical"])
def test_train_resume_and_evaluate(data, tmp_path, loss_type):
    models = tmp_path / "models"
    train(data, models, loss_type, 1)
    train(data, models, loss_type, 2, "--use_checkpoint", "True", "--cp_num", 1)
    log = (models / "baseline_000" / "train_log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["1", "2"]
    checkpoint = models / "baseline_000" / "checkpoint_002.pth"
    common = ["--checkpoint", checkpoint, "--save_path", data, "--data_type", "vox1"]

    printed = run("EER_full.py", *common, "--trials", data / "voxceleb1/test/veri_test.txt")
    eer = float(re.search(r"^EER: ([\d.]+) %$", printed, re.M).group(1))
    labels, scores = read_scores(models / "baseline_000" / "scores_full_cp002.txt")
    assert len(labels) == json.loads((models / "baseline_000" / "eer_full_cp002.json").read_text())["n_trials"]
    assert abs(eer - compute_eer(labels, scores)[0]) < 1e-6

    printed = run("EER_short.py", *common, "--test_length", 100, "--pairs_per_speaker", 5)
    eer = float(re.search(r"^EER: ([\d.]+) %$", printed, re.M).group(1))
    labels, scores = read_scores(models / "baseline_000" / "scores_short_100_cp002.txt")
    assert len(labels) == 4 * 2 * 5 and abs(eer - compute_eer(labels, scores)[0]) < 1e-6

    printed = run("identification.py", *common, "--nb_class_test", 4, "--nb_episode", 5,
                  "--n_query", 2, "--enroll_length", 200)
    accuracy, interval = map(float, re.search(r"4-way: ([\d.]+) % \+- ([\d.]+)", printed).groups())
    saved = json.loads((models / "baseline_000" / "identification_cp002.json").read_text())
    assert abs(saved["accuracy"] - accuracy) < 0.01 and abs(saved["ci95"] - interval) < 0.01
    correct = saved["accuracy"] / 100 * 5 * 8        # 5 episodes of 4 speakers x 2 queries
    assert abs(correct - round(correct)) < 1e-6 and 0 <= correct <= 40
