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
from tests.test_api import as_int16, run_in_process, run_script, tiny_checkpoint, voice_like
from tests.test_never_lose import tree_bytes

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


def refused_line(capsys, *argv) -> str:
    """The one ``error:`` line of a refused export.py (exit 2), the model never loaded."""
    result = run_in_process(export_cmd.main, capsys, *argv)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr and "wrote" not in result.stderr, result.stderr
    return errors[0]


def test_an_earlier_export_is_replaced_only_with_overwrite(tmp_path, capsys):
    """Issue 21: a second export into the same --out (another model's) silently replaced the first."""
    tiny_checkpoint(tmp_path / "a.pth", seed=0)
    tiny_checkpoint(tmp_path / "b.pth", seed=1)
    assert run_in_process(export_cmd.main, capsys, "--checkpoint", tmp_path / "a.pth", "--out", tmp_path / "o").returncode == 0
    (tmp_path / "o" / "notes.txt").write_text("the user's own file")
    before = tree_bytes(tmp_path)
    line = refused_line(capsys, "--checkpoint", tmp_path / "b.pth", "--out", tmp_path / "o")
    assert line == (f"error: --out {tmp_path / 'o'} already holds encoder.pt, encoder.onnx, encoder.json of an "
                    "earlier run; pass --overwrite to replace them, or choose another folder (nothing was written)")
    assert tree_bytes(tmp_path) == before
    result = run_in_process(export_cmd.main, capsys, "--checkpoint", tmp_path / "b.pth", "--out", tmp_path / "o",
                            "--format", "torchscript", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["encoder.json", "encoder.pt", "notes.txt"]
    assert json.loads((tmp_path / "o" / "encoder.json").read_text())["checkpoint"] == str(tmp_path / "b.pth")
    assert (tmp_path / "o" / "notes.txt").read_text() == "the user's own file"
    assert (tmp_path / "o" / "encoder.pt").read_bytes() != before[str(tmp_path / "o" / "encoder.pt")]
    assert not list((tmp_path / "o").glob(".*"))   # no temporary file left


@pytest.mark.parametrize("out, message", [
    ("model.onnx", "--out {t}/model.onnx: --out is a folder (export.py writes encoder.pt, encoder.onnx, encoder.json "
                   "into it), not a file name; give a folder such as {t}/model"),
    ("model.pt", "--out {t}/model.pt: --out is a folder"),
    ("afile", "--out {t}/afile is a file, not a folder; choose another (nothing was written)"),
    ("afile/sub", "--out {t}/afile/sub: {t}/afile is a file, not a folder (nothing was written)"),
])
def test_out_that_is_not_a_folder_is_refused(tmp_path, capsys, out, message):
    tiny_checkpoint(tmp_path / "a.pth")
    (tmp_path / "afile").write_text("a file")
    before = tree_bytes(tmp_path)
    line = refused_line(capsys, "--checkpoint", tmp_path / "a.pth", "--out", tmp_path / out, "--overwrite")
    assert line.startswith("error: " + message.format(t=tmp_path)), line
    assert tree_bytes(tmp_path) == before and not (tmp_path / "model.onnx").exists()
