"""train.py: the paper's flags, each loss type trains, checkpoint/log/plot contents, clear config errors."""
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import train
from model.checkpoint import save_checkpoint
from training.config import episodes_per_epoch, resolve_config
from training.state import capture_rng_state, restore_rng_state
from training.step import build_optimizer, build_scheduler
from data_loading.episodes import EpisodeConfig
from common.errors import UserInputError
from model.model import background_resnet
from tests.conftest import ROOT

TINY = ["--channels", "4", "--nb_class_train", "3", "--n_episode", "4", "--workers", "0", "--seed", "1"]






def run_train(root, *flags):
    train.main(["--save_path", str(root / "data"), "--model_dir", str(root / "models"), *TINY, *flags])
    return root / "models" / "baseline_000"


def test_the_papers_command_lines_parse_with_their_defaults():
    parser = train.build_parser()
    args = parser.parse_args("--loss_type prototypical --use_GC True --n_shot 1 --n_query 2 "
                             "--use_variable True --nb_class_train 100".split())
    config = resolve_config(args)
    assert (config.loss_type, config.use_GC, config.n_shot, config.n_query,
            config.use_variable, config.nb_class_train) == ("prototypical", True, 1, 2, True, 100)
    softmax = resolve_config(parser.parse_args(["--loss_type", "softmax"]))
    assert softmax.nb_class_train == 256 and softmax.n_query == 2   # queries honoured, as the original
    papers_softmax = parser.parse_args("--loss_type softmax --n_query 0 --nb_class_train 256".split())
    assert resolve_config(papers_softmax).n_query == 0
    defaults = resolve_config(parser.parse_args([]))
    assert defaults.nb_class_train == 100 and defaults.max_epoch == 100 and defaults.lr == 0.1
    assert (defaults.data_type, defaults.cp_num, defaults.use_checkpoint) == ("vox2", 100, False)
    assert parser.parse_args(["--use_GC", "no", "--use_checkpoint", "1"]).use_GC is False


def test_episodes_per_epoch_follow_the_paper():
    episode = EpisodeConfig(n_way=3, n_shot=1, n_query=2)
    assert episodes_per_epoch(30, episode) == 30 // 9
    assert episodes_per_epoch(1_092_009, EpisodeConfig(100, 1, 2)) == 3640
    assert episodes_per_epoch(30, episode, n_episode=7) == 7
    with pytest.raises(UserInputError, match="8 training utterances are fewer than one episode needs"):
        episodes_per_epoch(8, episode)


def read_log(folder):
    with open(folder / "train_log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("loss_type", ["prototypical", "softmax"])
def test_each_loss_type_trains_and_writes_checkpoints_logs_and_curves(data_root, loss_type, capsys):
    folder = run_train(data_root, "--loss_type", loss_type, "--max_epoch", "2")
    rows = read_log(folder)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    parts = ("loss", "loss_e", "loss_g", "acc_e", "acc_g") if loss_type == "prototypical" else ("loss", "loss_g", "acc_g")
    for row in rows:
        assert all(math.isfinite(float(row[key])) for key in parts + ("seconds", "samples_per_s"))
        assert float(row["lr"]) == 0.1 and 0 <= float(row["acc_g"]) <= 100
    if loss_type == "prototypical":
        assert float(rows[0]["loss"]) == pytest.approx(float(rows[0]["loss_e"]) + float(rows[0]["loss_g"]), abs=2e-6)
    else:
        assert rows[0]["loss_e"] == "" and rows[0]["loss"] == rows[0]["loss_g"]
    checkpoint = torch.load(folder / "checkpoint_002.pth", weights_only=True)
    assert {"epoch", "state_dict", "optimizer", "scheduler", "config", "rng", "sampler"} <= checkpoint.keys()
    assert checkpoint["epoch"] == 2 and checkpoint["sampler"] == {"seed": 1, "epoch": 3}
    assert checkpoint["state_dict"]["weight"].shape == (6, 256)
    assert checkpoint["config"] == json.loads((folder / "config.json").read_text())
    assert checkpoint["config"]["loss_type"] == loss_type and checkpoint["config"]["channels"] == 4
    torch.manual_seed(1)
    initial = background_resnet(6, "resnet34", 4).state_dict()
    assert not torch.equal(initial["fc1"], checkpoint["state_dict"]["fc1"])  # it trained
    png = (folder / "train_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1000
    out = capsys.readouterr().out
    assert f"Epoch 2: loss {rows[1]['loss']}" in out and "global" in out
    assert not list(folder.glob(".*tmp*"))
    assert not (folder / "tensorboard").exists()  # only with --tensorboard


def test_random_states_survive_a_weights_only_checkpoint(tmp_path):
    import random
    torch.manual_seed(3), np.random.seed(3), random.seed(3), np.random.standard_normal(), random.gauss(0, 1)
    save_checkpoint(tmp_path / "rng.pth", rng=capture_rng_state())
    expected = (random.random(), random.gauss(0, 1), np.random.standard_normal(3), torch.rand(2))
    restore_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"])
    again = (random.random(), random.gauss(0, 1), np.random.standard_normal(3), torch.rand(2))
    assert expected[:2] == again[:2]
    assert np.array_equal(expected[2], again[2]) and torch.equal(expected[3], again[3])


def test_an_old_three_key_checkpoint_fine_tunes(data_root, capsys):
    torch.manual_seed(0)
    encoder = background_resnet(6, "resnet34", 4)
    foreign = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1, momentum=0.9)
    path = data_root / "models" / "baseline_000" / "checkpoint_005.pth"
    # the original's layout: checkpoint_{epoch}.pth holds {'epoch': epoch + 1, 'state_dict', 'optimizer'}
    save_checkpoint(path, epoch=6, state_dict=encoder.state_dict(), optimizer=foreign.state_dict())
    folder = run_train(data_root, "--use_checkpoint", "True", "--cp_num", "5", "--max_epoch", "6")
    assert [row["epoch"] for row in read_log(folder)] == ["6"]
    assert torch.load(folder / "checkpoint_006.pth", weights_only=True)["epoch"] == 6
    captured = capsys.readouterr()
    assert "epochs 6..6" in captured.out and "does not fit this model; starting with fresh momentum" in captured.err


def test_mismatched_width_and_missing_cp_num_are_clear_errors(data_root):
    path = data_root / "models" / "baseline_000" / "checkpoint_002.pth"
    save_checkpoint(path, epoch=2, state_dict=background_resnet(6, "resnet34", 8).state_dict())
    with pytest.raises(UserInputError, match="has width 8 .--channels. but this run uses --channels 4"):
        run_train(data_root, "--use_checkpoint", "True", "--cp_num", "2")
    with pytest.raises(UserInputError, match=r"--cp_num 9.*: 2$"):
        run_train(data_root, "--use_checkpoint", "True", "--cp_num", "9")
    with pytest.raises(UserInputError, match="--n_query must be at least 1"):
        run_train(data_root, "--n_query", "0")
    with pytest.raises(UserInputError, match=r"no feature files .* under .*voxceleb1/dev/feat/train_logfbank_nfilt40"):
        run_train(data_root, "--data_type", "vox1")  # no VoxCeleb1 features in this data root


def run_script(*flags):
    return subprocess.run([sys.executable, "train.py", *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})


def test_bad_configurations_exit_2_with_one_line(data_root):
    common = ["--save_path", str(data_root / "data"), "--model_dir", str(data_root / "models"), "--channels", "4"]
    too_many = run_script(*common, "--nb_class_train", "10")
    assert too_many.returncode == 2 and too_many.stdout == ""
    assert too_many.stderr.strip().splitlines() == [
        "error: an episode needs 10 speakers with at least 3 utterances (n_shot + n_query), "
        "but the corpus has 6 such speakers out of 6"]
    save_checkpoint(data_root / "models" / "baseline_000" / "checkpoint_004.pth", epoch=4,
                            state_dict=background_resnet(7, "resnet34", 4).state_dict(), optimizer={})
    wrong = run_script(*common, "--nb_class_train", "3", "--use_checkpoint", "True", "--cp_num", "4")
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1
    assert "checkpoint_004.pth was trained for 7 classes but the training data has 6 speakers" in wrong.stderr


def test_learning_rate_drops_tenfold_after_four_epochs_without_improvement():
    encoder = background_resnet(3, "resnet18", 2)
    optimizer = build_optimizer(encoder, 0.1)
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.9
    assert optimizer.defaults["weight_decay"] == 1e-4
    scheduler = build_scheduler(optimizer)
    lrs = []
    for loss in [5.0, 5.0, 5.0, 5.0, 5.0, 4.0]:  # best 5.0, then 4 epochs no better than 5.0 * (1 - 1e-4)
        scheduler.step(loss)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.01, 0.01])


def test_config_file_repeats_a_run_and_flags_override(tmp_path):
    """``--config`` takes a run's saved config.json (or YAML); command-line flags win."""
    flags = "--loss_type softmax --n_query 0 --nb_class_train 7 --channels 4 --lr 0.05 --seed 3".split()
    saved = resolve_config(train.build_parser().parse_args(flags))
    (tmp_path / "config.json").write_text(json.dumps(saved.as_dict()))
    repeated = resolve_config(train.parse_args(["--config", str(tmp_path / "config.json")]))
    assert repeated == saved
    overridden = resolve_config(train.parse_args(["--config", str(tmp_path / "config.json"),
                                                          "--n_folder", "4", "--lr", "0.2"]))
    assert (overridden.n_folder, overridden.lr, overridden.nb_class_train) == (4, 0.2, 7)
    (tmp_path / "run.yaml").write_text("loss_type: prototypical\nn_query: 3\nuse_GC: false\n")
    from_yaml = resolve_config(train.parse_args(["--config", str(tmp_path / "run.yaml")]))
    assert (from_yaml.loss_type, from_yaml.n_query, from_yaml.use_GC) == ("prototypical", 3, False)
    (tmp_path / "bad.yaml").write_text("n_querys: 3\n")
    with pytest.raises(UserInputError, match=r"--config .*bad.yaml: unknown setting\(s\) n_querys"):
        train.parse_args(["--config", str(tmp_path / "bad.yaml")])


def test_a_resumed_runs_config_repeats_the_run_from_its_start(data_root, capsys):
    """The config.json of a resumed run records use_checkpoint true: ``--config`` of it into a new
    --n_folder trains from epoch 1 (with a note) instead of failing on a checkpoint the new folder lacks,
    and reaches the very weights of the original run."""
    first = run_train(data_root, "--max_epoch", "1")
    run_train(data_root, "--max_epoch", "2", "--use_checkpoint", "True", "--cp_num", "1")
    assert json.loads((first / "config.json").read_text())["use_checkpoint"] is True
    capsys.readouterr()
    train.main(["--config", str(first / "config.json"), "--n_folder", "1"])
    captured = capsys.readouterr()
    assert "epochs 1..2" in captured.out
    assert f"note: --config {first / 'config.json'}: use_checkpoint is not taken from a config file" in captured.err
    repeat = first.parent / "baseline_001"
    assert [row["epoch"] for row in read_log(repeat)] == ["1", "2"]
    original, repeated = (torch.load(folder / "checkpoint_002.pth", weights_only=True)["state_dict"]
                          for folder in (first, repeat))
    assert all(torch.equal(original[key], repeated[key]) for key in original)
    assert not json.loads((repeat / "config.json").read_text())["use_checkpoint"]


def test_tensorboard_scalars_equal_the_train_log(data_root):
    """``--tensorboard`` writes the train_log.csv columns as TensorBoard scalars (the tensorboard
    package's event files, read back with its own reader), one point per epoch."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    folder = run_train(data_root, "--max_epoch", "2", "--tensorboard")
    rows = read_log(folder)
    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    assert {"loss/total", "loss/episodic", "loss/global", "accuracy/episodic", "accuracy/global", "lr",
            "throughput/samples_per_s"} <= set(events.Tags()["scalars"])
    for tag, column in (("loss/total", "loss"), ("accuracy/global", "acc_g"), ("lr", "lr")):
        points = events.Scalars(tag)
        assert [p.step for p in points] == [1, 2]
        assert [p.value for p in points] == pytest.approx([float(row[column]) for row in rows], rel=1e-6)
    assert json.loads((folder / "config.json").read_text())["tensorboard"] is True


def test_persistent_workers_are_stopped_when_training_ends():
    """Left to interpreter exit, persistent workers with pinned memory each wait out a 5 s join
    timeout (pytorch/pytorch#81794; 62 s with 12 workers on an H200): train() stops them itself."""
    from training.data import stop_workers
    loader = torch.utils.data.DataLoader(list(range(6)), batch_size=2, num_workers=2, persistent_workers=True)
    assert [batch.tolist() for batch in loader] == [[0, 1], [2, 3], [4, 5]]
    workers = list(loader._iterator._workers)
    assert len(workers) == 2 and all(worker.is_alive() for worker in workers)
    stop_workers(loader)
    assert not any(worker.is_alive() for worker in workers) and loader._iterator is None
    stop_workers(loader)  # twice (or never started) is fine
    assert [batch.tolist() for batch in loader] == [[0, 1], [2, 3], [4, 5]]  # and it can start again
