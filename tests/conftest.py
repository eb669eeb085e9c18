import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the original code's outputs, kept in the repository (tests/reference); $META_SR_REFERENCE points elsewhere
REFERENCE = Path(os.environ.get("META_SR_REFERENCE", ROOT / "tests" / "reference"))


@pytest.fixture(scope="session")
def reference() -> Path:
    assert (REFERENCE / "README.md").is_file(), (
        f"reference outputs not found at {REFERENCE}; set META_SR_REFERENCE to the folder")
    return REFERENCE


def write_random_features(root, n_speakers=6, n_utterances=5, frames=(150, 400), seed=0,
                          dtype="float32"):
    """A tiny ``<speaker>/<session>/<utt>.npy`` feature corpus; each file's first frame-row encodes
    (speaker, utterance) so tests can tell which utterance a crop came from."""
    import numpy as np
    rng = np.random.default_rng(seed)
    root = Path(root)
    for s in range(n_speakers):
        for u in range(n_utterances):
            n_frames = int(rng.integers(*frames)) if isinstance(frames, tuple) else int(frames)
            features = rng.standard_normal((n_frames, 40)).astype(dtype)
            path = root / f"id{s:05d}" / f"session{u % 2}" / f"{u:05d}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, features)
    return root


@pytest.fixture
def feature_corpus(tmp_path):
    return write_random_features(tmp_path / "feat")


TRAIN_FEATURES = "voxceleb2/dev/feat/train_logfbank_nfilt40"


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models gain nothing from threads on a 2-core machine; oversubscription stalls them."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data_root(tmp_path):
    """A data root with tiny VoxCeleb2-dev training features (6 speakers x 5 utterances)."""
    write_random_features(tmp_path / "data" / TRAIN_FEATURES, n_speakers=6, n_utterances=5,
                          frames=(150, 300))
    return tmp_path


# The smallest width each registered model (model.registry.MODELS) is tested at. Tests that take the
# ``model_name`` fixture run once per registered model, so a new backbone is proven by the same API /
# verify / embed / score / export / long-recording / resume tests: add its tiny arguments here.
TINY_MODEL_ARGS = {"background_resnet": {"channels": 4}, "ecapa_tdnn": {"channels": 16}}


def registered_models() -> list:
    from model.registry import MODELS
    return sorted(MODELS)


@pytest.fixture(params=registered_models())
def model_name(request) -> str:
    return request.param


def tiny_encoder(name: str, num_classes: int, seed: int = 0):
    """A ``name`` encoder at its tiny width with non-trivial BatchNorm running statistics, in eval mode."""
    import torch
    from model.registry import build_model
    torch.manual_seed(seed)
    model = build_model(name, num_classes=num_classes, **TINY_MODEL_ARGS[name])
    with torch.no_grad():
        model.train()(torch.randn(2, 1, 40, 120))   # move the running stats away from (0, 1)
    return model.eval()
