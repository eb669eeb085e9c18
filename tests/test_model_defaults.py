"""The encoder as the original builds it and as a user asks for it: ``fc1`` initialised with
``xavier_uniform_`` (bound sqrt(6 / (256 + 256)) = 0.108 for the paper's 256x256 projection),
seeded builds reproducible, each registered model with its own defaults (ECAPA-TDNN 512 channels),
and train.py saying what it built."""
import json
import math

import pytest
import torch

import train
from model.ecapa_tdnn import EcapaEncoder
from model.model import background_resnet
from model.registry import DEFAULT_ARGS, MODELS, default_args, describe_model
from model.resnet import BLOCKS_PER_STAGE, ResNet
from training.config import resolve_config
from training.distributed import DistContext
from training.step import build_encoder

XAVIER_BOUND_256 = math.sqrt(6 / (256 + 256))   # 0.10825


def config_from(*flags):
    return resolve_config(train.build_parser().parse_args(list(flags)))


def test_fc1_is_xavier_uniform_with_the_originals_bound():
    assert XAVIER_BOUND_256 == pytest.approx(0.108253, abs=1e-6)
    torch.manual_seed(0)
    fc1 = background_resnet(num_classes=5).fc1.detach()
    assert fc1.shape == (256, 256)
    largest = fc1.abs().max().item()
    # 65,536 uniform draws: the largest is within 1% of the bound (the chance of not: 0.99 ** 65536)
    assert 0.99 * XAVIER_BOUND_256 < largest <= XAVIER_BOUND_256
    # exactly torch's uniform(-bound, bound) drawn right after the trunk's initialisation
    torch.manual_seed(0)
    ResNet(BLOCKS_PER_STAGE["resnet34"], 32)
    expected = torch.empty(256, 256).uniform_(-XAVIER_BOUND_256, XAVIER_BOUND_256)
    torch.testing.assert_close(fc1, expected, rtol=0, atol=1e-8)


def test_a_seeded_model_has_reproducible_first_weights():
    config = config_from("--seed", "0", "--channels", "32")
    first, second = (build_encoder(config, 5, torch.device("cpu"), DistContext()) for _ in range(2))
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    # values seen with torch 2.13 on CPU for seed 0, pinned so that an initialisation change shows
    assert first.fc1[0, 0].item() == second.fc1[0, 0].item() == pytest.approx(0.0749138966, abs=1e-9)
    assert first.fc1[255, 255].item() == second.fc1[255, 255].item() == pytest.approx(-0.0974868685, abs=1e-9)
    other = build_encoder(config_from("--seed", "1", "--channels", "32"), 5, torch.device("cpu"), DistContext())
    assert not torch.equal(first.fc1, other.fc1)


def test_every_registered_model_has_its_own_defaults():
    assert set(DEFAULT_ARGS) == set(MODELS)
    assert default_args("background_resnet") == {"channels": 32}
    assert default_args("ecapa_tdnn") == {"channels": 512}
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        default_args("resnet")


@pytest.mark.parametrize("flags, channels", [
    ([], 32),
    (["--model", "background_resnet"], 32),
    (["--model", "ecapa_tdnn"], 512),
    (["--model", "ecapa_tdnn", "--channels", "1024"], 1024),
    (["--channels", "16"], 16),
])
def test_channels_left_out_come_from_the_model(flags, channels):
    config = config_from(*flags)
    assert config.channels == channels
    if config.model == "ecapa_tdnn" and channels == 512:
        encoder = build_encoder(config, 3, torch.device("cpu"), DistContext())
        assert isinstance(encoder, EcapaEncoder) and encoder.model_args == {"num_classes": 3, "channels": 512}


def test_old_config_files_keep_their_channels(tmp_path):
    """A run saved before the per-model defaults (``channels`` always written) repeats unchanged,
    also an ECAPA-TDNN run that was trained with the old 32-channel default."""
    (tmp_path / "config.json").write_text(json.dumps({"model": "ecapa_tdnn", "channels": 32, "n_query": 2}))
    assert resolve_config(train.parse_args(["--config", str(tmp_path / "config.json")])).channels == 32
    saved = config_from("--model", "ecapa_tdnn").as_dict()
    assert saved["channels"] == 512   # config.json records the resolved width
    (tmp_path / "new.json").write_text(json.dumps(saved))
    assert resolve_config(train.parse_args(["--config", str(tmp_path / "new.json")])).as_dict() == saved


def test_describe_model_counts_the_parameters():
    torch.manual_seed(0)
    model = background_resnet(num_classes=5)
    trunk = sum(p.numel() for p in model.pretrained.parameters())
    assert trunk == 5_325_152
    # trunk + fc1 (256 x 256) + class weights (5 x 256)
    assert describe_model(model) == ("built background_resnet (resnet34, channels 32): 5,391,968 parameters "
                                     "(5,390,688 without the class weights)")
    assert describe_model(EcapaEncoder(num_classes=5, channels=16)).startswith("built ecapa_tdnn (channels 16): ")


def test_train_prints_what_it_built(data_root, capsys):
    train.main(["--save_path", str(data_root / "data"), "--model_dir", str(data_root / "models"), "--channels", "4",
                "--nb_class_train", "3", "--n_episode", "1", "--workers", "0", "--max_epoch", "1"])
    out = capsys.readouterr().out.splitlines()
    model = background_resnet(num_classes=6, channels=4)
    total = sum(p.numel() for p in model.parameters())
    assert out[0] == (f"built background_resnet (resnet34, channels 4): {total:,} parameters "
                      f"({total - 6 * 256:,} without the class weights)")
