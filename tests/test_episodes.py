import numpy as np
import pytest
import torch

from common.errors import UserInputError
from data_loading.corpus import FeatureCorpus
from data_loading.episodes import EpisodeConfig, EpisodeDataset, episode_rng, plan_episode
from feat_extract.features import read_crop
from tests.conftest import write_random_features


def test_corpus_lists_speakers_and_frame_counts(feature_corpus):
    corpus = FeatureCorpus(feature_corpus)
    assert corpus.n_speakers == 6 and len(corpus) == 30
    assert corpus.speakers == sorted(corpus.speakers)
    first = corpus.utterances[0]
    assert first.n_frames == np.load(first.path).shape[0]
    assert first.key == "id00000/session0/00000"


def test_episode_is_shot_major_with_distinct_utterances(feature_corpus):
    corpus = FeatureCorpus(feature_corpus)
    config = EpisodeConfig(n_way=4, n_shot=2, n_query=3, variable_query=True)
    plan = plan_episode(corpus, config, episode_rng(1, 0, 0))
    labels = plan.label_g.reshape(5, 4)        # (samples per class, n_way)
    assert (labels == labels[0]).all() and len(set(labels[0])) == 4
    for column in range(4):
        utts = plan.utterances.reshape(5, 4)[:, column]
        assert len(set(utts)) == 5
        assert {corpus.label(u) for u in utts} == {labels[0, column]}
    assert plan.support_frames == 200 and 100 <= plan.query_frames < 200


def test_dataset_tensors_and_reproducibility(feature_corpus):
    corpus = FeatureCorpus(feature_corpus)
    config = EpisodeConfig(n_way=3, n_shot=1, n_query=2, variable_query=True)
    dataset = EpisodeDataset(corpus, config, n_episodes=4, seed=7)
    episode = dataset[2]
    assert episode["support"].shape == (3, 1, 40, 200)
    n_frames = episode["query"].shape[-1]
    assert episode["query"].shape == (6, 1, 40, n_frames) and 100 <= n_frames < 200
    torch.testing.assert_close(episode["support"].mean(dim=-1), torch.zeros(3, 1, 40), atol=1e-5, rtol=0)
    classes = episode["label_g"][:3].tolist()          # shot-major: support, then each query shot
    assert episode["label_g"].tolist() == classes * 3 and sorted(episode) == ["label_g", "query", "support"]
    again = EpisodeDataset(corpus, config, n_episodes=4, seed=7)[2]
    for key in episode:
        assert torch.equal(episode[key], again[key])
    assert not torch.equal(dataset[3]["support"], episode["support"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[2]["support"], episode["support"])


def test_crop_reads_the_right_frames_and_tiles_short_utterances(tmp_path):
    features = np.arange(50 * 40, dtype=np.float32).reshape(50, 40)
    np.save(tmp_path / "u.npy", features)
    np.testing.assert_array_equal(read_crop(tmp_path / "u.npy", 10, 20), features[10:30])
    tiled = read_crop(tmp_path / "u.npy", 0, 120)
    np.testing.assert_array_equal(tiled, np.concatenate([features, features, features[:20]]))


def test_softmax_batches_have_no_query(feature_corpus):
    corpus = FeatureCorpus(feature_corpus)
    episode = EpisodeDataset(corpus, EpisodeConfig(n_way=6), n_episodes=1, seed=0)[0]
    assert episode["support"].shape == (6, 1, 40, 200) and episode["query"].shape[0] == 0
    assert sorted(episode["label_g"].tolist()) == list(range(6))


def test_too_few_speakers_is_a_clear_error(tmp_path):
    corpus = FeatureCorpus(write_random_features(tmp_path, n_speakers=3, n_utterances=2))
    with pytest.raises(UserInputError, match="needs 4 speakers with at least 3 utterances"):
        EpisodeDataset(corpus, EpisodeConfig(n_way=4, n_shot=1, n_query=2), 1, 0)
    with pytest.raises(UserInputError, match="but the corpus has 0 such speakers"):
        EpisodeDataset(corpus, EpisodeConfig(n_way=2, n_shot=1, n_query=2), 1, 0)


@pytest.mark.parametrize("make_bad, message", [
    (lambda p: np.save(p, np.zeros((30, 24), np.float32)), r"shape \(frames, 40\), found \(30, 24\)"),
    (lambda p: np.save(p, np.array([["a"] * 40] * 3)), "C-order float array"),
    (lambda p: p.write_bytes(b"not numpy at all"), "not a readable .npy"),
    (lambda p: (np.save(p, np.ones((50, 40), np.float32)),
                p.write_bytes(p.read_bytes()[:-100])), r"truncated feature file \(8028 of 8128 bytes\)"),
])
def test_bad_feature_files_are_named(tmp_path, make_bad, message):
    write_random_features(tmp_path, n_speakers=2, n_utterances=2)
    bad = tmp_path / "id00001" / "session0" / "00000.npy"
    make_bad(bad)
    with pytest.raises(UserInputError, match=message) as error:
        FeatureCorpus(tmp_path)
    assert str(bad) in str(error.value)


def test_float16_store_reads_as_float32(tmp_path):
    write_random_features(tmp_path, n_speakers=1, n_utterances=1, frames=300, dtype="float16")
    corpus = FeatureCorpus(tmp_path)
    crop = corpus.read_crop(0, 17, 200)
    stored = np.load(corpus.utterances[0].path)
    assert crop.dtype == np.float32
    np.testing.assert_array_equal(crop, stored[17:217].astype(np.float32))


WORKER_IMPORTS = """
import sys
import torch
import train, training.run  # what train.py has imported when its DataLoader forks
from data_loading.corpus import FeatureCorpus
from data_loading.episodes import EpisodeConfig, EpisodeDataset


class Probe(torch.utils.data.Dataset):
    def __init__(self, episodes):
        self.episodes = episodes

    def __len__(self):
        return len(self.episodes)

    def __getitem__(self, index):
        episode = self.episodes[index]
        return "\\n".join(sorted(sys.modules)) if index == len(self) - 1 else episode["support"].shape


episodes = EpisodeDataset(FeatureCorpus(sys.argv[1]), EpisodeConfig(4, 1, 2, True), 6, seed=0)
loader = torch.utils.data.DataLoader(Probe(episodes), batch_size=None, num_workers=1)
batches = iter(loader)  # the worker forks here: it starts with the modules the parent has now
at_fork = set(sys.modules)
*shapes, worker_modules = batches
print(sorted(set(worker_modules.split()) - at_fork), shapes[0])
"""


def test_episodes_import_nothing_inside_a_forked_worker(feature_corpus, tmp_path):
    """A module first imported inside a forked DataLoader worker is private memory of every worker (numpy 2's
    np.unique imported numpy.ma, ~10-40 MiB per worker on the VoxCeleb2-size store when train.py no
    longer imported scipy): assembling episodes must import nothing the parent has not."""
    import subprocess
    import sys
    from tests.conftest import ROOT
    script = tmp_path / "probe.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n" + WORKER_IMPORTS)
    result = subprocess.run([sys.executable, str(script), str(feature_corpus)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[] [4, 1, 40, 200]"
