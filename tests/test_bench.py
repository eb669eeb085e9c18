"""The benchmark harness: baselines and our paths produce the same data; the table is right.

Timings are never asserted (the machine is shared); outputs are."""
import json
import os

import numpy as np
import pytest
import torch

from bench import baseline
from bench.episodes_bench import (EPISODE, assert_same_crops, crop_row_bytes, loader_of, measured_bytes,
                                  pickle_bytes_per_episode, startup_bytes_per_utterance)
from bench.io_counters import io_counter
from bench.report import Result, markdown_table, text_table
from bench.synthetic import write_feature_store
from data_loading.corpus import FeatureCorpus, random_start, read_stored_crops
from data_loading.episodes import EpisodeConfig, EpisodeDataset, random_starts
from evaluation.metrics import compute_eer
from evaluation.short_utterance import make_short_trials, score_short_trials
from model.model import background_resnet


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_feature_store(tmp_path_factory.mktemp("bench"), n_speakers=12, n_utterances=3,
                               mean_frames=300, seed=3)


def pickle_paths_of(store):
    return [baseline.pickle_path(store, utt.path) for utt in FeatureCorpus(store.float32).utterances]


def test_synthetic_store_holds_the_same_features_three_ways(store):
    corpus = FeatureCorpus(store.float32)
    assert corpus.n_speakers == 12 and len(corpus) == 36
    first = corpus.utterances[0].path
    original = baseline.read_pickle(baseline.pickle_path(store, first))
    assert original["feat"].dtype == np.float64 and original["label"] == "id00000"
    np.testing.assert_array_equal(np.load(first), original["feat"].astype(np.float32))
    half = np.load(store.float16 / first.relative_to(store.float32))
    np.testing.assert_array_equal(half, original["feat"].astype(np.float16))
    assert store.total_frames == sum(u.n_frames for u in corpus.utterances)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_baseline_episodes_equal_ours(store, dtype):
    dataset = EpisodeDataset(FeatureCorpus(store.root(dtype)), EpisodeConfig(10, 1, 2, True), 3, seed=5)
    pickle_paths = pickle_paths_of(store)
    for index in range(3):
        ours = dataset[index]
        theirs = baseline.episode_from_pickles(pickle_paths, dataset.plan(index))
        assert_same_crops(ours, theirs, exact=dtype == "float32")
        if dtype == "float32":
            assert torch.equal(ours["query"], theirs["query"])  # bit-identical, not just close


def test_bytes_per_episode_measured_equal_the_crop_rows(store):
    corpus = FeatureCorpus(store.float32)
    dataset = EpisodeDataset(corpus, EpisodeConfig(10, 1, 2, True), 1, seed=0)
    plan = dataset.plan(0)
    n_frames = [corpus.utterances[utt].n_frames for utt in plan.utterances]
    lengths = [200] * 10 + [plan.query_frames] * 20
    rows = crop_row_bytes(corpus, plan)  # a short utterance is read whole once, then tiled
    assert rows == 160 * sum(min(frames, length) for frames, length in zip(n_frames, lengths))
    assert EPISODE.n_way == 100 and EPISODE.n_query == 2 and EPISODE.variable_query
    if io_counter("rchar") is None:
        pytest.skip("no /proc/self/io here")
    measured = measured_bytes(corpus, dataset, pickle_paths_of(store), plan, 0)
    assert rows <= measured["ours"] < rows + 1024          # + reading /proc/self/io itself
    pickles = pickle_bytes_per_episode(pickle_paths_of(store), plan)
    assert pickles <= measured["baseline"] < pickles + 30 * 1024
    assert measured["ours_cold"] < measured["baseline_cold"]
    # start-up reads the corpus index, no feature file: its bytes (zip directory read twice, + ~130 B
    # for reading /proc/self/io), far below the 4 KiB header read per file of a listing
    index_bytes = (store.float32 / "corpus_index.npz").stat().st_size
    assert index_bytes / 36 <= startup_bytes_per_utterance(store.float32) <= (2 * index_bytes + 1024) / 36 < 4096


def test_batched_reads_and_starts_equal_the_one_by_one_ones(store):
    corpus = FeatureCorpus(store.float16)
    indices, starts = np.arange(len(corpus)), np.zeros(len(corpus), dtype=np.int64)
    assert min(utt.n_frames for utt in corpus.utterances) < 250  # some crops are tiled
    batched = read_stored_crops(corpus, indices, starts, 250)
    assert batched.dtype == np.float16 and batched.shape == (36, 250, 40)
    for index in indices:
        np.testing.assert_array_equal(batched[index], corpus.read_stored_crop(index, 0, 250))
    n_frames = np.array([utt.n_frames for utt in corpus.utterances])
    lengths = np.full(len(n_frames), 300)
    one_by_one = [random_start(rng, frames, 300) for rng in [np.random.default_rng(9)] for frames in n_frames]
    np.testing.assert_array_equal(random_starts(np.random.default_rng(9), n_frames, lengths), one_by_one)


def test_worker_episodes_in_shared_memory_equal_in_process_ones(store):
    dataset = EpisodeDataset(FeatureCorpus(store.float32), EpisodeConfig(6, 1, 2, True), 2, seed=1)
    for index, episode in enumerate(loader_of(dataset, 1)):
        assert all(torch.equal(episode[key], dataset[index][key]) for key in episode)
        assert episode["support"].is_shared()


def test_eer_short_batched_scores_equal_per_trial_baseline(store):
    corpus = FeatureCorpus(store.float32)
    trials = make_short_trials(corpus, 100, pairs_per_speaker=1, seed=0)
    torch.manual_seed(0)
    model = background_resnet(num_classes=4, channels=4).eval()
    device = torch.device("cpu")
    ours = score_short_trials(model, corpus, trials, device, batch_size=8)
    theirs = baseline.score_trials_per_trial(model, pickle_paths_of(store), trials, device)
    assert len(ours) == 24 and np.ptp(ours) > 5e-4     # varied scores (a random encoder: all near 1)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    assert compute_eer(trials.label, ours)[0] == compute_eer(trials.label, theirs)[0]


def test_gain_and_target_arithmetic():
    faster = Result("eps", 30.0, "episodes/s", 10.0, True, 3.0)
    smaller = Result("bytes", 100.0, "bytes", 550.0, False, 6.0)
    assert faster.gain == 3.0 and faster.met is True
    assert smaller.gain == 5.5 and smaller.met is False
    table = text_table([faster, smaller])
    assert "3.00x" in table and "5.50x" in table and "NO" in table
    assert "| eps | 30 | episodes/s | 10 | 3.00x | >= 3x | yes |" in markdown_table([faster], "cmd")


def test_quick_run_store_benchmark_writes_json_and_markdown(tmp_path, capsys):
    from bench.run import main
    main(["--quick", "--only", "store", "--json", str(tmp_path / "r.json"),
          "--markdown", str(tmp_path / "r.md"), "--tmp_dir", str(tmp_path)])
    results = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    float32 = results["store_bytes_per_audio_s_float32"]
    # 40 filters x 4 bytes x 100 frames/s = 16,000 B/s (+ a 128-byte header per file); float64 = 32,000
    assert 16000 < float32["value"] < 16100 and 32000 < float32["baseline"] < 32200
    assert results["store_bytes_per_audio_s_float16"]["gain"] == pytest.approx(4.0, abs=0.05)
    assert "store_bytes_per_audio_s_float16" in capsys.readouterr().out
    assert "| store_bytes_per_audio_s_float32 |" in (tmp_path / "r.md").read_text()


def test_extraction_workers_and_in_process_runs_use_one_blas_thread():
    """Extraction workers must not oversubscribe the cores with BLAS threads (issue 5: 2 workers
    on 2 cores used twice the CPU per file); the in-process run is limited too, and restored after."""
    from threadpoolctl import threadpool_info

    from feat_extract.feature_extraction import extraction_pool, single_blas_thread

    def blas_threads(infos):
        return {info["num_threads"] for info in infos if info["user_api"] == "blas"}

    before = blas_threads(threadpool_info())
    pool = extraction_pool(2)
    try:
        in_workers = [blas_threads(pool.apply(threadpool_info)) for _ in range(4)]
    finally:
        pool.terminate()
        pool.join()
    assert in_workers == [{1}] * 4
    with single_blas_thread():
        assert blas_threads(threadpool_info()) == {1}
    assert blas_threads(threadpool_info()) == before


def test_episode_loader_rows_cover_one_worker_and_all():
    from bench.episodes_bench import worker_counts
    assert worker_counts(2) == [1, 2] and worker_counts(1) == [1] and worker_counts(0) == []


def test_near_tied_fraction_counts_trials_a_small_rounding_can_reorder():
    from bench.eer_short_bench import near_tied_fraction
    scores = np.array([0.9, 0.5000001, 0.1, 0.5, 0.2, 0.3])
    labels = np.array([1, 1, 1, 0, 0, 0])
    assert near_tied_fraction(scores, labels, 1e-6) == pytest.approx(1 / 3)   # 0.5000001 vs 0.5
    assert near_tied_fraction(scores, labels, 1e-9) == 0.0


def test_vox2_size_store_writer_and_listed_baseline(tmp_path):
    from bench.listed_corpus import ListedCorpus
    from bench.vox2_bench import private_bytes
    from bench.vox2_store import speaker_sizes, write_vox2_store
    sizes = speaker_sizes(1_092_009, 5_994, seed=0)
    assert sizes.sum() == 1_092_009 and sizes.min() >= 20 and len(sizes) == 5_994
    store = write_vox2_store(tmp_path / "vox2", n_utterances=600, n_speakers=6)
    assert write_vox2_store(tmp_path / "vox2", n_utterances=600, n_speakers=6) == store  # reused, not rewritten
    ours, listed = FeatureCorpus(store), ListedCorpus(store)
    assert len(ours) == len(listed) == 600 and ours.n_speakers == listed.n_speakers == 6
    assert [ours.path_str(i) for i in range(600)] == [listed.path_str(i) for i in range(600)]
    assert ours.n_frames.tolist() == listed.n_frames[range(600)].tolist()
    assert [list(utts) for utts in ours.by_speaker] == listed.by_speaker
    first = np.load(ours.path(0))
    assert first.dtype == np.float16 and first.shape[1] == 40 and 8 <= first.shape[0] < 25
    assert (first[:, 0] == first[:, 39]).all() and (np.diff(first[:, 0]) == 1).all()  # row r holds (u + r) % 997
    dataset = EpisodeDataset(ours, EpisodeConfig(4, 1, 2, True), 2, seed=0)
    same = EpisodeDataset(listed, EpisodeConfig(4, 1, 2, True), 2, seed=0)
    for index in range(2):
        torch.testing.assert_close(dataset[index]["query"], same[index]["query"], rtol=0, atol=0)
    assert 0 < private_bytes(os.getpid())


def test_train_start_up_phases_of_the_real_train_py(tmp_path):
    """bench/startup_phases.py runs train.py itself to its first episode (then on, dropping episodes,
    to read its workers' memory): its phases follow one another, the corpus phases sit inside the
    corpus, and the memory after 1 and 3 episodes per worker is there for each of the 2 workers."""
    from bench.vox2_bench import phase_medians, train_phases
    from bench.vox2_store import write_vox2_store
    store = write_vox2_store(tmp_path / "vox2", n_utterances=600, n_speakers=6)
    assert len(FeatureCorpus(store)) == 600  # writes the index: train.py then checks that it is fresh
    flags = ("--nb_class_train", "4", "--channels", "4", "--use_cuda", "False")
    result = train_phases(store, 2, episodes=(1, 3), train_flags=flags)
    top = [phase for phase in result["phases"] if phase["depth"] == 0]
    names = [phase["name"] for phase in top]
    assert names[0] == "interpreter start-up" and names[-1] == "train_step (first episode arrived)"
    order = ["corpus: FeatureCorpus(root)", "check_room_for_checkpoints", "build_encoder", "build_optimizer",
             "build_loader", "DataLoader iter(): workers start", "next(): wait for the first episode"]
    assert [name for name in names if name in order] == order
    for before, after in zip(top, top[1:]):
        assert before["end"] <= after["start"]
    inside = {phase["name"]: phase["parent"] for phase in result["phases"] if phase["depth"] > 0}
    assert inside["index: load_index"] == "corpus: FeatureCorpus(root)"
    assert inside["index: staleness fingerprint"] == inside["index: read .npz + checks"] == "index: load_index"
    assert result["first_episode_s"] == top[-1]["start"] > 0 and result["cpu_s"] > 0
    assert sorted(result["worker_private_bytes"]) == ["1", "3"]
    assert all(len(sizes) == 2 and min(sizes) > 0 for sizes in result["worker_private_bytes"].values())
    assert min(result["main_rss_bytes"].values()) > 100 << 20  # torch alone is more than 100 MB
    assert not list((tmp_path / "vox2").rglob("checkpoint_*.pth"))
    runs = [{"phases": [{"name": "a", "start": 0, "end": wall, "cpu": cpu, "depth": 0},
                        {"name": "b", "start": 0.5, "end": 0.5 + wall / 2, "cpu": cpu / 2, "depth": 1}]}
            for wall, cpu in ((1.0, 0.5), (3.0, 0.1), (2.0, 0.2))]
    assert phase_medians(runs) == [("a", 0, 2.0, 0.2), ("b", 1, 1.0, 0.1)]


def test_gpu_speed_script_dry_run_on_the_cpu_writes_every_figure_and_the_lever_table(tmp_path):
    """bench/gpu_speed.sh at toy size (TINY=1) on the CPU: every step runs, the JSON holds every figure
    issue 23 asks for, and the markdown lists every lever (those needing CUDA or torch.compile skipped,
    with the reason). Figures are checked for consistency with each other, not for speed."""
    import subprocess
    import sys

    from bench.gpu_speed import LEVERS, VOX2_CROPS
    from tests.conftest import ROOT
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, TINY="1", OUT=str(out), WORK=str(work), PY=sys.executable)
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_speed.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = dict(line.split("\t")[:2] for line in (out / "steps.tsv").read_text().splitlines())
    assert {name: rc for name, rc in steps.items() if rc != "0"} == {}
    assert set(steps) >= {"corpus", "features", "levers", "train_bf16", "train_fp32", "train_torchrun",
                          "train_torchrun_sync_bn", "original",
                          "eer_short", "exit_probe"}
    [json_path] = out.glob("*-cpu-speed.json")
    result = json.loads(json_path.read_text())
    for key in ("device", "train_crops_per_s_bf16", "train_mfu_bf16", "train_crops_per_s_fp32", "train_mfu_fp32",
                "train_speedup_vs_original", "eer_short_speedup_vs_original", "vox2_epoch_s",
                "torchrun_1gpu_crops_per_s", "torchrun_sync_bn_crops_per_s", "exit_after_last_epoch_s"):
        assert key in result, key
    assert result["device"] == "cpu" and result["train_mfu_bf16"] is None   # no peak for a CPU
    assert result["vox2_epoch_s"] == pytest.approx(VOX2_CROPS / result["train_crops_per_s_bf16"])
    assert result["train_speedup_vs_original"] == pytest.approx(
        result["train_crops_per_s_bf16"] / result["original_crops_per_s"])
    assert result["exit_probe_workers"] == 2 and 0 < result["exit_after_last_epoch_s"] < 60
    assert result["flops_per_step"] > 0 and result["crops_per_step"] == 12   # 4-way 1-shot 2-query
    assert set(result["eer_short"]["by_precision"]) == {"fp32", "tf32", "bf16"}
    levers = result["levers"]
    assert list(levers) == [lever.name for lever in LEVERS]
    assert levers["graphs_bf16"]["status"] == "skipped: needs CUDA"
    assert levers["compile_bf16"]["status"] == "skipped: not in --levers"
    assert levers["eager_bf16"]["status"] == "ok" and levers["eager_bf16"]["crops_per_s"] == pytest.approx(
        12 * levers["eager_bf16"]["steps_per_s"])
    assert (work / "best_bf16.flags").read_text().split()[0] == "--amp"
    table = json_path.with_suffix(".md").read_text()
    assert "| train_crops_per_s_bf16 |" in table and "| vox2_epoch_s |" in table
    for lever in LEVERS:
        assert f"| {lever.name} | `{' '.join(lever.flags) or '(none)'}` |" in table


def test_gpu_speed_summary_of_an_h100_run_computes_mfu_speedups_and_names_the_files(tmp_path):
    """The summary's arithmetic on made-up results of a GPU run: MFU = crops/s / crops per step x FLOPs
    per step / the card's dense peak (H100 SXM: 989 TFLOPS bf16, 494 TF32)."""
    import time

    from bench.gpu_speed import main
    work, models, out = tmp_path / "work", tmp_path / "models", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    lever = {"status": "ok", "steps_per_s": 50.0, "crops_per_s": 15000.0, "first_pass_s": 3.0, "flags": ["--amp"],
             "note": "bf16", "amp": True}
    (work / "levers.json").write_text(json.dumps({
        "device": "NVIDIA H100 80GB HBM3", "flops_per_step": 9.89e11, "crops_per_step": 300, "way": 100,
        "channels": 32, "episodes": 20, "passes": 2, "levers": {"eager_bf16": lever}}))
    (work / "original.json").write_text(json.dumps({"original_crops_per_s": 4000.0}))
    (work / "eer_short.json").write_text(json.dumps({"by_precision": {
        "fp32": {"s_per_1000_trials": 0.2, "baseline": 5.0, "speedup": 25.0}, "bf16": {"failed": "scores"}}}))
    (work / "exit.json").write_text(json.dumps({"after_last_epoch_s": 1.5, "workers": 12}))
    for name, flags in (("bf16", "--amp --cuda_graphs"), ("fp32", "--cuda_graphs"), ("ddp", "--amp")):
        (work / f"best_{name}.flags").write_text(flags + "\n")
    for run, rate in ((1, 30000.0), (2, 12000.0), (3, 20000.0), (4, 21000.0)):
        (models / f"baseline_{run:03d}").mkdir(parents=True)
        (models / f"baseline_{run:03d}" / "train_log.csv").write_text(
            f"epoch,samples_per_s\n1,10.0\n2,{rate}\n")
    summary = main(["summary", "--out", str(out), "--work", str(work), "--models", str(models)])
    assert summary["train_crops_per_s_bf16"] == 30000.0
    assert summary["train_mfu_bf16"] == pytest.approx(30000 / 300 * 9.89e11 / 989e12)   # 0.1
    assert summary["train_mfu_fp32"] == pytest.approx(12000 / 300 * 9.89e11 / 494e12)
    assert summary["train_speedup_vs_original"] == pytest.approx(7.5)
    assert summary["vox2_epoch_s"] == pytest.approx(1_092_009 / 30000)
    assert summary["torchrun_vs_plain_same_flags"] == pytest.approx(20000 / 21000)   # run 4: torchrun's flags
    assert summary["eer_short_speedup_vs_original"] == 25.0
    assert summary["eer_short_full_protocol_s_per_length_fp32"] == pytest.approx(0.2 * 250.2)
    assert "eer_short_speedup_vs_original_bf16" not in summary
    stem = f"{time.strftime('%Y-%m-%d')}-h100-speed"
    assert json.loads((out / f"{stem}.json").read_text())["levers"]["eager_bf16"]["steps_per_s"] == 50.0
    table = (out / f"{stem}.md").read_text()
    assert "| train_mfu_bf16 | 0.100 |" in table
    assert "| eager_bf16 | `--amp` | 50.0 | 15,000 | 5.0 % | 1.00 | 3.0 | ok | bf16 |" in table
