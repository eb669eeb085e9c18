import re
import subprocess
import sys

import pytest
import torch

import configure
from common.errors import UserInputError
from model.checkpoint import encoder_shape, load_encoder, resolve_checkpoint, save_checkpoint
from model.model import background_resnet
from tests.conftest import ROOT


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


def test_missing_cp_num_lists_existing(tmp_path):
    for epoch in (1, 2, 5):
        save_checkpoint(configure.checkpoint_path(0, epoch, tmp_path), epoch=epoch, state_dict={}, optimizer={})
    assert resolve_checkpoint(0, 2, model_dir=tmp_path) == tmp_path / "baseline_000" / "checkpoint_002.pth"
    with pytest.raises(UserInputError, match=r"--cp_num 7.*: 1, 2, 5$"):
        resolve_checkpoint(0, 7, model_dir=tmp_path)


def test_corrupt_checkpoint_is_named_as_corrupt(tmp_path):
    from model.checkpoint import torch_load
    (tmp_path / "bad.pth").write_bytes(b"garbage bytes")
    with pytest.raises(UserInputError, match="bad.pth: not a loadable weights-only checkpoint "
                                             r"\(corrupt or not a PyTorch file"):
        torch_load(tmp_path / "bad.pth")


def test_a_torchscript_export_or_a_run_folder_given_as_checkpoint_is_named(tmp_path):
    """export.py's encoder.pt given as --checkpoint: said in one line (torch's own message advised
    weights_only=False, i.e. running the file's code, after a UserWarning); a run folder lists its checkpoints."""
    import export
    path = configure.checkpoint_path(0, 1, tmp_path)
    save_checkpoint(path, epoch=1, state_dict=background_resnet(3, "resnet18", 4).state_dict(), optimizer={})
    export.main(["--checkpoint", str(path), "--out", str(tmp_path / "exported"), "--format", "torchscript"])
    scripted = tmp_path / "exported" / "encoder.pt"
    expected = (f"{scripted}: a TorchScript export (export.py's encoder.pt), not a training checkpoint; "
                "give the checkpoint_XXX.pth it was exported from")
    with pytest.raises(UserInputError, match=f"^{re.escape(expected)}$"):
        load_encoder(scripted)
    with pytest.raises(UserInputError, match=f"^checkpoint {re.escape(str(path.parent))} is a folder, not a "
                                             "checkpoint file; its checkpoints: checkpoint_001.pth$"):
        load_encoder(path.parent)
    result = subprocess.run([sys.executable, "verify.py", "--checkpoint", str(scripted), "--threshold", "0.5",
                             "a.wav", "b.wav"], cwd=ROOT, capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (2, f"error: {expected}\n")


def test_written_files_get_umask_permissions(tmp_path):
    import os
    from common.files import UMASK, write_text
    write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert os.listdir(tmp_path) == ["a.txt"]


def test_epochs_of_original_and_project_checkpoints(reference, tmp_path):
    """The original writes {'epoch': epoch + 1} into checkpoint_{epoch}.pth; this project writes the
    epoch just trained (with 'model'/'config'). Both report the same trained epochs."""
    from model.checkpoint import model_fields, trained_epochs
    from speaker_api import SpeakerEncoder
    state = torch.load(reference / "model_sd.pth", weights_only=True)
    save_checkpoint(tmp_path / "checkpoint_007.pth", epoch=8, state_dict=state, optimizer={})
    original = SpeakerEncoder.from_checkpoint(tmp_path / "checkpoint_007.pth", device="cpu")
    assert original.epoch == 7
    model = background_resnet(num_classes=3, backbone="resnet18", channels=4)
    save_checkpoint(tmp_path / "ours.pth", epoch=7, state_dict=model.state_dict(), **model_fields(model))
    ours, checkpoint = load_encoder(tmp_path / "ours.pth")
    assert trained_epochs(checkpoint) == 7 and checkpoint["model"] == "background_resnet"
    assert checkpoint["model_args"] == {"num_classes": 3, "backbone": "resnet18", "channels": 4}
    assert (ours.num_classes, ours.backbone, ours.channels) == (3, "resnet18", 4)
    assert trained_epochs({"state_dict": {}}, tmp_path / "checkpoint_004.pth") == 4
    assert trained_epochs({"state_dict": {}}, tmp_path / "model.pth") is None


def test_unknown_recorded_model_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "cp.pth", epoch=1, state_dict={}, model="conformer_xl", model_args={})
    with pytest.raises(UserInputError, match="cannot rebuild the checkpoint's model: unknown model 'conformer_xl'"):
        load_encoder(tmp_path / "cp.pth")
