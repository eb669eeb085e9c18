"""Issue 16, "tests that let real bugs through": four deliberate one-line mistakes passed the whole suite.
Each test here fails for one of them (checked by making the mistake):

- query lengths drawn from [100, 201) instead of [100, 200)    -> test_variable_query_lengths_are_exactly_100_to_199
- the fbank log floor 1e-5 changed to 1e-6                     -> test_features_of_a_signal_with_digital_silence_equal_a_hand_computation
- the EER threshold taken one ROC point off                    -> test_eer_threshold_gives_the_reported_eer_on_the_reference_scores
- ReduceLROnPlateau stepped on the episodic loss in a GC run   -> test_scheduler_follows_the_total_loss_in_a_gc_run
"""
import csv
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

import train
from data_loading.corpus import FeatureCorpus
from data_loading.episodes import EpisodeConfig, episode_rng, plan_episode
from evaluation.metrics import compute_eer
from feat_extract.fbank import log_mel_fbank
from tests.conftest import write_random_features


def test_variable_query_lengths_are_exactly_100_to_199(tmp_path):
    """The paper's queries are 1-2 s: 100..199 frames, each length possible, 200 never."""
    corpus = FeatureCorpus(write_random_features(tmp_path / "feat", n_speakers=4, n_utterances=3, frames=260))
    config = EpisodeConfig(n_way=2, n_shot=1, n_query=1, variable_query=True)
    lengths = {plan_episode(corpus, config, episode_rng(seed=5, epoch=1, episode=i)).query_frames
               for i in range(3000)}
    assert lengths == set(range(100, 200))


def hand_log_mel(samples: np.ndarray) -> np.ndarray:
    """The paper's features written out from their definition (no python_speech_features):
    pre-emphasis 0.97, 400-sample Hamming frames every 160 (last frame zero-padded), |FFT 512|^2 / 512,
    40 triangular mel filters over 0-8 kHz, 20*log10(max(energy, 1e-5)), per-filter mean removed."""
    emphasised = np.append(samples[0], samples[1:] - 0.97 * samples[:-1])
    n_frames = 1 + int(np.ceil((len(emphasised) - 400) / 160))
    padded = np.concatenate([emphasised, np.zeros((n_frames - 1) * 160 + 400 - len(emphasised))])
    frames = np.stack([padded[i * 160:i * 160 + 400] for i in range(n_frames)]) * np.hamming(400)
    power = np.abs(np.fft.rfft(frames, 512)) ** 2 / 512
    mel = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 42)
    bins = np.floor(513 * (700 * (10 ** (mel / 2595) - 1)) / 16000).astype(int)
    filters = np.zeros((40, 257))
    for j in range(40):
        low, centre, high = bins[j], bins[j + 1], bins[j + 2]
        filters[j, low:centre] = (np.arange(low, centre) - low) / (centre - low)
        filters[j, centre:high] = (high - np.arange(centre, high)) / (high - centre)
    energies = power @ filters.T
    log_energies = 20 * np.log10(np.maximum(energies, 1e-5))
    return log_energies - log_energies.mean(axis=0)


def test_features_of_a_signal_with_digital_silence_equal_a_hand_computation():
    """Half a second of exact zeros (a gap between two bursts of speech-like sound): the silent frames
    sit on the log floor, -100 dB, and the floor moves every frame's mean-normalised value."""
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    voiced = np.round(3000 * np.sin(2 * np.pi * 150 * t) + 300 * rng.standard_normal(t.size))
    samples = np.concatenate([voiced, np.zeros(8000), voiced]).astype(np.int16)
    expected = hand_log_mel(samples.astype(np.float64))
    features = log_mel_fbank(samples)
    assert features.shape == expected.shape == (149, 40)
    silent = slice(51, 98)  # frames 51..97 lie wholly in the zeros (sample 8000 carries pre-emphasis)
    assert np.all(expected[silent] == expected[silent][0])  # the floor, the same in every silent frame
    np.testing.assert_allclose(features, expected, atol=1e-3)


def test_eer_threshold_gives_the_reported_eer_on_the_reference_scores(reference):
    """Accepting scores >= the returned threshold on the original's 2,000 scores: the false-alarm rate is
    the reported EER (the threshold is the one of the EER's ROC point, not a neighbour's)."""
    data = np.load(reference / "scores.npz")
    labels, scores = data["labels"], data["scores"]
    expected = json.loads((reference / "eer.json").read_text())["eer_percent"]
    eer, threshold = compute_eer(labels, scores)
    assert eer == expected
    false_alarm = np.mean(scores[labels == 0] >= threshold)
    miss = np.mean(scores[labels == 1] < threshold)
    assert 100 * false_alarm == pytest.approx(expected, abs=1e-12)
    # the original's EER point: of sklearn's ROC thresholds, the one where miss and false alarm are
    # closest (rates computed here by counting); a neighbouring point has the same false-alarm rate
    # (0.17267) but a miss rate of 0.170 instead of 0.172
    candidates = roc_curve(labels, scores)[2]
    gaps = [abs(np.mean(scores[labels == 1] < t) - np.mean(scores[labels == 0] >= t)) for t in candidates]
    assert abs(miss - false_alarm) == pytest.approx(min(gaps), abs=1e-12)
    assert miss == pytest.approx(0.172, abs=1e-12)


def test_scheduler_follows_the_total_loss_in_a_gc_run(data_root):
    """ReduceLROnPlateau watches the total loss (episodic + global): its ``best`` is the smallest value
    of the ``loss`` column, not of ``loss_e`` or ``loss_g``."""
    train.main(["--save_path", str(data_root / "data"), "--model_dir", str(data_root / "models"),
                "--loss_type", "prototypical", "--use_GC", "True", "--channels", "4", "--nb_class_train", "3",
                "--n_episode", "2", "--workers", "0", "--max_epoch", "3", "--lr", "0.05"])
    folder = data_root / "models/baseline_000"
    with open(folder / "train_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    totals = [float(row["loss"]) for row in rows]
    assert len(totals) == 3 and all(float(r["loss_g"]) > 0.1 for r in rows)  # GC really adds to the total
    best = torch.load(folder / "checkpoint_003.pth", weights_only=True)["scheduler"]["best"]
    assert best == pytest.approx(min(totals), abs=1e-6)
