"""A checkpoint whose pickle would run a command is refused everywhere, and the command never runs;
the authors' published checkpoint layout (bare state_dict, or {'epoch', 'state_dict', 'optimizer'})
still loads."""
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from common.errors import UserInputError
from model.checkpoint import load_checkpoint, load_encoder
from speaker_api import SpeakerEncoder
from tests.test_api import as_int16, run_script, voice_like


class RunsCommand:
    """Pickles as a call to ``os.system(command)``: loading it with full unpickling runs the command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class WritesFile:
    """Pickles as ``exec("open(path, 'w').write('owned')")``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').write('owned')",)


def malicious_checkpoint(path, payload):
    """The published layout with the payload hidden where the weights should be."""
    torch.save({"epoch": 100, "state_dict": {"fc1": payload}, "optimizer": {}}, path)
    return path


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "x-marker"


@pytest.fixture
def evil(tmp_path, marker):
    return malicious_checkpoint(tmp_path / "checkpoint_100.pth", RunsCommand(f"touch {marker}"))


def test_the_payload_is_real(tmp_path, marker):
    """Control: unpickling the file without weights_only really runs the command (so refusals count)."""
    control_marker = tmp_path / "control-marker"
    path = malicious_checkpoint(tmp_path / "control.pth", RunsCommand(f"touch {control_marker}"))
    torch.load(path, weights_only=False)
    assert control_marker.exists() and not marker.exists()


@pytest.mark.parametrize("load", [load_checkpoint, load_encoder,
                                  lambda p: SpeakerEncoder.from_checkpoint(p, device="cpu")])
def test_loaders_refuse_and_nothing_runs(evil, marker, tmp_path, load):
    with pytest.raises(UserInputError, match=r"checkpoint_100\.pth: not a loadable weights-only checkpoint"):
        load(evil)
    written = tmp_path / "owned.txt"
    with pytest.raises(UserInputError, match="weights-only"):
        load(malicious_checkpoint(tmp_path / "other.pth", WritesFile(written)))
    assert not marker.exists() and not written.exists()


def one_error_line(result):
    lines = result.stderr.strip().splitlines()
    return result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")


def test_commands_refuse_with_one_line_and_exit_2(evil, marker, tmp_path):
    sf.write(tmp_path / "a.wav", as_int16(voice_like()), 16000)
    commands = {
        "verify": ["verify.py", "--checkpoint", evil, "--threshold", "0.5", tmp_path / "a.wav", tmp_path / "a.wav"],
        "embed": ["embed.py", "--checkpoint", evil, "--out", tmp_path / "emb", tmp_path / "a.wav"],
        "export": ["export.py", "--checkpoint", evil, "--out", tmp_path / "exported"],
    }
    for name, command in commands.items():
        result = run_script(*command)
        assert one_error_line(result), (name, result.returncode, result.stderr)
        assert f"error: {evil}: not a loadable weights-only checkpoint" in result.stderr, name
        assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "emb").exists() and not (tmp_path / "exported").exists()


def test_eer_full_refuses_it_too(evil, marker, tmp_path):
    """The evaluation command, given real trial features, stops at the checkpoint before scoring."""
    features = tmp_path / "data" / "voxceleb1" / "test" / "feat" / "test_logfbank_nfilt40"
    for speaker in ("id10001", "id10002"):
        (features / speaker / "s1").mkdir(parents=True)
        np.save(features / speaker / "s1" / "00001.npy", np.random.default_rng(0).standard_normal((120, 40)))
    (tmp_path / "trials.txt").write_text("1 id10001/s1/00001.wav id10002/s1/00001.wav\n"
                                         "0 id10002/s1/00001.wav id10001/s1/00001.wav\n")
    result = run_script("EER_full.py", "--checkpoint", evil, "--save_path", tmp_path / "data",
                        "--trials", tmp_path / "trials.txt", "--use_cuda", "False")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {evil}: not a loadable weights-only")
    assert not marker.exists() and not list(tmp_path.glob("eer_full_*"))


def test_published_layout_loads_through_the_api(reference, tmp_path):
    """The reference model_sd.pth has the 223 keys of the authors' published checkpoint."""
    state = torch.load(reference / "model_sd.pth", weights_only=True)
    io = np.load(reference / "io.npz")
    bare = SpeakerEncoder.from_checkpoint(reference / "model_sd.pth", device="cpu")
    # the original code writes {'epoch': epoch + 1, ...} into checkpoint_{epoch}.pth
    torch.save({"epoch": 31, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}},
               tmp_path / "checkpoint_030.pth")
    wrapped = SpeakerEncoder.from_checkpoint(tmp_path / "checkpoint_030.pth", device="cpu")
    assert (bare.epoch, wrapped.epoch) == (None, 30)
    assert wrapped.model.num_classes == 7 and wrapped.model.channels == 32
    with torch.no_grad():   # io.npz inputs are raw (not mean-normalised): compare the bare model
        np.testing.assert_allclose(bare.model(torch.from_numpy(io["x337"])).numpy(), io["e337"], atol=1e-4)
        np.testing.assert_allclose(wrapped.model(torch.from_numpy(io["x200"])).numpy(), io["e200"], atol=1e-4)
        x = io["x200"][0, 0] - io["x200"][0, 0].mean(axis=1, keepdims=True)   # embed_features removes the mean
        by_hand = wrapped.model(torch.from_numpy(np.ascontiguousarray(x))[None, None])[0].numpy()
    np.testing.assert_allclose(wrapped.embed_features(io["x200"][0, 0].T), by_hand, atol=1e-5)


def test_golden_wav_through_the_api_matches_reference_features(reference):
    encoder = SpeakerEncoder.from_checkpoint(reference / "model_sd.pth", device="cpu")
    features = encoder.features(reference / "golden.wav")
    reference_features = np.load(reference / "feat.npy")
    np.testing.assert_allclose(features, reference_features, atol=1e-4)
    np.testing.assert_allclose(encoder.embed(reference / "golden.wav"),
                               encoder.embed_features(reference_features), rtol=1e-4, atol=1e-4)
