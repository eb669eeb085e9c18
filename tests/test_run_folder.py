"""Issue 16, training: a used run folder is never overwritten by accident, one writer per folder (also
under torchrun), a full or read-only disk is one ``error:`` line found before the first epoch, and a
disk that fills up during training leaves the earlier checkpoints whole. Real commands throughout
(``train.py`` through ``configure.run_main``, or as a subprocess where a second process is the point);
real small file systems (tmpfs) where the machine allows mounting, else a simulated refusal."""
import csv
import errno
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from training import run_folder
from tests.conftest import ROOT, TINY_MODEL_ARGS
from tests.small_filesystems import tmpfs
from tests.test_distributed import torchrun
from tests.test_robustness import ENV, error_line, isolated, run_entry  # noqa: F401 (isolated: autouse)


def flags(root, *extra, models="models"):
    return ["--save_path", root / "data", "--model_dir", root / models, "--channels", "4",
            "--nb_class_train", "3", "--n_episode", "2", "--workers", "0", *extra]


def log_epochs(folder):
    with open(folder / "train_log.csv", newline="") as handle:
        return [row["epoch"] for row in csv.DictReader(handle)]


def snapshot(folder):
    """The run's files (the lock file only says who holds it now)."""
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file() and path.name != "train.lock"}


def test_fresh_run_refuses_a_used_folder_and_overwrite_moves_it_aside(data_root):
    folder = data_root / "models/baseline_000"
    assert run_entry("train", *flags(data_root, "--max_epoch", "2")).returncode == 0
    first = snapshot(folder)
    # the finding 1: a second fresh run (forgot --use_checkpoint) into the same folder
    line = error_line(run_entry("train", *flags(data_root, "--max_epoch", "1", "--seed", "9")))
    assert line.startswith(f"error: {folder} already holds a training run (checkpoints 1-2, config from 20")
    for way_on in ("--use_checkpoint True --cp_num 2", "another --n_folder", "--overwrite"):
        assert way_on in line
    assert snapshot(folder) == first  # nothing touched
    line = error_line(run_entry("train", *flags(data_root, "--overwrite", "--use_checkpoint", "True", "--cp_num", "2")))
    assert "--overwrite starts a fresh run but --use_checkpoint True resumes one" in line
    assert snapshot(folder) == first

    result = run_entry("train", *flags(data_root, "--max_epoch", "1", "--seed", "9", "--overwrite"))
    assert result.returncode == 0, result.stderr[-2000:]
    [replaced] = [path for path in folder.iterdir() if path.is_dir()]
    assert replaced.name.startswith("replaced_") and f"into {replaced}" in result.stderr
    moved = set(first)
    assert moved == {"checkpoint_001.pth", "checkpoint_002.pth", "config.json", "train_log.csv",
                     "train_curves.png"}
    assert snapshot(replaced) == {name: first[name] for name in moved}  # the old run, byte for byte
    assert sorted(path.name for path in folder.glob("checkpoint_*.pth")) == ["checkpoint_001.pth"]
    assert log_epochs(folder) == ["1"] and log_epochs(replaced) == ["1", "2"]
    assert torch.load(folder / "checkpoint_001.pth", weights_only=True)["config"]["seed"] == 9


def wait_for(condition, process, seconds=180):
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_second_writer_is_refused_and_a_killed_writers_lock_does_not_block_resume(data_root):
    folder = data_root / "models/baseline_000"
    command = [sys.executable, "train.py", *map(str, flags(data_root, "--max_epoch", "3", "--n_episode", "15"))]
    writer = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    try:
        wait_for(lambda: (folder / "checkpoint_001.pth").exists(), writer)
        line = error_line(run_entry("train", *flags(data_root, "--use_checkpoint", "True", "--cp_num", "1",
                                                    "--max_epoch", "3")))
        assert line.startswith(f"error: {folder} is in use by another training run (pid {writer.pid} on ")
        assert "train.py --save_path" in line and "wait for it to end, or train into another --n_folder" in line
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.communicate()
    assert (folder / "train.lock").is_file()  # left behind by the killed run, holding nothing
    result = run_entry("train", *flags(data_root, "--use_checkpoint", "True", "--cp_num", "1", "--max_epoch", "2"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert log_epochs(folder) == ["1", "2"]
    assert f"pid {os.getpid()} on " in (folder / "train.lock").read_text()


def test_torchrun_job_into_a_folder_another_run_holds_stops_naming_the_holder(data_root):
    folder = data_root / "models/baseline_000"
    with run_folder.folder_lock(folder):
        result = torchrun(data_root, "--nb_class_train", "4", "--max_epoch", "1", "--model_dir",
                          str(data_root / "models"), timeout=180)
    assert result.returncode != 0
    assert f"error: {folder} is in use by another training run (pid {os.getpid()} on " in result.stderr
    assert sorted(path.name for path in folder.iterdir()) == ["train.lock"]


def test_checkpoint_size_estimate_is_close_to_the_real_file(data_root, model_name):
    """Sized from the model the run trains (--model), not from a ResNet whatever it trains."""
    tiny = ["--model", model_name, "--channels", str(TINY_MODEL_ARGS[model_name]["channels"])]
    assert run_entry("train", *flags(data_root, "--max_epoch", "1"), *tiny).returncode == 0
    real = (data_root / "models/baseline_000/checkpoint_001.pth").stat().st_size
    estimate = run_folder.check_room_for_checkpoints(data_root / "models/baseline_000", model_name, {
        "num_classes": 6, "backbone": "resnet34", **TINY_MODEL_ARGS[model_name]})
    assert real <= estimate <= 1.25 * real


def test_full_disk_is_found_before_the_first_epoch(data_root, monkeypatch):
    """The issue's finding 2 on a 600 KB tmpfs (no mount allowed: the free space is simulated)."""
    with tmpfs(data_root / "small", 600) as mounted:
        if mounted is None:
            monkeypatch.setattr("common.preflight.free_bytes", lambda folder: 596 * 1024)
        result = run_entry("train", *flags(data_root, "--max_epoch", "3", models="small"))
        line = error_line(result)
        folder = data_root / "small/baseline_000"
        assert re.fullmatch(rf"error: {re.escape(str(folder))}: only 5\d\d\.\d KB free but two checkpoints of "
                            r"this model need about 1\.9 MB; free some space or choose another folder "
                            r"\(nothing was written\)", line), line
        assert "training" not in result.stdout
        assert sorted(path.name for path in folder.iterdir()) == ["train.lock"]


def simulate_full_disk_at_checkpoint(monkeypatch, epoch):
    """Without a tmpfs: the write of checkpoint ``epoch`` stops part way with ENOSPC, as a full disk does."""
    real_save = torch.save

    def save(obj, handle, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == epoch:
            handle.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, handle, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save)


def test_disk_filling_up_during_training_is_one_error_line_and_earlier_checkpoints_stay_whole(data_root,
                                                                                              monkeypatch):
    """Room for two checkpoints (the preflight passes), not for three: epoch 3's write fails."""
    with tmpfs(data_root / "small", 2200) as mounted:
        if mounted is None:
            simulate_full_disk_at_checkpoint(monkeypatch, 3)
        result = run_entry("train", *flags(data_root, "--max_epoch", "3", models="small"))
        folder = data_root / "small/baseline_000"
        line = error_line(result)
        assert line.startswith(f"error: cannot write {folder}/checkpoint_003.pth: no space left on the file "
                               "system, ")
        assert "(nothing was left half written)" in line and "Epoch 2:" in result.stdout
        assert sorted(path.name for path in folder.iterdir()) == [
            "checkpoint_001.pth", "checkpoint_002.pth", "config.json", "train.lock", "train_curves.png",
            "train_log.csv"]  # no torn checkpoint_003, no temporaries
        assert [torch.load(folder / f"checkpoint_00{n}.pth", weights_only=True)["epoch"] for n in (1, 2)] == [1, 2]
        assert log_epochs(folder) == ["1", "2"]


def test_read_only_model_dir_is_one_error_line_before_any_work(data_root):
    with tmpfs(data_root / "readonly", 600, read_only=True) as mounted:
        if mounted is None:
            pytest.skip("cannot mount a read-only tmpfs here")
        line = error_line(run_entry("train", *flags(data_root, "--max_epoch", "1", models="readonly")))
        assert line.startswith(f"error: cannot write {data_root}/readonly/baseline_000/train.lock: "
                               "read-only file system (nothing was left half written)")
