"""--protocol O|E|H for EER_full.py / EER_short.py and the resumable embedding cache."""
import argparse
import json

import numpy as np
import pytest
import torch

import configure
from evaluation import embedding_cache
from evaluation.cli import read_scores
from evaluation.embedding import cosine_rows
from evaluation.embedding_cache import cache_folder, cache_identity, cached_embeddings, read_cache
from evaluation.protocol import add_protocol_arguments, trial_list_path
from feat_extract.features import model_input
from model.model import background_resnet
from tests.conftest import write_random_features
from tests.test_eval_scripts import expect_error, run_here, setup  # noqa: F401 (the fixture)


def parsed(*argv):
    parser = argparse.ArgumentParser()
    add_protocol_arguments(parser)
    return parser.parse_args(list(argv))


def test_protocol_names_pick_cleaned_and_original_lists():
    assert trial_list_path(parsed()) == configure.VOX1_O_TRIALS      # the paper's command: unchanged
    assert configure.VOX1_O_TRIALS.name == "veri_test.txt"
    assert trial_list_path(parsed("--trials", "my.txt")).name == "my.txt"
    assert parsed("--protocol").protocol == configure.DEFAULT_PROTOCOL == "O"     # cleaned by default
    with pytest.raises(SystemExit):
        parsed("--protocol", "E", "--trials", "my.txt")
    expected = {"O": "veri_test2.txt", "E": "list_test_all2.txt", "H": "list_test_hard2.txt",
                "O-original": "veri_test.txt", "E-original": "list_test_all.txt", "H-original": "list_test_hard.txt"}
    assert trial_list_path(parsed("--protocol", "O-original")) == configure.VOX1_O_TRIALS  # ships with the code
    assert {p: configure.protocol_list_path(p).name for p in expected} == expected


def test_missing_protocol_list_names_the_download_command(setup, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setattr(configure, "LISTS_DIR", tmp_path)
    for script in ("EER_full.py", "EER_short.py"):
        result = run_here(script, setup, "--protocol", "H", out=tmp_path.name)
        expect_error(result, str(tmp_path / "list_test_hard2.txt"), "python dataprep.py --download_lists")
        assert "checkpoint:" not in result.stdout


def listed_trials(setup, lists):
    """A list mixing VoxCeleb1 test and dev utterances (as E and H do), named as the cleaned H list."""
    names = sorted(p.relative_to(root).with_suffix(".wav").as_posix()
                   for split in ("test", "dev")
                   for root in [configure.feature_dir(setup / "data", "voxceleb1", split)]
                   for p in root.glob("*/*/*.npy"))
    rng = np.random.default_rng(5)
    pairs = [(names[a], names[b]) for a, b in rng.integers(0, len(names), (40, 2)) if a != b]
    lines = [f"{int(e.split('/')[0] == t.split('/')[0])} {e} {t}" for e, t in pairs]
    lists.mkdir(exist_ok=True)
    (lists / "list_test_hard2.txt").write_text("\n".join(lines) + "\n")
    return pairs, lines


def alone(model, path) -> np.ndarray:
    with torch.inference_mode():
        return model(model_input(np.load(path)[None])).numpy()[0]


def test_eer_full_protocol_scores_every_listed_pair(setup, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setattr(configure, "LISTS_DIR", tmp_path / "lists")
    pairs, lines = listed_trials(setup, tmp_path / "lists")
    result = run_here("EER_full.py", setup, "--protocol", "H", "--batch_size", 3, out=tmp_path.name)
    assert result.returncode == 0, result.stderr
    out = setup / tmp_path.name
    text = (out / "scores_full_cp100.txt").read_text().splitlines()
    assert [line.split()[2:] for line in text] == [line.split()[1:] for line in lines]
    labels, scores = read_scores(out / "scores_full_cp100.txt")
    assert labels.tolist() == [int(line[0]) for line in lines]
    model = background_resnet(5, channels=4)
    model.load_state_dict(torch.load(setup / "cp.pth", weights_only=True)["state_dict"])
    model.eval()
    path = {n: p for split in ("test", "dev") for root in [configure.feature_dir(setup / "data", "voxceleb1", split)]
            for n, p in ((q.relative_to(root).with_suffix(".wav").as_posix(), q) for q in root.glob("*/*/*.npy"))}
    expected = cosine_rows(np.stack([alone(model, path[e]) for e, _ in pairs]),
                           np.stack([alone(model, path[t]) for _, t in pairs]))
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    summary = json.loads((out / "eer_full_cp100.json").read_text())
    assert summary["protocol"] == "H" and summary["trials"].endswith("list_test_hard2.txt")
    (folder,) = (out / "embedding_cache").iterdir()
    assert sorted(read_cache(folder)) == sorted({n for pair in pairs for n in pair})


def test_eer_short_protocol_crops_the_listed_test_sides(setup, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setattr(configure, "LISTS_DIR", tmp_path / "lists")
    pairs, lines = listed_trials(setup, tmp_path / "lists")
    runs = [run_here("EER_short.py", setup, "--protocol", "H", "--test_length", 60, "--batch_size", size,
                     "--seed", 2, out=f"{tmp_path.name}_{size}") for size in (8, 5)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr + runs[1].stderr
    files = [setup / f"{tmp_path.name}_{size}" / "scores_short_60_cp100.txt" for size in (8, 5)]
    text = files[0].read_text().splitlines()
    assert [line.split()[2:] for line in text] == [line.split()[1:] for line in lines]
    assert [line.split()[0] for line in text] == [line[0] for line in lines]
    np.testing.assert_allclose(read_scores(files[0])[1], read_scores(files[1])[1], atol=1e-5)
    (folder,) = (files[0].parent / "embedding_cache").iterdir()
    assert sorted(read_cache(folder)) == sorted({e for e, _ in pairs})   # enrolments, full length


# ---------------------------------------------------------------- the cache itself
@pytest.fixture
def utterances(tmp_path):
    root = write_random_features(tmp_path / "feat", 4, 5, (60, 200), seed=7)
    located = {p.relative_to(root).with_suffix(".wav").as_posix(): p for p in sorted(root.glob("*/*/*.npy"))}
    torch.manual_seed(1)
    return list(located), located, background_resnet(4, channels=4).eval()


class Interrupted(Exception):
    pass


def test_interrupted_cache_resumes_with_only_the_rest_and_equal_embeddings(utterances, tmp_path, monkeypatch):
    names, located, model = utterances
    cold = cached_embeddings(model, names, located, "cpu", 2, tmp_path / "cold", chunk=3)   # 4 per chunk
    assert len(list((tmp_path / "cold").glob("part_*.npz"))) == 5
    calls = []
    real_write = embedding_cache.write_part

    def write_twice_then_stop(folder, chunk_names, n_frames, embeddings):
        if len(calls) == 2:
            raise Interrupted
        calls.append(chunk_names)
        real_write(folder, chunk_names, n_frames, embeddings)

    monkeypatch.setattr(embedding_cache, "write_part", write_twice_then_stop)
    with pytest.raises(Interrupted):
        cached_embeddings(model, names, located, "cpu", 2, tmp_path / "warm", chunk=3)
    monkeypatch.setattr(embedding_cache, "write_part", real_write)
    assert len(read_cache(tmp_path / "warm")) == 8
    embedded = []
    real_embed = embedding_cache.embed_utterances
    monkeypatch.setattr(embedding_cache, "embed_utterances",
                        lambda m, items, *a, **k: embedded.extend(items) or real_embed(m, items, *a, **k))
    resumed = cached_embeddings(model, names, located, "cpu", 2, tmp_path / "warm", chunk=3)
    assert len(embedded) == 12 and not {str(p) for p in embedded} & {str(located[n]) for c in calls for n in c}
    assert np.array_equal(resumed, cold)                          # identical, bit for bit
    embedded.clear()
    again = cached_embeddings(model, names[::-1], located, "cpu", 2, tmp_path / "warm", chunk=3)
    assert embedded == [] and np.array_equal(again, cold[::-1])   # all read back


def test_cache_entry_of_a_changed_file_is_recomputed(utterances, tmp_path, monkeypatch):
    names, located, model = utterances
    cached_embeddings(model, names, located, "cpu", 4, tmp_path / "c")
    np.save(located[names[0]], np.ones((90, 40), np.float32) * np.arange(40))
    updated = cached_embeddings(model, names[:1], located, "cpu", 4, tmp_path / "c")
    np.testing.assert_allclose(updated[0], alone(model, located[names[0]]), atol=1e-5)
    monkeypatch.setattr(embedding_cache, "embed_utterances", None)          # nothing left to embed
    assert np.array_equal(cached_embeddings(model, names, located, "cpu", 4, tmp_path / "c")[0], updated[0])


def test_cache_key_follows_the_checkpoint_bytes_and_the_store(tmp_path):
    root = write_random_features(tmp_path / "feat", 2, 2, 50)
    for name, seed in (("a.pth", 0), ("b.pth", 1)):
        torch.manual_seed(seed)
        torch.save({"state_dict": background_resnet(2, channels=4).state_dict()}, tmp_path / name)
    a, b = (cache_folder(tmp_path, cache_identity(tmp_path / n, [root])) for n in ("a.pth", "b.pth"))
    assert a != b and a.parent == b.parent == tmp_path / "embedding_cache"
    (tmp_path / "c.pth").write_bytes((tmp_path / "a.pth").read_bytes())      # same bytes, other name
    assert cache_folder(tmp_path, cache_identity(tmp_path / "c.pth", [root])) == a
    (root / "id09999").mkdir()                                                 # the store changed
    assert cache_folder(tmp_path, cache_identity(tmp_path / "a.pth", [root])) != a


def test_damaged_cache_part_is_one_clear_error(utterances, tmp_path):
    from common.errors import UserInputError
    names, located, model = utterances
    cached_embeddings(model, names[:3], located, "cpu", 4, tmp_path / "c")
    (part,) = (tmp_path / "c").glob("part_*.npz")
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(UserInputError, match=f"delete {tmp_path / 'c'}"):
        cached_embeddings(model, names[:3], located, "cpu", 4, tmp_path / "c")


def test_e_and_h_need_voxceleb1_dev_features_named_before_any_work(setup, monkeypatch, tmp_path):  # noqa: F811
    import shutil
    monkeypatch.setattr(configure, "LISTS_DIR", tmp_path / "lists")
    listed_trials(setup, tmp_path / "lists")
    (tmp_path / "lists" / "list_test_hard2.txt").rename(tmp_path / "lists" / "list_test_all2.txt")
    data = tmp_path / "data"
    shutil.copytree(configure.feature_dir(setup / "data", "voxceleb1", "test"),
                    configure.feature_dir(data, "voxceleb1", "test"))
    dev = configure.feature_dir(data, "voxceleb1", "dev")
    for script in ("EER_full.py", "EER_short.py"):
        result = run_here(script, setup, "--protocol", "E", "--save_path", data, out=tmp_path.name)
        expect_error(result, "--protocol E uses all of VoxCeleb1 (dev and test): features not found at", str(dev))
        assert "checkpoint:" not in result.stdout


def test_interrupted_eer_full_resumes_to_the_same_score_file(setup, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setattr(configure, "LISTS_DIR", tmp_path / "lists")
    monkeypatch.setattr(embedding_cache, "DEFAULT_CHUNK", 8)
    listed_trials(setup, tmp_path / "lists")
    flags = ["--protocol", "H", "--batch_size", 4]
    assert run_here("EER_full.py", setup, *flags, out=f"{tmp_path.name}_whole").returncode == 0
    real_write, written = embedding_cache.write_part, []

    def stop_after_one(*args):
        if written:
            raise Interrupted
        written.append(real_write(*args))

    monkeypatch.setattr(embedding_cache, "write_part", stop_after_one)
    with pytest.raises(Interrupted):
        run_here("EER_full.py", setup, *flags, out=f"{tmp_path.name}_cut")
    monkeypatch.setattr(embedding_cache, "write_part", real_write)
    out = setup / f"{tmp_path.name}_cut"
    (folder,) = (out / "embedding_cache").iterdir()
    assert len(read_cache(folder)) == 8 and not (out / "scores_full_cp100.txt").exists()
    resumed = run_here("EER_full.py", setup, *flags, out=f"{tmp_path.name}_cut")
    assert resumed.returncode == 0, resumed.stderr
    whole = (setup / f"{tmp_path.name}_whole" / "scores_full_cp100.txt").read_bytes()
    assert (out / "scores_full_cp100.txt").read_bytes() == whole
