"""ECAPA-TDNN as a second encoder: the (n, 1, 40, T) input, any length, checkpoints, ONNX, training."""
import json

import numpy as np
import onnxruntime
import pytest
import torch

import export as export_cmd
from common.errors import UserInputError
from model.checkpoint import load_encoder, model_fields, model_from_checkpoint, save_checkpoint
from model.ecapa_tdnn import EcapaEncoder, Res2Conv


def trained_looking(model, seed=0):
    """Non-trivial BatchNorm statistics, as after training (fresh ones hide ordering mistakes)."""
    torch.manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 1, 40, 120) * 3 + 1)
    return model.eval()


def test_paper_size_and_any_length():
    model = EcapaEncoder(num_classes=10, channels=512).eval()
    n_parameters = sum(p.numel() for name, p in model.named_parameters() if name != "weight")
    assert 6.0e6 < n_parameters < 6.5e6        # the ECAPA paper's C=512 model has ~6.2M (192-d output)
    with torch.no_grad():
        for frames in (1, 2, 37, 301):
            assert model(torch.randn(3, 1, 40, frames)).shape == (3, 256)
    assert model.weight.shape == (10, 256)


def test_res2net_groups_are_hierarchical():
    res2 = Res2Conv(16, 3, 2).eval()
    x = torch.randn(2, 16, 20)
    with torch.no_grad():
        out = res2(x)
        assert torch.equal(out[:, :2], x[:, :2])                          # group 0 passes through
        second = res2.convs[0](x[:, 2:4])
        assert torch.allclose(out[:, 2:4], second)
        assert torch.allclose(out[:, 4:6], res2.convs[1](x[:, 4:6] + second))
    with pytest.raises(ValueError, match="multiple of 8"):
        Res2Conv(12, 3, 2)


def test_eval_embeddings_do_not_depend_on_the_batch_or_padding():
    model = trained_looking(EcapaEncoder(num_classes=4, channels=16))
    batch = torch.randn(4, 1, 40, 90)
    lengths = torch.tensor([90, 41, 90, 7])
    with torch.no_grad():
        together = model(batch)
        alone = torch.cat([model(batch[i:i + 1]) for i in range(4)])
        padded = model(batch, lengths)
        cut = torch.cat([model(batch[i:i + 1, :, :, :n]) for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded, cut, atol=1e-5, rtol=1e-5)


def test_checkpoint_round_trip_and_onnx_export(tmp_path):
    model = trained_looking(EcapaEncoder(num_classes=5, channels=16), seed=3)
    path = tmp_path / "checkpoint_003.pth"
    assert model_fields(model) == {"model": "ecapa_tdnn", "model_args": {"num_classes": 5, "channels": 16}}
    save_checkpoint(path, epoch=3, state_dict=model.state_dict(), **model_fields(model))
    loaded, _ = load_encoder(path)
    assert isinstance(loaded, EcapaEncoder) and not loaded.training
    info = export_cmd.main(["--checkpoint", str(path), "--out", str(tmp_path / "out"), "--format", "onnx"])
    assert info["encoder"] == {"backbone": "ecapa_tdnn", "channels": 16, "num_classes": 5}
    assert info["embedding_size"] == 256
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "encoder.onnx"))
    rng = np.random.default_rng(0)
    for frames in (1, 37, 200, 513):                               # one graph, any number of frames
        x = rng.standard_normal((2, 1, 40, frames)).astype(np.float32)
        with torch.no_grad():
            expected = loaded(torch.from_numpy(x)).numpy()
        (onnx_out,) = session.run(None, {"features": x})
        np.testing.assert_allclose(onnx_out, expected, atol=1e-4, rtol=0)
    same = model_from_checkpoint({"state_dict": model.state_dict(), **model_fields(model)}).eval()
    x = torch.randn(2, 1, 40, 64)
    with torch.no_grad():
        assert torch.equal(same(x), model(x))


def test_trains_from_the_command_line_and_resumes(data_root):
    from tests.test_train import run_train
    folder = run_train(data_root, "--model", "ecapa_tdnn", "--channels", "16", "--max_epoch", "1")
    checkpoint = torch.load(folder / "checkpoint_001.pth", weights_only=True)
    assert "ecapa.stem.0.weight" in checkpoint["state_dict"] and checkpoint["state_dict"]["weight"].shape == (6, 256)
    assert json.loads((folder / "config.json").read_text())["model"] == "ecapa_tdnn"
    assert checkpoint["model"] == "ecapa_tdnn" and checkpoint["model_args"] == {"num_classes": 6, "channels": 16}
    run_train(data_root, "--model", "ecapa_tdnn", "--channels", "16", "--max_epoch", "2",
              "--use_checkpoint", "True", "--cp_num", "1")
    assert torch.load(folder / "checkpoint_002.pth", weights_only=True)["epoch"] == 2
    with pytest.raises(UserInputError, match="is a ecapa_tdnn but this run uses --model background_resnet"):
        run_train(data_root, "--channels", "16", "--max_epoch", "3", "--use_checkpoint", "True", "--cp_num", "2")
    with pytest.raises(UserInputError, match="--channels must be a multiple of 8 for --model ecapa_tdnn"):
        run_train(data_root, "--model", "ecapa_tdnn", "--channels", "12")
