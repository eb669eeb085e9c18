"""train.py --input wav [--augment --speed_perturb] on the synthetic corpus: trains, validates, writes
best.pth, resumes exactly; without augmentation it trains as from the stored features; bad input
stops before any work with one error line."""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import dataprep
import train
from common.errors import UserInputError
from feat_extract import feature_extraction
from tests.conftest import ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The synthetic corpus (6 training, 4 test speakers), its features, a MUSAN-style noise folder
    and a folder of three room impulse responses."""
    root = tmp_path_factory.mktemp("wavtrain")
    dataprep.main([str(arg) for arg in ("--synthetic", "--save_path", root / "data", "--n_speakers", 6,
                                        "--n_test_speakers", 4, "--utterances_per_speaker", 4,
                                        "--test_utterances_per_speaker", 4, "--min_seconds", 1, "--max_seconds", 2,
                                        "--workers", 1)])
    feature_extraction.main(["--save_path", str(root / "data"), "--workers", "1"])
    rng = np.random.default_rng(0)
    for kind, count in (("noise", 2), ("music", 2), ("speech", 4)):
        for number in range(count):
            path = root / "musan" / kind / "set" / f"{kind}-{number:04d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, (rng.standard_normal(20000) * 3000).astype(np.int16), 16000, subtype="PCM_16")
    for number in range(3):
        path = root / "rirs" / "smallroom" / f"Room{number:03d}" / f"Room{number:03d}-00001.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        decay = rng.standard_normal(3000) * np.exp(-np.arange(3000) / (400 * (number + 1)))
        decay[5] = 3.0
        sf.write(path, (decay / np.abs(decay).max() * 20000).astype(np.int16), 16000, subtype="PCM_16")
    return root


def flags(data, run_name, *extra):
    return ["--loss_type", "prototypical", "--nb_class_train", "3", "--data_type", "vox1", "--save_path",
            str(data / "data"), "--model_dir", str(data / run_name), "--channels", "4", "--n_episode", "2",
            "--seed", "3", *map(str, extra)]


def augmented(data):
    return ["--input", "wav", "--augment", "--noise_dir", data / "musan", "--rir_dir", data / "rirs",
            "--val_trials", data / "data/voxceleb1/test/veri_test.txt"]


def log_rows(folder):
    with open(folder / "train_log.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in csv.DictReader(handle)]


def test_augmented_wav_training_validates_and_resumes_exactly(data):
    train.main(flags(data, "straight", "--max_epoch", 2, "--workers", 0, *augmented(data)))
    train.main(flags(data, "stopped", "--max_epoch", 1, "--workers", 0, *augmented(data)))
    # resumed with a DataLoader worker: the augmentation does not depend on who makes the crops
    train.main(flags(data, "stopped", "--max_epoch", 2, "--workers", 1, "--use_checkpoint", "True",
                     "--cp_num", 1, *augmented(data)))
    straight, stopped = data / "straight/baseline_000", data / "stopped/baseline_000"
    for name in ("checkpoint_002.pth", "best.pth"):
        a, b = (torch.load(folder / name, weights_only=True) for folder in (straight, stopped))
        assert a["epoch"] == b["epoch"] and a.get("validation") == b.get("validation")
        for key, value in a["state_dict"].items():
            assert torch.equal(b["state_dict"][key], value), (name, key)
        for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
            assert torch.equal(state_a["momentum_buffer"], state_b["momentum_buffer"])
    rows = log_rows(straight)
    assert rows == log_rows(stopped) and [row["epoch"] for row in rows] == ["1", "2"]
    assert all(0 <= float(row["val_eer"]) <= 100 for row in rows)
    config = torch.load(straight / "checkpoint_002.pth", weights_only=True)["config"]
    assert config["input"] == "wav" and config["augment"] is True
    assert config["wav_dir"].endswith("voxceleb1/dev/wav") and config["rir_dir"].endswith("rirs")


def test_wav_training_without_augmentation_trains_as_from_features(data):
    train.main(flags(data, "features", "--max_epoch", 1, "--workers", 0))
    train.main(flags(data, "wav", "--max_epoch", 1, "--workers", 0, "--input", "wav"))
    from_features, from_wav = log_rows(data / "features/baseline_000"), log_rows(data / "wav/baseline_000")
    for key in ("loss", "loss_e", "loss_g"):
        assert abs(float(from_features[0][key]) - float(from_wav[0][key])) < 1e-4, key
    a = torch.load(data / "features/baseline_000/checkpoint_001.pth", weights_only=True)["state_dict"]
    b = torch.load(data / "wav/baseline_000/checkpoint_001.pth", weights_only=True)["state_dict"]
    for key in a:   # two SGD steps at lr 0.1 amplify the 1e-5 differences of the inputs (BN variances ~3e5)
        assert (a[key].float() - b[key].float()).abs().max() <= 5e-3 * (1 + a[key].float().abs().max()), key
    # --wav_fbank device: the same features computed in the step (the CPU standing in for the GPU)
    train.main(flags(data, "wav_device", "--max_epoch", 1, "--workers", 1, "--input", "wav", "--wav_fbank", "device"))
    c = torch.load(data / "wav_device/baseline_000/checkpoint_001.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(b[key], c[key]) for key in b)


def test_speed_perturbation_trains_three_times_the_speakers(data):
    train.main(flags(data, "speed", "--max_epoch", 1, "--workers", 0, "--input", "wav", "--speed_perturb"))
    checkpoint = torch.load(data / "speed/baseline_000/checkpoint_001.pth", weights_only=True)
    assert checkpoint["model_args"]["num_classes"] == 3 * 6
    assert checkpoint["state_dict"]["weight"].shape[0] == 3 * 6


@pytest.mark.parametrize("extra, message", [
    (("--augment",), "--augment works on recordings: it needs --input wav"),
    (("--noise_dir", "NOISE"), "--noise_dir works on recordings: it needs --input wav"),
    (("--wav_fbank", "device"), "--wav_fbank works on recordings: it needs --input wav"),
    (("--input", "wav", "--augment"), "--augment needs --noise_dir"),
    (("--input", "wav", "--noise_dir", "NOISE"), "--noise_dir is only used with --augment"),
    (("--input", "wav", "--augment", "--noise_dir", "MISSING"), "--noise_dir .*missing: no such folder"),
    (("--input", "wav", "--augment", "--noise_dir", "EMPTY"), "--noise_dir .*empty: no .wav/.flac/.ogg files in its noise/music/speech"),
    (("--input", "wav", "--augment", "--noise_dir", "NOISE", "--rir_dir", "EMPTY"),
     "--rir_dir .*empty: no .wav/.flac/.ogg room impulse responses"),
    (("--input", "wav", "--wav_dir", "MISSING"), "--wav_dir .*missing: no such folder"),
    (("--input", "wav", "--wav_dir", "HOLED"), "1 of 24 training utterances have no audio under .*holed"),
])
def test_waveform_input_errors_stop_before_any_work(data, tmp_path, extra, message):
    (tmp_path / "empty").mkdir()
    holed = tmp_path / "holed"
    if "HOLED" in extra:
        shutil.copytree(data / "data/voxceleb1/dev/wav", holed)
        next(holed.rglob("*.wav")).unlink()
    names = {"NOISE": data / "musan", "MISSING": tmp_path / "missing", "EMPTY": tmp_path / "empty", "HOLED": holed}
    with pytest.raises(UserInputError, match=message):
        train.main(flags(data, "refused", "--max_epoch", 1, *[names.get(value, value) for value in extra]))
    assert not (data / "refused").exists()


def test_the_command_prints_one_error_line_and_exits_2(data):
    completed = run("train.py", *flags(data, "refused_cli", "--augment"))
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "error: --augment works on recordings: it needs --input wav (training crops are cut from stored "
        "features by default)"]
    assert not (data / "refused_cli").exists()
