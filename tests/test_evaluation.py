"""Evaluation library: reference EER, exact batching, trial lists, feature checks, short-utterance
trials, identification, AS-norm and DET plots (tiny models, CPU)."""
import json
import struct

import numpy as np
import pytest
import torch
from scipy.stats import norm

from data_loading.corpus import FeatureCorpus
from common.errors import UserInputError
from evaluation import cli
from evaluation.embedding import embed_crops, embed_utterances
from evaluation.episodes_eval import (IdentificationConfig, episode_accuracy, mean_confidence,
                                      run_identification)
from evaluation.metrics import compute_eer, compute_min_dcf, roc
from evaluation.plots import DPI, FIGSIZE, plot_det
from evaluation.score_norm import as_norm, top_k_stats
from evaluation.short_utterance import doubled_frames, make_short_trials, score_short_trials
from evaluation.trials import locate_features, read_trials
from feat_extract.features import read_crop, read_features
from model.checkpoint import model_from_state_dict
from model.model import background_resnet
from tests.conftest import write_random_features




@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = background_resnet(num_classes=5, channels=4)
    model.train()
    with torch.no_grad():   # non-trivial BatchNorm running statistics
        model(torch.randn(6, 1, 40, 120))
    return model.eval()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = write_random_features(tmp_path_factory.mktemp("feat"), n_speakers=4, n_utterances=4,
                                 frames=(60, 260), seed=3)
    return FeatureCorpus(root)


# ---------------------------------------------------------------- metrics and score files
def test_reference_eer_through_score_file(reference, tmp_path, capsys):
    data = np.load(reference / "scores.npz")
    expected = json.loads((reference / "eer.json").read_text())
    names = [f"id{i:05d}/s/00001.wav" for i in range(len(data["labels"]))]
    cli.write_scores(tmp_path / "scores.txt", data["labels"], data["scores"], names, names)
    labels, scores = cli.read_scores(tmp_path / "scores.txt")
    assert np.array_equal(scores, data["scores"])      # the file keeps scores exactly
    report = cli.evaluate_scores(labels, scores)
    assert report["eer"] == expected["eer_percent"]
    assert report["mindcf_0.01"] == pytest.approx(expected["mindcf_0.01"], abs=1e-12)
    assert report["mindcf_0.001"] == pytest.approx(expected["mindcf_0.001"], abs=1e-12)
    assert f"EER: {expected['eer_percent']:.6f} %" in capsys.readouterr().out


# ---------------------------------------------------------------- embeddings
def test_masked_batch_matches_reference_outputs(reference):
    state = torch.load(reference / "model_sd.pth", weights_only=True)
    model = model_from_state_dict(state).eval()
    io = np.load(reference / "io.npz")
    padded = torch.zeros(3, 1, 40, 337)
    padded[0, :, :, :337] = torch.from_numpy(io["x337"][0])
    padded[1:, :, :, :200] = torch.from_numpy(io["x200"])
    with torch.no_grad():
        out = model(padded, torch.tensor([337, 200, 200])).numpy()   # the model's exact masked pass
    np.testing.assert_allclose(out[0], io["e337"][0], atol=1e-4)
    np.testing.assert_allclose(out[1:], io["e200"], atol=1e-4)


def test_batched_embeddings_equal_one_by_one(tiny_model, corpus):
    paths = [utt.path for utt in corpus.utterances[::2]]
    batched = embed_utterances(tiny_model, paths, "cpu", batch_size=5)
    with torch.no_grad():
        for path, row in zip(paths, batched):
            features = np.load(path)
            features = features - features.mean(axis=0)
            single = tiny_model(torch.from_numpy(features.T[None, None].copy()))[0].numpy()
            np.testing.assert_allclose(row, single, atol=1e-4)
    crops = [np.load(p)[:50] for p in paths]
    np.testing.assert_allclose(embed_crops(tiny_model, crops, "cpu", batch_size=5),
                               embed_crops(tiny_model, crops, "cpu", batch_size=1), atol=1e-4)


def test_truncated_and_non_numeric_feature_files_are_named(tmp_path):
    np.save(tmp_path / "cut.npy", np.zeros((100, 40), np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:5000])
    (tmp_path / "text.npy").write_bytes(b"hello, I am not numbers")
    np.save(tmp_path / "words.npy", np.array([["a"] * 40] * 3))
    for name, message in (("cut", "truncated feature file"), ("text", "not a readable .npy"),
                          ("words", "must be a C-order float array")):
        with pytest.raises(UserInputError, match=message) as error:
            read_features(tmp_path / f"{name}.npy")
        assert str(tmp_path / f"{name}.npy") in str(error.value)


def test_nan_and_wrong_filters_are_refused(tmp_path):
    np.save(tmp_path / "nan.npy", np.full((30, 40), np.nan, np.float32))
    np.save(tmp_path / "f41.npy", np.zeros((30, 41), np.float32))
    with pytest.raises(UserInputError, match="NaN or infinite"):
        read_features(tmp_path / "nan.npy")
    with pytest.raises(UserInputError, match=r"shape \(frames, 40\), found \(30, 41\) \(wrong number of filters\?\)"):
        read_features(tmp_path / "f41.npy")


# ---------------------------------------------------------------- trial lists
def test_trial_list_crlf_blank_lines_no_final_newline(tmp_path):
    path = tmp_path / "trials.txt"
    path.write_bytes(b"1 a/b/1.wav a/c/2.wav\r\n\r\n  \r\n0 a/b/1.wav d/e/3.wav\r\n1 d/e/3.wav d/f/4.wav")
    trials = read_trials(path)
    assert trials.labels.tolist() == [1, 0, 1]
    assert trials.test == ["a/c/2.wav", "d/e/3.wav", "d/f/4.wav"]
    assert trials.utterances() == ["a/b/1.wav", "a/c/2.wav", "d/e/3.wav", "d/f/4.wav"]


@pytest.mark.parametrize("bad_line", ["2 a/b/1.wav a/c/2.wav", "1 a/b/1.wav", "1 ../x/1.wav a/c/2.wav"])
def test_malformed_trial_line_reports_line_number(tmp_path, bad_line):
    path = tmp_path / "trials.txt"
    path.write_bytes(f"1 a/b/1.wav a/c/2.wav\r\n\r\n{bad_line}\r\n".encode())
    with pytest.raises(UserInputError, match=r"line 3"):
        read_trials(path)


def test_missing_features_listed_first_few(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    np.save(tmp_path / "a" / "b" / "1.npy", np.zeros((5, 40), np.float32))
    names = ["a/b/1.wav"] + [f"x/y/{i}.wav" for i in range(8)]
    with pytest.raises(UserInputError, match=r"8 of 9 utterances .*x/y/0.wav, x/y/1.wav, x/y/2.wav, "
                                             r"x/y/3.wav, x/y/4.wav, \.\.\.$"):
        locate_features(names, [tmp_path])
    assert locate_features(names[:1], [tmp_path / "none", tmp_path]) == {"a/b/1.wav": tmp_path / "a/b/1.npy"}


# ---------------------------------------------------------------- short-utterance protocol
def test_short_trials_follow_the_protocol(corpus):
    trials = make_short_trials(corpus, 100, pairs_per_speaker=6, seed=5)
    speaker = np.array([corpus.label(i) for i in range(len(corpus))])
    assert len(trials) == 4 * 12 and trials.label.sum() == 24
    target = trials.label == 1
    assert (speaker[trials.enroll] == speaker[trials.test])[target].all()
    assert (trials.enroll != trials.test)[target].all()
    assert (speaker[trials.enroll] != speaker[trials.test])[~target].all()
    frames = np.array([corpus.utterances[i].n_frames for i in trials.test])
    assert ((trials.start >= 0) & (trials.start + 100 < doubled_frames(frames, 100) + 1)).all()
    again = make_short_trials(corpus, 100, pairs_per_speaker=6, seed=5)
    for field in ("enroll", "test", "start", "label"):
        assert np.array_equal(getattr(trials, field), getattr(again, field))
    other_length = make_short_trials(corpus, 50, pairs_per_speaker=6, seed=5)
    assert np.array_equal(other_length.test, trials.test)    # same pairs for every test length
    assert not np.array_equal(make_short_trials(corpus, 100, 6, seed=6).test, trials.test)


def test_doubling_and_crop_as_the_original(tmp_path):
    assert doubled_frames([50, 100, 101, 30], 100).tolist() == [200, 200, 101, 120]
    features = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    np.save(tmp_path / "u.npy", features)
    crop = read_crop(tmp_path / "u.npy", 25, 10, wrap="double")       # frames 25..29 then 0..4 of the doubled utterance
    np.testing.assert_array_equal(crop, features[[25, 26, 27, 28, 29, 0, 1, 2, 3, 4]])


def test_short_scores_independent_of_batch_size_and_equal_per_trial(tiny_model, corpus):
    trials = make_short_trials(corpus, 80, pairs_per_speaker=3, seed=1)
    cache = {}
    batched = score_short_trials(tiny_model, corpus, trials, "cpu", batch_size=16, enroll_embeddings=cache)
    assert sorted(cache) == sorted(set(trials.enroll.tolist()))   # one embedding per enrolment utterance
    single = score_short_trials(tiny_model, corpus, trials, "cpu", batch_size=1)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    with torch.no_grad():   # the original's strategy: embed both sides of trial 0 from scratch
        enroll = np.load(corpus.utterances[trials.enroll[0]].path)
        test = read_crop(corpus.utterances[trials.test[0]].path, int(trials.start[0]), 80, wrap="double")
        a, b = (tiny_model(torch.from_numpy((x - x.mean(0)).T[None, None].copy())) for x in (enroll, test))
        assert batched[0] == pytest.approx(torch.nn.functional.cosine_similarity(a, b).item(), abs=1e-5)


# ---------------------------------------------------------------- identification
def test_episode_accuracy_by_hand():
    support = np.array([[1, 0], [0, 1], [1, 0.2], [0.2, 1]])  # shot-major: shots 1 and 2 of classes 0, 1
    query = np.array([[1, 0.1], [1, 0.9], [0.3, 1], [0.9, 0.5]])  # classes 0, 1, 0, 1
    # prototypes (1, .1) and (.1, 1); predictions 0, 0, 1, 0 for true classes 0, 1, 0, 1: one of four right
    assert episode_accuracy(support, query, n_way=2) == pytest.approx(25.0)
    mean, ci95 = mean_confidence([50.0, 100.0])
    assert mean == 75.0 and ci95 == pytest.approx(1.96 * 25.0 / np.sqrt(2))


class EnergyPerFilter(torch.nn.Module):
    """A stand-in encoder: the mean energy of each filter, so a speaker's loud filter is its identity."""

    def forward(self, x):
        return x.pow(2).mean(dim=3).flatten(1)


def test_identification_on_separable_speakers(tmp_path):
    rng = np.random.default_rng(0)
    for speaker in range(5):
        for utt in range(4):
            features = 0.1 * rng.standard_normal((150, 40)).astype(np.float32)
            features[:, speaker] += 3 * np.sign(rng.standard_normal(150))
            path = tmp_path / f"id{speaker:05d}" / "s" / f"{utt}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, features)
    corpus = FeatureCorpus(tmp_path)
    config = IdentificationConfig(n_way=5, n_shot=2, n_query=2, enroll_length=120, test_length=40)
    accuracies = run_identification(EnergyPerFilter(), corpus, config, 3, "cpu", seed=0, batch_size=4)
    assert accuracies.tolist() == [100.0, 100.0, 100.0]
    with pytest.raises(UserInputError, match="needs 6 speakers"):
        run_identification(EnergyPerFilter(), corpus, IdentificationConfig(6, 1, 1, 50, 50), 1, "cpu")


# ---------------------------------------------------------------- AS-norm
def test_asnorm_by_hand():
    cohort = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    enroll = np.array([[1.0, 0.0]])            # cohort cosines 1, 0, -1 -> top-2 {1, 0}: mean .5, std .5
    test = np.array([[0.6, 0.8]])              # cohort cosines .6, .8, -.6 -> top-2 {.8, .6}: mean .7, std .1
    mean_e, std_e = top_k_stats(enroll, cohort, 2)
    mean_t, std_t = top_k_stats(test, cohort, 2)
    assert (mean_e[0], std_e[0], mean_t[0], std_t[0]) == pytest.approx((0.5, 0.5, 0.7, 0.1))
    raw = np.array([0.6])                      # cosine(enroll, test)
    expected = 0.5 * ((0.6 - 0.5) / 0.5 + (0.6 - 0.7) / 0.1)   # = 0.5 * (0.2 - 1.0) = -0.4
    assert as_norm(raw, (mean_e, std_e), (mean_t, std_t))[0] == pytest.approx(expected)
    with pytest.raises(UserInputError, match="--cohort_size 4"):
        top_k_stats(enroll, cohort, 4)


# ---------------------------------------------------------------- DET plots
def png_size(path) -> tuple:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_det_plot_points_are_the_roc(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(300), np.zeros(300)].astype(int)
    curves = [(name, labels, np.r_[rng.normal(shift, 1, 300), rng.normal(0, 1, 300)])
              for name, shift in (("1 s", 1.0), ("5 s", 3.0))]
    points = plot_det(curves, tmp_path / "det.png")
    assert png_size(tmp_path / "det.png") == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)
    for (_, lab, scores), drawn in zip(curves, points):
        curve = roc(lab, scores)
        np.testing.assert_allclose(drawn["x"], norm.ppf(np.clip(curve.false_alarm, 1e-4, 1 - 1e-4)))
        np.testing.assert_allclose(drawn["y"], norm.ppf(np.clip(curve.miss, 1e-4, 1 - 1e-4)))
        eer = 100 * norm.cdf(drawn["x"][drawn["eer_index"]])
        assert eer == pytest.approx(compute_eer(lab, scores)[0])
        index = drawn["dcf_index"]
        dcf = (0.01 * curve.miss[index] + 0.99 * curve.false_alarm[index]) / 0.01
        assert dcf == pytest.approx(compute_min_dcf(lab, scores, 0.01))
