"""The VoxCeleb2-size store case: ``python bench/vox2_bench.py [--store DIR] [--workers 4]
[--episodes 25 250] [--markdown PATH] [--json PATH] [--skip_listing]``.

On a simulated VoxCeleb2-dev feature store (bench/vox2_store.py: 1,092,009 tiny float16 files of
5,994 speakers, written once into ``--store``, a few GB) it measures:

- building the corpus index (listing + every header, in parallel; one run, it takes a minute);
- start-up with the index: ``FeatureCorpus(root)`` in a fresh process (median of ``--repeats``);
- main-process memory: VmRSS growth of that process while it builds the corpus;
- each DataLoader worker's private memory (Private_Clean + Private_Dirty of
  ``/proc/<pid>/smaps_rollup``) after each count of ``--episodes`` 100-way 1-shot 2-query episodes
  per worker, the largest worker reported;
- a fresh process from its start to its first 100-way episode along train.py's own path (parser,
  ``training.run.prepare``, ``training.data.build_loader`` with ``--workers`` workers);

against today's listing before the index (bench/listed_corpus.py: sorted glob, a header read per
file, one Python object per utterance), measured in the same run the same way. Every measurement
runs in its own fresh process. Kept out of the test suite: it takes several minutes.
"""
import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report  # noqa: E402
from bench.vox2_store import VOX2_SPEAKERS, VOX2_UTTERANCES, write_vox2_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def private_bytes(pid: int) -> int:
    """Pages only this process holds (copied on write or on reference-count/GC touches)."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                fields[name] = int(value.split()[0]) * 1024
    return fields["Private_Clean"] + fields["Private_Dirty"]


def open_corpus(kind: str, store: Path):
    if kind == "index":
        from data_loading.corpus import FeatureCorpus
        return FeatureCorpus(store)
    from bench.listed_corpus import ListedCorpus
    return ListedCorpus(store)


def timed_corpus(kind: str, store: Path) -> tuple:
    """(corpus, seconds and VmRSS growth of building it in this fresh process)."""
    import numpy  # noqa: F401  (imports are not start-up of the corpus)
    import torch  # noqa: F401
    import bench.listed_corpus  # noqa: F401
    import data_loading.corpus  # noqa: F401
    before = rss_bytes()
    started = time.perf_counter()
    corpus = open_corpus(kind, store)
    seconds = time.perf_counter() - started
    return corpus, {"seconds": seconds, "rss_growth": rss_bytes() - before, "utterances": len(corpus)}


def child_startup(kind: str, store: Path) -> dict:
    return timed_corpus(kind, store)[1]


def child_workers(kind: str, store: Path, workers: int, checkpoints: list) -> dict:
    """Private memory of each DataLoader worker after ``checkpoints`` episodes each."""
    import torch

    from data_loading.episodes import EpisodeConfig, EpisodeDataset
    corpus, result = timed_corpus(kind, store)
    dataset = EpisodeDataset(corpus, EpisodeConfig(n_way=100, n_shot=1, n_query=2, variable_query=True),
                             max(checkpoints) * workers + 4 * workers, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, shuffle=False)
    batches = iter(loader)
    children = []
    result["workers"] = {}
    done = 0
    started = time.perf_counter()
    for checkpoint in checkpoints:
        while done < checkpoint * workers:
            next(batches)
            done += 1
        children = children or [child.pid for child in multiprocessing.active_children()]
        result["workers"][str(checkpoint)] = [private_bytes(pid) for pid in children]
    result["episodes_per_s"] = done / (time.perf_counter() - started)
    result["main_rss"] = rss_bytes()
    del batches
    return result


def run_child(*args) -> dict:
    output = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *map(str, args)],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(output.stdout.strip().splitlines()[-1])
    print(f"measured {' '.join(map(str, args[:2]))}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def child_first_episode(kind: str, store: Path, workers: int, work: Path) -> dict:
    """train.py's own path to its first episode: argument parsing, ``training.run.prepare`` (the corpus,
    checks), ``training.data.build_loader`` (``workers`` DataLoader workers) and the first 100-way episode."""
    import configure
    save_path = work / "data"
    feat = configure.feature_dir(save_path, *configure.TRAIN_DATA["vox2"])
    feat.parent.mkdir(parents=True, exist_ok=True)
    if not feat.exists():
        feat.symlink_to(store.resolve(), target_is_directory=True)
    import torch

    import contextlib

    import train
    import training.run
    from training.data import build_loader
    if kind == "listed":  # the baseline: today's corpus swapped for the per-file listing
        from bench.listed_corpus import ListedCorpus
        training.run.FeatureCorpus = ListedCorpus
    args = configure.apply_common_arguments(train.build_parser().parse_args(
        ["--save_path", str(save_path), "--model_dir", str(work / "m"), "--workers", str(workers),
         "--channels", "4", "--nb_class_train", "100", "--use_cuda", "False"]))
    with contextlib.ExitStack() as claims:
        run = training.run.prepare(args, claims)
    loader, sampler = build_loader(run.corpus, run.config, run.n_episodes, run.ctx, torch.device("cpu"))
    sampler.set_epoch(1)
    episode = next(iter(loader))
    return {"support": list(episode["support"].shape)}


def first_episode_seconds(kind: str, store: Path, workers: int) -> float:
    """Wall time of a fresh process from its start (interpreter and imports included) to its first
    episode, as ``train.py`` would get there."""
    with tempfile.TemporaryDirectory(prefix="meta_sr_vox2_train_") as work:
        started = time.perf_counter()
        run_child("first_episode", kind, store, workers, work)
        seconds = time.perf_counter() - started
    print(f"measured first episode {kind}: {seconds:.1f} s", file=sys.stderr, flush=True)
    return seconds


def index_build_seconds(store: Path) -> float:
    from feat_extract import corpus_index
    (store / corpus_index.INDEX_NAME).unlink(missing_ok=True)
    started = time.perf_counter()
    corpus_index.load_index(store)
    return time.perf_counter() - started


def fingerprint_seconds(store: Path, repeats: int) -> float:
    from feat_extract.corpus_index import store_fingerprint
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        store_fingerprint(store)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def largest(worker_bytes: dict, checkpoint) -> float:
    return max(worker_bytes[str(checkpoint)]) / MB


def measure(args) -> list:
    store = write_vox2_store(args.store, args.utterances, args.speakers)
    build = None if args.reuse_index else index_build_seconds(store)
    print(f"measured index build: {build} s", file=sys.stderr, flush=True)
    ours = run_child("workers", "index", store, args.workers, *args.episodes)
    startups = [ours["seconds"]] + [run_child("startup", "index", store)["seconds"]
                                    for _ in range(args.repeats - 1)]
    listed = None if args.skip_listing else run_child("workers", "listed", store, args.workers, *args.episodes)
    first = first_episode_seconds("index", store, args.workers)
    first_listed = None if listed is None else first_episode_seconds("listed", store, args.workers)
    n = ours["utterances"]
    base = (lambda key: None) if listed is None else (lambda key: listed[key])
    results = [] if build is None else [
        report.Result("index_build_s", build, "s", None, False, None,
                      f"{n:,} files: listing + every header, {os.cpu_count()} processes, written atomically")]
    results += [
        report.Result("startup_s", statistics.median(startups), "s", base("seconds"), False, None,
                      f"FeatureCorpus(root) in a fresh process, median of {len(startups)}; of which the "
                      f"fingerprint (a stat of every speaker folder) {fingerprint_seconds(store, 3):.2f} s; "
                      "baseline: sorted glob + a header read per file"),
        report.Result("main_process_corpus_mb", ours["rss_growth"] / MB, "MB",
                      None if listed is None else listed["rss_growth"] / MB, False, None,
                      "VmRSS growth while the corpus is built"),
    ]
    for checkpoint in args.episodes:
        results.append(report.Result(
            f"worker_private_mb_after_{checkpoint}_episodes", largest(ours["workers"], checkpoint), "MB",
            None if listed is None else largest(listed["workers"], checkpoint), False, None,
            f"largest of {args.workers} DataLoader workers, Private_Clean+Private_Dirty of smaps_rollup; "
            f"all: {', '.join(f'{b / MB:.0f}' for b in ours['workers'][str(checkpoint)])}"
            + ("" if listed is None else
               f" vs {', '.join(f'{b / MB:.0f}' for b in listed['workers'][str(checkpoint)])}")))
    results.append(report.Result("train_start_to_first_episode_s", first, "s", first_listed, False, None,
                                 f"a fresh process running train.py's parser, training.run.prepare and build_loader "
                                 f"({args.workers} workers) to its first 100-way 1-shot 2-query episode"))
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "meta_sr_vox2_store",
                        help="where the simulated store is (written once, reused)")
    parser.add_argument("--utterances", type=int, default=VOX2_UTTERANCES)
    parser.add_argument("--speakers", type=int, default=VOX2_SPEAKERS)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers")
    parser.add_argument("--episodes", type=int, nargs="+", default=[25, 250],
                        help="episodes per worker after which worker memory is read")
    parser.add_argument("--repeats", type=int, default=3, help="start-up runs (median)")
    parser.add_argument("--skip_listing", action="store_true", help="do not measure the baseline (minutes)")
    parser.add_argument("--reuse_index", action="store_true",
                        help="keep the store's corpus index (no index_build_s row; minutes saved)")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv=None) -> list:
    from common.files import write_text
    if argv is None and sys.argv[1:2] == ["--child"]:
        kind, corpus, store, *rest = sys.argv[2:]
        if kind == "startup":
            print(json.dumps(child_startup(corpus, Path(store))))
        elif kind == "first_episode":
            print(json.dumps(child_first_episode(corpus, Path(store), int(rest[0]), Path(rest[1]))))
        else:
            print(json.dumps(child_workers(corpus, Path(store), int(rest[0]), [int(r) for r in rest[1:]])))
        return []
    args = parse_args(argv)
    results = measure(args)
    print(report.text_table(results))
    command = "python bench/vox2_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.markdown:
        write_text(args.markdown, report.markdown_table(results, command.strip()))
    if args.json:
        write_text(args.json, report.results_json(results) + "\n")
    return results


if __name__ == "__main__":
    main()
