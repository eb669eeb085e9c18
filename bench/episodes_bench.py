"""Episode assembly: episodes/s and bytes read per episode, ours vs the original's pickle loads.

Ours: ``EpisodeDataset`` (each crop one ``os.preadv`` of exactly its rows, headers validated once when
the corpus is listed), timed in the main process and behind a DataLoader with worker processes.
Baseline: the same episode plans assembled in the main thread from whole-file float64 pickles.
Both produce bit-identical crops for the same plan (asserted before timing; float16: equal up to
float16 rounding).

Bytes are measured with /proc/self/io in this process: ``rchar`` (bytes requested from the kernel)
for one warm episode, and ``read_bytes`` (bytes fetched from disk) for one episode after its files
were evicted from the page cache. The one-off header reads of corpus listing are reported apart, per
utterance. The analytic count, crop rows x 40 x itemsize, must equal the measured ``rchar``.
"""
import numpy as np
import torch

from bench.baseline import episode_from_pickles, pickle_path
from bench.io_counters import bytes_read, cold_bytes_read
from bench.report import Result
from bench.timing import median_seconds
from data_loading.corpus import FeatureCorpus
from data_loading.episodes import EpisodeConfig, EpisodeDataset

EPISODE = EpisodeConfig(n_way=100, n_shot=1, n_query=2, variable_query=True)


def assert_same_crops(ours: dict, baseline: dict, exact: bool) -> None:
    for key in ("support", "query", "label_g"):
        if exact:
            assert torch.equal(ours[key], baseline[key]), f"episode {key} differs from the baseline"
        else:  # float16 store: the same crops up to float16 rounding
            torch.testing.assert_close(ours[key].float(), baseline[key].float(), atol=2e-2, rtol=1e-2)


def crop_row_bytes(corpus: FeatureCorpus, plan) -> int:
    """Bytes of the crop rows an episode needs: what our reader requests (analytic; an utterance
    shorter than its crop is read whole once and tiled in memory)."""
    row_bytes = np.dtype(corpus.utterances[0].layout.dtype).itemsize * 40
    lengths = np.where(np.arange(len(plan.utterances)) < plan.n_support, plan.support_frames, plan.query_frames)
    n_frames = np.array([corpus.utterances[utt].n_frames for utt in plan.utterances])
    return int(row_bytes * np.minimum(lengths, n_frames).sum())


def pickle_bytes_per_episode(pickle_paths, plan) -> int:
    return sum(pickle_paths[utt].stat().st_size for utt in plan.utterances)


def startup_bytes_per_utterance(root) -> float:
    """Bytes requested while a corpus starts (its corpus index, built beforehand), per utterance."""
    FeatureCorpus(root)  # builds the index if it is missing
    listed = []
    requested = bytes_read(lambda: listed.append(FeatureCorpus(root)))
    return None if requested is None else requested / len(listed[0])


def loader_of(dataset, workers: int):
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                       pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                                       prefetch_factor=4 if workers > 0 else None)


def drain(loader) -> None:
    for _ in loader:
        pass


def measured_bytes(corpus, dataset, pickle_paths, plan, index: int) -> dict:
    """Warm (requested) and cold (from disk) bytes of episode ``index``, ours and the baseline's."""
    ours_paths = [corpus.utterances[utt].path for utt in plan.utterances]
    their_paths = [pickle_paths[utt] for utt in plan.utterances]
    return {
        "ours": bytes_read(lambda: dataset[index]),
        "baseline": bytes_read(lambda: episode_from_pickles(pickle_paths, plan)),
        "ours_cold": cold_bytes_read(ours_paths, lambda: dataset[index]),
        "baseline_cold": cold_bytes_read(their_paths, lambda: episode_from_pickles(pickle_paths, plan)),
    }


def bytes_results(store, dtype: str, corpus, dataset, pickle_paths) -> list:
    plan = dataset.plan(0)
    measured = measured_bytes(corpus, dataset, pickle_paths, plan, 0)
    rows = crop_row_bytes(corpus, plan)
    if measured["ours"] is None:  # no /proc/self/io: the analytic counts
        measured.update(ours=rows, baseline=pickle_bytes_per_episode(pickle_paths, plan))
    header = startup_bytes_per_utterance(store.root(dtype))
    cold = ("cold cache: n/a" if measured["ours_cold"] is None else
            f"cold cache from disk {measured['ours_cold']:,} B vs {measured['baseline_cold']:,} B")
    results = [Result(f"bytes_per_episode_{dtype}", measured["ours"], "bytes", measured["baseline"], False,
                      6.0 if dtype == "float32" else 12.0,
                      f"requested (/proc/self/io rchar); crop rows {rows:,} B; {cold}")]
    if header is not None:
        results.append(Result(f"startup_bytes_per_utterance_{dtype}", header, "bytes", None, False, None,
                              "reading the corpus index at start-up (no feature file is opened)"))
    return results


def worker_counts(workers: int) -> list:
    """1 worker and ``workers``: on few cores, N workers + the main process can oversubscribe them."""
    return sorted({1, workers}) if workers > 0 else []


def loader_seconds(dataset, workers: int, repeats: int) -> float:
    loader = loader_of(dataset, workers)
    drain(loader)  # start the workers
    return median_seconds(lambda: drain(loader), repeats)


def speed_results(dtype: str, dataset, pickle_paths, n_episodes: int, repeats: int, workers: int) -> list:
    baseline = n_episodes / median_seconds(  # planning included, as in our dataset's __getitem__
        lambda: [episode_from_pickles(pickle_paths, dataset.plan(i)) for i in range(n_episodes)], repeats)
    in_process = n_episodes / median_seconds(lambda: [dataset[i] for i in range(n_episodes)], repeats)
    shape = "100-way 1-shot 2-query; baseline: main-thread float64 pickles"
    results = [Result(f"episodes_per_s_{dtype}_in_process", in_process, "episodes/s", baseline, True, 3.0,
                      f"{shape}; ours in the main thread too")]
    for count in worker_counts(workers):
        with_workers = n_episodes / loader_seconds(dataset, count, repeats)
        results.append(Result(f"episodes_per_s_{dtype}_{count}_workers", with_workers, "episodes/s",
                              baseline, True, 3.0,
                              f"{shape}; DataLoader; {with_workers / in_process:.2f}x in-process"))
    return results


def episode_results(store, dtype: str, n_episodes: int, repeats: int, workers: int, seed=0) -> list:
    corpus = FeatureCorpus(store.root(dtype))
    dataset = EpisodeDataset(corpus, EPISODE, n_episodes=n_episodes, seed=seed)
    pickle_paths = [pickle_path(store, utt.path) for utt in FeatureCorpus(store.float32).utterances]
    for index in range(min(2, n_episodes)):
        assert_same_crops(dataset[index], episode_from_pickles(pickle_paths, dataset.plan(index)),
                          exact=dtype == "float32")
    return (bytes_results(store, dtype, corpus, dataset, pickle_paths)
            + speed_results(dtype, dataset, pickle_paths, n_episodes, repeats, workers))
