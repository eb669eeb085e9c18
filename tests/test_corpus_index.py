"""The corpus index: equal to a full listing, loaded without opening feature files, stale and corrupt
indexes, sharded extraction equal to unsharded, and torchrun ranks agreeing on one index."""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import dataprep
from common.errors import UserInputError
from common.files import save_npy
from data_loading.corpus import FeatureCorpus, list_feature_files
from feat_extract import corpus_index
from feat_extract.features import feature_layout
from prep import download
from training.distributed import DistContext, check_same_corpus, destroy_process_group, init_process_group
from feat_extract import feature_extraction as fe
from feat_extract.shards import parse_shard, select_shard, shard_of
from tests.conftest import ROOT, TRAIN_FEATURES, write_random_features
from tests.test_distributed import free_port
from tests.test_feature_extraction import TEST_FEAT, write_tiny_corpus


@pytest.fixture(autouse=True)
def notes_for_small_stores(monkeypatch):
    """The note on (re)indexing is for stores of thousands of files; here every store gets it."""
    monkeypatch.setattr(corpus_index, "NOTE_FROM", 0)


def listed(roots):
    """What the corpus was before the index: a sorted glob of every root and every file's header."""
    paths = [path for root in roots for path in list_feature_files(root)]
    return paths, [feature_layout(path) for path in paths]


def mixed_store(root):
    """Two dtypes, uneven sessions, names whose sort by string differs from the sort by folder."""
    write_random_features(root, n_speakers=4, n_utterances=5, seed=3)
    save_npy(root / "id00001" / "session0-b" / "00009.npy", np.ones((90, 40), np.float16))
    save_npy(root / "id00001" / "session0" / "zz.npy", np.ones((7, 40), np.float32))
    save_npy(root / "idB" / "s" / "x.npy", np.ones((260, 40), np.float16))
    return root


def test_index_equals_the_listing_and_start_up_opens_no_feature_file(tmp_path, monkeypatch, capsys):
    roots = [mixed_store(tmp_path / "a"), write_random_features(tmp_path / "b", n_speakers=2, seed=4)]
    corpus = FeatureCorpus(roots)
    assert "corpus index missing" in capsys.readouterr().err
    assert (roots[0] / corpus_index.INDEX_NAME).is_file() and (roots[1] / corpus_index.INDEX_NAME).is_file()
    paths, layouts = listed(roots)
    assert [corpus.path(i) for i in range(len(corpus))] == paths
    assert [utt.path for utt in corpus.utterances] == paths
    assert [corpus.layout(i) for i in range(len(corpus))] == layouts
    assert corpus.n_frames.tolist() == [layout.n_frames for layout in layouts]
    assert sorted(set(corpus.dtypes)) == ["<f2", "<f4"]
    assert corpus.speakers == sorted({path.parts[-3] for path in paths})
    assert [p.parts[-3] for p in paths] == [corpus.speakers[label] for label in corpus.labels]
    assert [list(utts) for utts in corpus.by_speaker] == [
        [i for i, p in enumerate(paths) if p.parts[-3] == speaker] for speaker in corpus.speakers]
    assert corpus.utterances[-1].key == "id00001/session1/00003" and corpus.keys()[-1] == corpus.utterances[-1].key
    assert corpus.path(9).parts[-2] == "session0-b"  # folder order, not string order ('-' < '/')

    def no_header_reads(*args, **kwargs):
        raise AssertionError("a feature file was opened at start-up")
    monkeypatch.setattr(corpus_index, "feature_layout", no_header_reads)
    again = FeatureCorpus(roots)
    assert capsys.readouterr().err == ""
    assert again.digest() == corpus.digest()
    np.testing.assert_array_equal(again.read_crop(3, 5, 50), corpus.read_crop(3, 5, 50))


def test_stale_index_is_detected_and_rebuilt(tmp_path, capsys):
    root = write_random_features(tmp_path, n_speakers=3, n_utterances=4)
    assert len(FeatureCorpus(root)) == 12
    save_npy(root / "id00002" / "session7" / "00099.npy", np.zeros((80, 40), np.float32))  # a new session
    capsys.readouterr()
    corpus = FeatureCorpus(root)
    assert "corpus index out of date" in capsys.readouterr().err
    assert len(corpus) == 13 and corpus.path(12).parts[-2:] == ("session7", "00099.npy") and corpus.n_frames[12] == 80
    shutil.rmtree(root / "id00000" / "session0")                                            # a session gone
    assert len(FeatureCorpus(root)) == 11 and "out of date" in capsys.readouterr().err
    save_npy(root / "id00003" / "s" / "0.npy", np.zeros((50, 40), np.float32))              # a new speaker
    assert len(FeatureCorpus(root)) == 12 and "out of date" in capsys.readouterr().err
    assert len(FeatureCorpus(root)) == 12 and capsys.readouterr().err == ""                 # fresh again
    # a file removed by hand inside a session: not seen at start-up (documented), named when read...
    (root / "id00001" / "session1" / "00003.npy").unlink()
    corpus = FeatureCorpus(root)
    gone = [corpus.path(i).name for i in range(len(corpus))].index("00003.npy", 4)
    with pytest.raises(UserInputError, match="00003.npy: cannot read a feature file the corpus index lists"):
        corpus.read_crop(gone, 0, 10)
    # ... and --reindex rebuilds the index
    assert len(FeatureCorpus(root, reindex=True)) == 11
    assert "--reindex given: building corpus_index.npz" in capsys.readouterr().err


def corrupt_zip(path):
    path.write_bytes(path.read_bytes()[:200])


def rewrite(index_file, **changes):
    with np.load(index_file) as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays.update(changes)
    np.savez(index_file, **arrays)


@pytest.mark.parametrize("damage, reason", [
    (corrupt_zip, "corrupt corpus index"),
    (lambda p: p.write_bytes(b"not an index"), "corrupt corpus index"),
    (lambda p: rewrite(p, version=np.int64(99)), "format version 99"),
    (lambda p: rewrite(p, path=np.array([b"../../etc/x.npy"] * 8)), r"bad relative path b'../../etc/x.npy'"),
    (lambda p: rewrite(p, path=np.array([b"/etc/passwd/x.npy"] * 8)), "bad relative path"),
    (lambda p: rewrite(p, n_frames=np.zeros(8, np.int32)), "frame counts"),
    (lambda p: rewrite(p, speaker=np.full(8, 7, np.int32)), "out of range"),
    (lambda p: rewrite(p, dtypes=np.array([b"<i8"])), "not a float type"),
    (lambda p: rewrite(p, offset=np.zeros(3, np.int32)), "different lengths"),
])
def test_corrupt_index_is_refused(tmp_path, damage, reason):
    root = write_random_features(tmp_path, n_speakers=2, n_utterances=4)
    FeatureCorpus(root)
    damage(root / corpus_index.INDEX_NAME)
    with pytest.raises(UserInputError, match=reason) as error:
        FeatureCorpus(root)
    assert str(root / corpus_index.INDEX_NAME) in str(error.value) and "--reindex" in str(error.value)
    assert len(FeatureCorpus(root, reindex=True)) == 8  # --reindex replaces it


def test_corrupt_index_is_one_error_line_from_train(tmp_path):
    root = write_random_features(tmp_path / "data" / TRAIN_FEATURES, n_speakers=3, n_utterances=4)
    (root / corpus_index.INDEX_NAME).write_bytes(b"PK\x03\x04 torn")
    result = subprocess.run([sys.executable, "train.py", "--save_path", str(tmp_path / "data"), "--workers", "0",
                             "--model_dir", str(tmp_path / "m")], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {root / corpus_index.INDEX_NAME}: corrupt corpus index (File is not a zip file); delete it "
        "or pass --reindex to rebuild it from the feature files"]


def test_shards_split_deterministically():
    names = [f"id{s:05d}/v{v}/{u:05d}.npy" for s in range(20) for v in range(3) for u in range(10)]
    parts = [select_shard(names, lambda name: name, (k, 4)) for k in range(1, 5)]
    assert sorted(sum(parts, [])) == sorted(names) and all(len(part) > 100 for part in parts)
    assert all(shard_of(name, 4) == k + 1 for k, part in enumerate(parts) for name in part)
    assert shard_of("id00012/21Uxsk56VDQ/00001.npy", 8) == shard_of("id00012/21Uxsk56VDQ/00001.npy", 8)
    assert parse_shard("3/8") == (3, 8) and parse_shard(None) is None
    for bad in ("0/4", "5/4", "x", "1/2/3"):
        with pytest.raises(UserInputError, match="--shard"):
            parse_shard(bad)


def store_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.npy"))}


def index_columns(root):
    index = corpus_index.read_index(root / corpus_index.INDEX_NAME)
    return {name: value for name, value in index.arrays().items() if name != "fingerprint"}


def test_sharded_extraction_equals_unsharded(tmp_path, monkeypatch):
    write_tiny_corpus(tmp_path / "whole", n_files=24, seconds=0.3)
    shutil.copytree(tmp_path / "whole", tmp_path / "sharded")
    fe.main(["--save_path", str(tmp_path / "whole"), "--workers", "1"])
    counts = []
    for k in (1, 2, 3):
        summary = fe.main(["--save_path", str(tmp_path / "sharded"), "--workers", "1", "--shard", f"{k}/3"])
        counts.append(summary.extracted)
    sharded = tmp_path / "sharded" / TEST_FEAT
    assert sum(counts) == 24 and min(counts) > 0
    assert sorted(p.name for p in sharded.glob("corpus_index*")) == [
        f"corpus_index.shard-{k}-of-3.npz" for k in (1, 2, 3)]
    fe.main(["--save_path", str(tmp_path / "sharded"), "--merge_index"])
    assert [p.name for p in sharded.glob("corpus_index*")] == [corpus_index.INDEX_NAME]
    whole = tmp_path / "whole" / TEST_FEAT
    assert store_bytes(sharded) == store_bytes(whole) and len(store_bytes(whole)) == 24
    expected, actual = index_columns(whole), index_columns(sharded)
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
    assert FeatureCorpus(sharded).digest() == FeatureCorpus(whole).digest()

    def no_open(path):
        raise AssertionError(f"{path} was opened to check it is complete")
    monkeypatch.setattr(fe, "is_complete_feature", no_open)
    rerun = fe.extract_corpus(tmp_path / "sharded", workers=1)  # completion comes from the index
    assert (rerun.extracted, rerun.skipped) == (0, 24)


def test_merge_names_the_missing_shards_and_the_next_load_merges(tmp_path, capsys):
    write_tiny_corpus(tmp_path, n_files=12, seconds=0.3)
    fe.main(["--save_path", str(tmp_path), "--workers", "1", "--shard", "2/3"])
    with pytest.raises(UserInputError, match=r"corpus_index.shard-1-of-3.npz, corpus_index.shard-3-of-3.npz "
                                             "not written yet"):
        fe.main(["--save_path", str(tmp_path), "--merge_index"])
    fe.main(["--save_path", str(tmp_path), "--workers", "1", "--shard", "1/3"])
    fe.main(["--save_path", str(tmp_path), "--workers", "1", "--shard", "3/3"])
    capsys.readouterr()
    corpus = FeatureCorpus(tmp_path / TEST_FEAT)  # no --merge_index: the first load joins them
    assert re.search(r"corpus index missing: building corpus_index.npz from 12 feature files \(\d+ processes, "
                     r"reusing 12 rows already indexed\)", capsys.readouterr().err)
    assert [corpus.path(i) for i in range(len(corpus))] == listed([tmp_path / TEST_FEAT])[0]


def test_convert_shards_split_the_m4a_files(tmp_path, monkeypatch):
    sources = [tmp_path / f"voxceleb2/dev/aac/id{s:05d}/vid/{u:05d}.m4a" for s in range(4) for u in range(6)]
    for source in sources:
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(b"aac")
    monkeypatch.setattr(download.shutil, "which", lambda name: "/usr/bin/ffmpeg")
    converted = {1: [], 2: []}
    for k in (1, 2):
        monkeypatch.setattr(download, "convert_file", lambda pair: converted[k].append(pair[0]) or (str(pair[0]), ""))
        dataprep.main(["--save_path", str(tmp_path), "--convert", "--workers", "1", "--shard", f"{k}/2"])
        assert converted[k] and all(
            shard_of(m4a.relative_to(tmp_path / "voxceleb2/dev/aac").as_posix(), 2) == k for m4a in converted[k])
    assert sorted(converted[1] + converted[2]) == sorted(sources)


def ranks_load_the_index(rank, world_size, port, root, out_dir):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ctx = DistContext(rank, world_size, rank)
    init_process_group(ctx, torch.device("cpu"))
    corpus = FeatureCorpus(root, build_index=ctx.is_main)
    check_same_corpus(corpus.digest(), ctx)
    try:
        check_same_corpus(f"rank {rank}'s own corpus", ctx)
        refused = ""
    except UserInputError as error:
        refused = str(error)
    Path(out_dir, f"rank{rank}.txt").write_text(
        f"{corpus.digest()}\n{len(corpus)}\n{corpus.path(len(corpus) - 1)}\n{refused}\n")
    # both ranks done, then an orderly shutdown: a gloo group left to interpreter exit can abort
    # ("terminate called without an active exception", seen once in a CI run)
    torch.distributed.barrier()
    destroy_process_group()


def test_torchrun_ranks_agree_on_the_index(tmp_path):
    root = write_random_features(tmp_path / "feat", n_speakers=5, n_utterances=6)
    torch.multiprocessing.spawn(ranks_load_the_index, args=(2, free_port(), root, str(tmp_path)), nprocs=2)
    ranks = [(tmp_path / f"rank{rank}.txt").read_text().splitlines() for rank in (0, 1)]
    assert ranks[0][:3] == ranks[1][:3] == [FeatureCorpus(root).digest(), "30",
                                            str(root / "id00004/session1/00005.npy")]
    assert ranks[0][3] == ranks[1][3] == ("ranks 1 loaded a different corpus index than rank 0: every node "
                                          "must see the same feature store (and its corpus_index.npz)")
    assert (root / corpus_index.INDEX_NAME).is_file()
