"""The faithful core against the outputs of the paper's original code (tests/reference, or $META_SR_REFERENCE)."""
import json

import numpy as np
import soundfile as sf
import torch

from evaluation.metrics import compute_eer, compute_min_dcf
from feat_extract.fbank import log_mel_fbank
from model.loss import EpisodeObjective
from model.model import background_resnet


def load_reference_model(reference, train=False):
    model = background_resnet(num_classes=7, backbone="resnet34")
    model.load_state_dict(torch.load(reference / "model_sd.pth", weights_only=True), strict=True)
    return model.train(train)


def test_features_match_reference(reference):
    signal, rate = sf.read(reference / "golden.wav", dtype="int16")
    features = log_mel_fbank(signal, rate)
    expected = np.load(reference / "feat.npy")
    assert features.dtype == np.float32 and features.shape == expected.shape == (369, 40)
    np.testing.assert_allclose(features, expected, atol=1e-4, rtol=0)


def test_float_signal_gives_int16_features(reference):
    as_int16, rate = sf.read(reference / "golden.wav", dtype="int16")
    as_float, _ = sf.read(reference / "golden.wav", dtype="float32")
    np.testing.assert_allclose(log_mel_fbank(as_float, rate), log_mel_fbank(as_int16, rate), atol=1e-4)


def test_state_dict_keys_and_embeddings(reference):
    state = torch.load(reference / "model_sd.pth", weights_only=True)
    model = background_resnet(num_classes=7)
    assert list(model.state_dict()) == list(state) and len(state) == 223
    assert all(model.state_dict()[k].shape == v.shape for k, v in state.items())
    model = load_reference_model(reference)
    io = np.load(reference / "io.npz")
    with torch.no_grad():
        for name in ("200", "337"):
            embedding = model(torch.from_numpy(io["x" + name])).numpy()
            np.testing.assert_allclose(embedding, io["e" + name], atol=1e-4, rtol=0)


def episode_losses(reference, loss_type, use_gc):
    episode = np.load(reference / "episode.npz")
    support, query = (torch.from_numpy(episode[k]) for k in ("support", "query"))
    support = support - support.mean(dim=-1, keepdim=True)
    query = query - query.mean(dim=-1, keepdim=True)
    model = load_reference_model(reference, train=True)
    objective = EpisodeObjective(loss_type, use_gc)
    label_g = torch.from_numpy(episode["label_g"])
    query_embeddings = model(query) if loss_type == "prototypical" else query[:0, 0, 0, :0]
    return objective(model(support), query_embeddings, label_g, 4, model.weight)


def test_losses_match_reference(reference):
    expected = json.loads((reference / "losses.json").read_text())
    with torch.no_grad():
        proto_gc = episode_losses(reference, "prototypical", True)
        proto = episode_losses(reference, "prototypical", False)
        softmax = episode_losses(reference, "softmax", False)
    for key in ("loss", "loss_e", "loss_g"):
        assert abs(proto_gc[key].item() - expected["proto_gc"][key]) < 1e-4
    for key in ("loss", "loss_e"):
        assert abs(proto[key].item() - expected["proto"][key]) < 1e-4
    assert abs(softmax["loss"].item() - expected["softmax_on_support"]["loss"]) < 1e-4
    assert abs(softmax["acc_g"].item() - expected["softmax_on_support"]["acc"]) < 1e-6


def test_metrics_match_reference(reference):
    scores = np.load(reference / "scores.npz")
    expected = json.loads((reference / "eer.json").read_text())
    eer, _ = compute_eer(scores["labels"], scores["scores"])
    assert eer == expected["eer_percent"]
    for p_target in (0.01, 0.001):
        assert abs(compute_min_dcf(scores["labels"], scores["scores"], p_target)
                   - expected[f"mindcf_{p_target}"]) < 1e-9
