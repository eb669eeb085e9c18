"""The encoder interface (model/encoder.py) on every registered model: sizes, argument checks, and
the exact-chunking hook agreeing with ``forward``; nothing outside model/ names a network's internals."""
import re

import pytest
import torch

from model.encoder import ChunkGeometry, Encoder
from model.registry import MODELS
from tests.conftest import ROOT, tiny_encoder


def test_every_registered_model_is_an_encoder():
    assert MODELS and all(issubclass(cls, Encoder) for cls in MODELS.values())


def test_sizes_and_arguments_of_every_model(model_name):
    model = tiny_encoder(model_name, num_classes=3)
    with torch.no_grad():
        out = model(torch.randn(2, 1, 40, 57))
    assert model.embedding_size == 256 == out.shape[1] == model.weight.shape[1]
    assert model.model_args["num_classes"] == 3 == model.num_classes
    bad = [((torch.randn(2, 40, 57),), r"^encoder input must be \(batch, 1, n_mels, frames\) .* got \[2, 40, 57\]$"),
           ((torch.randn(2, 2, 40, 57),), r"got \[2, 2, 40, 57\]$"),
           ((torch.randn(2, 1, 40, 57), torch.tensor([57])), r"one valid-frame count per item: \[1\] for a batch of 2$"),
           ((torch.randn(2, 1, 40, 57), torch.tensor([57, 58])), r"between 1 and the input's 57 frames$"),
           ((torch.randn(2, 1, 40, 57), torch.tensor([0, 57])), r"between 1 and the input's 57 frames$")]
    for args, message in bad:
        with pytest.raises(ValueError, match=message):
            model(*args)


def test_chunking_hook_agrees_with_forward(model_name):
    """A chunkable model's embedding is embed_from_pooled(mean of frame_maps), bit for bit; one that is
    not says so (None) and has no hook to misuse."""
    model = tiny_encoder(model_name, num_classes=3, seed=1)
    x = torch.randn(2, 1, 40, 203)
    geometry = model.chunk_geometry()
    if geometry is None:
        with pytest.raises(NotImplementedError, match="cannot be chunked exactly"):
            model.frame_maps(x)
        return
    assert isinstance(geometry, ChunkGeometry) and geometry.stride >= 1 and geometry.radius >= 0
    with torch.no_grad():
        maps = model.frame_maps(x)
        assert maps.shape[-1] == model.output_frames(203)
        assert torch.equal(model.embed_from_pooled(maps.mean(dim=(2, 3))), model(x))


def test_mixed_lengths_under_bf16_autocast_are_the_float32_embeddings_within_bf16_rounding(model_name):
    """``--eval_precision bf16`` on a batch of utterances of several lengths (EER_full.py's masked pass):
    every model returns float32 rows near its float32 ones (ECAPA's per-length rows used to fail to
    land in the float32 output: ``Index put requires the source and destination dtypes match``)."""
    import numpy as np

    from evaluation.embedding import embed_utterances
    from evaluation.precision import with_precision
    model = tiny_encoder(model_name, num_classes=3, seed=2).eval()
    rng = np.random.default_rng(0)
    items = [rng.standard_normal((frames, 40)).astype(np.float32) for frames in (90, 120, 120, 200)]
    fp32 = embed_utterances(model, items, torch.device("cpu"), batch_size=4, desc="")
    bf16 = embed_utterances(with_precision(model, "bf16"), items, torch.device("cpu"), batch_size=4, desc="")
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape == (4, 256)
    assert np.abs(bf16 - fp32).max() < 0.03 * np.abs(fp32).max()   # measured 0.9 % (ResNet), 0.6 % (ECAPA)


def test_ecapa_says_it_cannot_be_chunked_and_needs_40_filters():
    model = tiny_encoder("ecapa_tdnn", num_classes=2)
    assert model.chunk_geometry() is None
    with pytest.raises(ValueError, match="^this encoder takes 40 mel filters, got 64$"):
        model(torch.randn(1, 1, 64, 30))


def test_nothing_outside_model_names_a_resnet_internal():
    """fc1, the trunk (pretrained.*), avg_bn and the class itself stay inside model/ (tests and the
    authors' checkpoint check in prep/pretrained.py, which is that ResNet by definition, aside)."""
    internals = re.compile(r"\.fc1\b|\.pretrained\b|\bavg_bn\b|\bbackground_resnet\(")
    found = []
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT).as_posix()
        if relative.split("/")[0] in ("model", "tests", ".venv") or relative == "prep/pretrained.py":
            continue
        found += [f"{relative}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1) if internals.search(line)]
    assert found == []
