"""Exact resume: stopped after epoch k and resumed equals uninterrupted; SIGKILL mid-epoch is recoverable."""
import csv
import os
import signal
import subprocess
import sys
import time

import torch

import train
from model.checkpoint import available_checkpoints
from tests.conftest import ROOT, TINY_MODEL_ARGS


def flags(root, run, *extra, model="background_resnet"):
    return ["--save_path", str(root / "data"), "--model_dir", str(root / run), "--model", model,
            "--channels", str(TINY_MODEL_ARGS[model]["channels"]), "--nb_class_train", "3", "--n_episode", "3",
            "--seed", "2", *extra]


def log_rows(folder):
    with open(folder / "train_log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_stopped_and_resumed_equals_uninterrupted_bit_for_bit(data_root, model_name):
    train.main(flags(data_root, "straight", "--max_epoch", "3", "--workers", "0", model=model_name))
    train.main(flags(data_root, "stopped", "--max_epoch", "2", "--workers", "0", model=model_name))
    # the resumed part runs with a DataLoader worker: episodes do not depend on who loads them
    train.main(flags(data_root, "stopped", "--max_epoch", "3", "--workers", "1",
                     "--use_checkpoint", "True", "--cp_num", "2", model=model_name))
    straight = torch.load(data_root / "straight/baseline_000/checkpoint_003.pth", weights_only=True)
    resumed = torch.load(data_root / "stopped/baseline_000/checkpoint_003.pth", weights_only=True)
    for key, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    momentum = [s["momentum_buffer"] for s in straight["optimizer"]["state"].values()]
    assert len(momentum) > 100
    assert all(torch.equal(a, s["momentum_buffer"])
               for a, s in zip(momentum, resumed["optimizer"]["state"].values()))
    assert resumed["scheduler"] == straight["scheduler"] and resumed["sampler"] == straight["sampler"]
    assert torch.equal(resumed["rng"]["torch"], straight["rng"]["torch"])
    ignore_timing = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in rows]
    assert ignore_timing(log_rows(data_root / "stopped/baseline_000")) == \
        ignore_timing(log_rows(data_root / "straight/baseline_000"))


def test_sigkill_mid_epoch_resumes_from_the_last_complete_checkpoint(data_root):
    command = [sys.executable, "train.py", *flags(data_root, "killed", "--max_epoch", "2", "--workers", "0",
                                                  "--n_episode", "12")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    folder = data_root / "killed/baseline_000"
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (folder / "checkpoint_001.pth").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # inside epoch 2 (curves are drawn after the checkpoint, then 12 episodes)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert available_checkpoints(folder) == [1], "the kill should land in epoch 2"
    assert torch.load(folder / "checkpoint_001.pth", weights_only=True)["epoch"] == 1
    (folder / ".checkpoint_002.pth.k1ll3d.tmp").write_bytes(b"torn")  # as a kill during a save leaves it
    resumed = subprocess.run(command + ["--use_checkpoint", "True", "--cp_num", "1"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "epochs 2..2" in resumed.stdout and "Epoch 1:" not in resumed.stdout
    assert [row["epoch"] for row in log_rows(folder)] == ["1", "2"]
    assert torch.load(folder / "checkpoint_002.pth", weights_only=True)["epoch"] == 2
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no torn temporaries
