import pytest
import torch

import configure
from data_loading.files import UserInputError
from model.checkpoint import encoder_shape, load_encoder, resolve_checkpoint, save_checkpoint
from model.model import background_resnet


def test_shape_is_read_from_weights(reference):
    state = torch.load(reference / "model_sd.pth", weights_only=True)
    assert encoder_shape(state) == {"num_classes": 7, "channels": 32, "backbone": "resnet34"}
    thin = background_resnet(num_classes=3, backbone="resnet18", channels=8).state_dict()
    assert encoder_shape(thin) == {"num_classes": 3, "channels": 8, "backbone": "resnet18"}


def test_published_layout_and_bare_state_dict_load(reference, tmp_path):
    state = torch.load(reference / "model_sd.pth", weights_only=True)
    save_checkpoint(tmp_path / "cp.pth", epoch=3, state_dict=state, optimizer={})
    model, checkpoint = load_encoder(tmp_path / "cp.pth")
    assert checkpoint["epoch"] == 3 and not model.training
    torch.testing.assert_close(model.fc1, state["fc1"])
    model, _ = load_encoder(reference / "model_sd.pth")
    torch.testing.assert_close(model.weight, state["weight"])


def test_missing_cp_num_lists_existing(tmp_path, monkeypatch):
    monkeypatch.setattr(configure, "SAVED_MODEL_DIR", tmp_path)
    for epoch in (1, 2, 5):
        save_checkpoint(configure.checkpoint_path(0, epoch), epoch=epoch, state_dict={}, optimizer={})
    assert resolve_checkpoint(0, 2) == tmp_path / "baseline_000" / "checkpoint_002.pth"
    with pytest.raises(UserInputError, match=r"--cp_num 7.*: 1, 2, 5$"):
        resolve_checkpoint(0, 7)
