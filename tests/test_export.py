"""export.py: TorchScript and ONNX encoders accept any frame count and match PyTorch to 1e-4."""
import json

import numpy as np
import onnx
import onnxruntime
import pytest
import soundfile as sf
import torch

import export as export_cmd
from common.errors import UserInputError
from speaker_api import SpeakerEncoder
from tests.conftest import TINY_MODEL_ARGS, registered_models
from tests.test_api import as_int16, run_script, tiny_checkpoint, voice_like

FRAME_COUNTS = (1, 37, 200, 513)


BACKBONE = {"background_resnet": "resnet34", "ecapa_tdnn": "ecapa_tdnn"}   # what encoder.json names


@pytest.fixture(scope="module", params=registered_models())
def exported(tmp_path_factory, request):
    """A tiny checkpoint of each registered model, exported."""
    folder = tmp_path_factory.mktemp("export")
    model = tiny_checkpoint(folder / "checkpoint_007.pth", seed=4, epoch=7, name=request.param)
    info = export_cmd.main(["--checkpoint", str(folder / "checkpoint_007.pth"), "--out", str(folder / "out")])
    return model, folder, info


def pytorch_embeddings(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("frames", FRAME_COUNTS)
def test_onnx_and_torchscript_match_pytorch(exported, frames):
    model, folder, _ = exported
    x = np.random.default_rng(frames).standard_normal((2, 1, 40, frames)).astype(np.float32)
    expected = pytorch_embeddings(model, x)
    session = onnxruntime.InferenceSession(str(folder / "out" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(["embedding"], {"features": x})
    assert onnx_out.shape == (2, 256)
    np.testing.assert_allclose(onnx_out, expected, rtol=1e-4, atol=1e-4)
    scripted = torch.jit.load(str(folder / "out" / "encoder.pt"))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(torch.from_numpy(x)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_onnx_graph_has_dynamic_batch_and_frames(exported):
    graph = onnx.load(str(exported[1] / "out" / "encoder.onnx"))
    onnx.checker.check_model(graph)
    assert max(opset.version for opset in graph.opset_import if opset.domain in ("", "ai.onnx")) >= 17
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 40, "frames"]
    assert [d.dim_param or d.dim_value for d in graph.graph.output[0].type.tensor_type.shape.dim] == ["batch", 256]


def test_metadata_describes_inputs_and_recipe(exported):
    model, folder, info = exported
    saved = json.loads((folder / "out" / "encoder.json").read_text())
    assert saved == json.loads(json.dumps(info))
    assert saved["input"]["shape"] == ["batch", 1, 40, "frames"] and saved["embedding_size"] == 256
    assert saved["sample_rate"] == 16000 and saved["epoch"] == 7
    name = saved["model"]
    assert saved["encoder"] == {"backbone": BACKBONE[name], "num_classes": 5, **TINY_MODEL_ARGS[name]}
    assert saved["model_args"] == dict(model.model_args)
    recipe = saved["feature_recipe"]
    assert (recipe["n_mels"], recipe["win_length_s"], recipe["win_step_s"], recipe["n_fft"]) == (40, 0.025, 0.01, 512)
    assert saved["files"]["onnx"]["file"] == "encoder.onnx" and saved["files"]["torchscript"]["file"] == "encoder.pt"
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["encoder.json", "encoder.onnx", "encoder.pt"]


def test_onnx_on_a_recording_equals_the_api(exported, tmp_path):
    """A deployment that reproduces the feature recipe gets the API's embedding from the ONNX file."""
    _, folder, _ = exported
    sf.write(tmp_path / "a.wav", as_int16(voice_like(seconds=1.3, seed=21)), 16000)
    encoder = SpeakerEncoder.from_checkpoint(folder / "checkpoint_007.pth", device="cpu")
    features = encoder.features(tmp_path / "a.wav")
    session = onnxruntime.InferenceSession(str(folder / "out" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"features": np.ascontiguousarray(features.T)[None, None]})
    np.testing.assert_allclose(onnx_out[0], encoder.embed(tmp_path / "a.wav"), rtol=1e-4, atol=1e-4)


def test_export_command_single_format_and_bad_choice(tmp_path):
    tiny_checkpoint(tmp_path / "model.pth")
    result = run_script("export.py", "--checkpoint", tmp_path / "model.pth", "--out", tmp_path / "o",
                        "--format", "onnx")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["encoder.json", "encoder.onnx"]
    assert f"wrote {tmp_path / 'o' / 'encoder.onnx'} (onnx, opset 17)" in result.stderr
    with pytest.raises(UserInputError, match=f"^checkpoint not found: {tmp_path / 'missing.pth'}$"):
        export_cmd.main(["--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "p")])
    assert not (tmp_path / "p").exists()
