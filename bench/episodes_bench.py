"""Episode assembly: episodes/s and bytes read per episode, ours vs the original's pickle loads.

Ours: EpisodeDataset (memory-mapped ``.npy`` crops) behind a DataLoader with worker processes.
Baseline: the same episode plans assembled in the main thread from whole-file float64 pickles.
Both produce identical crops for the same plan (asserted before timing).

Bytes read are computed analytically, not measured (the page cache cannot be dropped without root):
the baseline reads each pickle file whole; a memory-mapped crop touches the 4 KiB pages its rows
span, plus the first page of the file that np.load reads for the header. Kernel read-ahead on a cold
cache is not counted.
"""
import numpy as np
import torch

from bench.baseline import episode_from_pickles, pickle_path
from bench.report import Result
from bench.timing import median_seconds
from data_loading.corpus import FeatureCorpus
from data_loading.episodes import EpisodeConfig, EpisodeDataset

PAGE = 4096
EPISODE = EpisodeConfig(n_way=100, n_shot=1, n_query=2, variable_query=True)


def assert_same_crops(ours: dict, baseline: dict, exact: bool) -> None:
    for key in ("support", "query", "label_g"):
        if exact:
            assert torch.equal(ours[key], baseline[key]), f"episode {key} differs from the baseline"
        else:  # float16 store: the same crops up to float16 rounding
            torch.testing.assert_close(ours[key].float(), baseline[key].float(), atol=2e-2, rtol=1e-2)


def data_offset(path) -> int:
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        read_header(handle)
        return handle.tell()


def crop_pages(offset: int, row_bytes: int, start: int, length: int) -> set:
    first = offset + start * row_bytes
    last = first + length * row_bytes - 1
    return set(range(first // PAGE, last // PAGE + 1))


def mmap_bytes_per_episode(corpus: FeatureCorpus, plan) -> tuple:
    """(bytes in touched pages, bytes of the crop rows themselves) for one episode plan."""
    row_bytes = np.load(corpus.utterances[0].path, mmap_mode="r").dtype.itemsize * 40
    page_total = data_total = 0
    for position, (utt, start) in enumerate(zip(plan.utterances, plan.starts)):
        length = plan.support_frames if position < plan.n_support else plan.query_frames
        offset = data_offset(corpus.utterances[utt].path)
        pages = crop_pages(offset, row_bytes, start, length) | {0}
        page_total += len(pages) * PAGE
        data_total += length * row_bytes
    return page_total, data_total


def pickle_bytes_per_episode(pickle_paths, plan) -> int:
    return sum(pickle_paths[utt].stat().st_size for utt in plan.utterances)


def loader_of(dataset, workers: int):
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                       pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                                       prefetch_factor=4 if workers > 0 else None)


def drain(loader) -> None:
    for _ in loader:
        pass


def episode_results(store, dtype: str, n_episodes: int, repeats: int, workers: int, seed=0) -> list:
    corpus = FeatureCorpus(store.root(dtype))
    dataset = EpisodeDataset(corpus, EPISODE, n_episodes=n_episodes, seed=seed)
    float32_corpus = FeatureCorpus(store.float32)
    pickle_paths = [pickle_path(store, utt.path) for utt in float32_corpus.utterances]
    plans = [dataset.plan(index) for index in range(n_episodes)]
    for index in range(min(2, n_episodes)):
        assert_same_crops(dataset[index], episode_from_pickles(pickle_paths, plans[index]),
                          exact=dtype == "float32")
    loader = loader_of(dataset, workers)
    drain(loader)  # start the workers and warm the page cache
    ours = n_episodes / median_seconds(lambda: drain(loader), repeats)
    baseline = n_episodes / median_seconds(  # planning included, as in our dataset's __getitem__
        lambda: [episode_from_pickles(pickle_paths, dataset.plan(i)) for i in range(n_episodes)], repeats)
    del loader
    page_bytes, data_bytes = np.mean([mmap_bytes_per_episode(corpus, plan) for plan in plans], axis=0)
    pickle_bytes = np.mean([pickle_bytes_per_episode(pickle_paths, plan) for plan in plans])
    return [
        Result(f"episodes_per_s_{dtype}", ours, "episodes/s", baseline, True, 3.0,
               f"100-way 1-shot 2-query, {workers} workers; baseline: main-thread float64 pickles"),
        Result(f"bytes_per_episode_{dtype}", page_bytes, "bytes", pickle_bytes, False,
               6.0 if dtype == "float32" else 12.0,
               f"4 KiB pages touched (analytic); crop rows alone {data_bytes:,.0f} B "
               f"= {pickle_bytes / data_bytes:.1f}x less"),
    ]
