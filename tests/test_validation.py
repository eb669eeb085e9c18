"""Validation while training: val_eer/val_mindcf in train_log.csv, best.pth, exact resume, errors."""
import math
import struct

import numpy as np
import pytest
import torch
import torch.nn as nn

from common.errors import UserInputError
from evaluation.embedding import cosine_rows, embed_utterances
from evaluation.metrics import compute_eer, compute_min_dcf
from evaluation.validation import Validation
from model.checkpoint import load_encoder
from tests.conftest import write_random_features
from tests.test_resume import log_rows


class AbsMeanEncoder(nn.Module):
    """Embedding = per-filter mean |x| over time: a known, deterministic 'encoder'."""

    def forward(self, x, lengths=None):   # zero-padded frames add nothing to the sum
        frames = torch.full((len(x), 1), x.shape[3]) if lengths is None else lengths[:, None]
        return x.abs().sum(dim=3).flatten(1) / frames


def write_speaker_features(root, vectors, frames=30):
    """Utterance u of speaker s: filter f alternates +-vectors[s][f] over time (zero mean, |x| = vector)."""
    signs = np.where(np.arange(frames) % 2 == 0, 1.0, -1.0)[:, None]
    for s, vector in enumerate(vectors):
        for u in range(2):
            path = root / f"id{s:05d}" / "s" / f"{u:05d}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, (signs * vector[None, :]).astype(np.float32))


def test_validation_scores_a_known_encoder_exactly(tmp_path):
    rng = np.random.default_rng(0)
    write_speaker_features(tmp_path / "feat", rng.uniform(0.5, 2, (3, 40)))
    lines = [f"1 id{s:05d}/s/00000.wav id{s:05d}/s/00001.wav" for s in range(3)]
    lines += [f"0 id{a:05d}/s/00000.wav id{b:05d}/s/00001.wav" for a, b in ((0, 1), (1, 2), (2, 0))]
    (tmp_path / "trials.txt").write_text("\n".join(lines) + "\n")
    result = Validation(tmp_path / "trials.txt", [tmp_path / "feat"], 1)(AbsMeanEncoder(), torch.device("cpu"))
    assert result == {"val_eer": "0.0000", "val_mindcf": "0.0000"}   # targets score 1, non-targets < 1
    inverted = [("0" if line[0] == "1" else "1") + line[1:] for line in lines]
    (tmp_path / "inverted.txt").write_text("\n".join(inverted))
    result = Validation(tmp_path / "inverted.txt", [tmp_path / "feat"], 1)(AbsMeanEncoder(), torch.device("cpu"))
    assert result == {"val_eer": "100.0000", "val_mindcf": "1.0000"}


@pytest.fixture
def validation_set(data_root):
    """Features of 4 unseen speakers and a trial list over them (targets and non-targets)."""
    root = write_random_features(data_root / "valfeat", n_speakers=4, n_utterances=3, frames=(120, 260), seed=5)
    utterances = sorted(p.relative_to(root).with_suffix(".wav").as_posix() for p in root.rglob("*.npy"))
    speaker = lambda name: name.split("/")[0]
    lines = [f"{int(speaker(a) == speaker(b))} {a} {b}" for i, a in enumerate(utterances)
             for b in utterances[i + 1:]]
    (data_root / "val_trials.txt").write_text("\n".join(lines) + "\n")
    return ["--val_trials", str(data_root / "val_trials.txt"), "--val_features", str(root)]


def png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_validation_columns_best_checkpoint_and_curves(data_root, validation_set, capsys):
    from tests.test_train import run_train
    folder = run_train(data_root, "--max_epoch", "3", "--val_interval", "2", *validation_set)
    rows = log_rows(folder)
    assert list(rows[0])[-2:] == ["val_eer", "val_mindcf"]
    assert [row["val_eer"] != "" for row in rows] == [False, True, True]     # epoch 2, and the last
    trials = Validation(data_root / "val_trials.txt", [data_root / "valfeat"], 1).trials
    for row in rows[1:]:   # the logged values are EER_full's on that epoch's checkpoint
        model, _ = load_encoder(folder / f"checkpoint_{int(row['epoch']):03d}.pth")
        names = trials.utterances()
        embeddings = embed_utterances(model, [data_root / "valfeat" / n.replace(".wav", ".npy") for n in names],
                                      torch.device("cpu"), desc="")
        index = {n: i for i, n in enumerate(names)}
        a, b = embeddings[[index[n] for n in trials.enroll]], embeddings[[index[n] for n in trials.test]]
        # EER_full's scorer: in this 3-epoch width-4 run every cosine is within 1e-5 of 1, so a cosine
        # rounded another way in float32 (e.g. normalising after the dot product) can reorder near-ties
        scores = cosine_rows(a, b)
        assert float(row["val_eer"]) == pytest.approx(compute_eer(trials.labels, scores)[0], abs=1e-4)
        assert float(row["val_mindcf"]) == pytest.approx(compute_min_dcf(trials.labels, scores, 0.01), abs=1e-4)
    best_epoch = min((float(r["val_eer"]), int(r["epoch"])) for r in rows[1:])[1]
    best = torch.load(folder / "best.pth", weights_only=True)
    assert best["epoch"] == best_epoch and best["validation"]["epoch"] == best_epoch
    assert best["validation"]["val_eer"] == pytest.approx(float(rows[best_epoch - 1]["val_eer"]))
    same_epoch = torch.load(folder / f"checkpoint_{best_epoch:03d}.pth", weights_only=True)
    assert all(torch.equal(v, same_epoch["state_dict"][k]) for k, v in best["state_dict"].items())
    assert png_size(folder / "train_curves.png") == (1500, 700)             # 6 panels with validation
    assert "val EER" in capsys.readouterr().out
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_validation_does_not_change_training_and_resumes_exactly(data_root, validation_set):
    from tests.test_train import run_train
    def run(name, *flags):   # the later --model_dir wins over run_train's
        run_train(data_root, "--model_dir", str(data_root / name), *flags)
        return data_root / name / "baseline_000"
    plain = run("plain", "--max_epoch", "2")
    straight = run("straight", "--max_epoch", "3", *validation_set)
    run("stopped", "--max_epoch", "2", *validation_set)
    resumed = run("stopped", "--max_epoch", "3", "--use_checkpoint", "True", "--cp_num", "2", *validation_set)
    assert png_size(plain / "train_curves.png") == (1000, 700) and "val_eer" not in log_rows(plain)[0]
    a = torch.load(plain / "checkpoint_002.pth", weights_only=True)["state_dict"]
    b = torch.load(straight / "checkpoint_002.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)                          # validation perturbs nothing
    untimed = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in rows]
    assert untimed(log_rows(resumed)) == untimed(log_rows(straight))
    best_straight = torch.load(straight / "best.pth", weights_only=True)
    best_resumed = torch.load(resumed / "best.pth", weights_only=True)
    assert best_resumed["validation"] == best_straight["validation"]
    assert all(torch.equal(v, best_straight["state_dict"][k]) for k, v in best_resumed["state_dict"].items())


def test_validation_input_errors_are_clear(data_root, validation_set, tmp_path):
    from tests.test_train import run_train
    with pytest.raises(UserInputError, match="trial list not found"):
        run_train(data_root, "--val_trials", str(tmp_path / "nope.txt"), "--val_features", str(data_root))
    (tmp_path / "missing.txt").write_text("1 id09999/a/00001.wav id09999/a/00002.wav\n0 id09999/a/00001.wav id00000/session0/00000.wav\n")
    with pytest.raises(UserInputError, match="2 of 3 utterances in the trial list have no features"):
        run_train(data_root, "--val_trials", str(tmp_path / "missing.txt"), *validation_set[2:])
    with pytest.raises(UserInputError, match="--val_interval must be at least 1, got 0"):
        run_train(data_root, *validation_set, "--val_interval", "0")
    with pytest.raises(UserInputError, match="--val_features: no such folder"):
        run_train(data_root, validation_set[0], validation_set[1], "--val_features", str(tmp_path / "none"))
    assert not (data_root / "models" / "baseline_000" / "best.pth").exists()
