"""The VoxCeleb2-size store case: ``python bench/vox2_bench.py [--store DIR] [--workers 4]
[--episodes 25 250] [--markdown PATH] [--json PATH] [--skip_listing] [--train_only] [--compare DIR]``.

On a simulated VoxCeleb2-dev feature store (bench/vox2_store.py: 1,092,009 tiny float16 files of
5,994 speakers, written once into ``--store``, a few GB) it measures:

- building the corpus index (listing + every header, in parallel; one run, it takes a minute);
- start-up with the index: ``FeatureCorpus(root)`` in a fresh process (median of ``--repeats``);
- main-process memory: VmRSS growth of that process while it builds the corpus;
- each DataLoader worker's private memory (Private_Clean + Private_Dirty of
  ``/proc/<pid>/smaps_rollup``) after each count of ``--episodes`` 100-way 1-shot 2-query episodes
  per worker, the largest worker reported;
- ``python train.py`` itself (100-way 1-shot 2-query episodes, width 32, ``--workers`` workers) from
  the start of its process to its first episode, median of ``--repeats``, phase by phase with the
  main process's CPU seconds (bench/startup_phases.py), and in one more run its main-process RSS and
  each of its DataLoader workers' private memory after ``--train_episodes`` episodes each
  (``--train_only``: just these rows, a few minutes; ``--compare DIR``: another checkout's train.py
  measured the same way, alternating with ours, as their baseline);

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
from bench.startup_phases import private_bytes, rss_bytes  # noqa: E402
from bench.vox2_store import VOX2_SPEAKERS, VOX2_UTTERANCES, write_vox2_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20


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


TRAIN_FLAGS = ("--nb_class_train", "100", "--n_shot", "1", "--n_query", "2", "--use_variable", "True",
               "--use_cuda", "False")   # the paper's episodes; the paper's width (32) and ResNet-34


def train_store_link(store: Path, work: Path) -> Path:
    """A --save_path under ``work`` whose VoxCeleb2 dev feature folder is a link to ``store``."""
    import configure
    save_path = work / "data"
    feat = configure.feature_dir(save_path, *configure.TRAIN_DATA["vox2"])
    feat.parent.mkdir(parents=True, exist_ok=True)
    if not feat.exists():
        feat.symlink_to(store.resolve(), target_is_directory=True)
    return save_path


def train_phases(store: Path, workers: int, episodes=(), code: Path = None, listed: bool = False,
                 train_flags=TRAIN_FLAGS) -> dict:
    """``python train.py`` (100-way episodes, ``workers`` workers) in a fresh process, timed phase by
    phase up to its first episode by bench/startup_phases.py (with ``episodes``: also the workers'
    private memory after that many episodes each); the wall clock starts just before the process."""
    with tempfile.TemporaryDirectory(prefix="meta_sr_vox2_train_") as work:
        save_path = train_store_link(store, Path(work))
        options = [*(["--episodes", *map(str, episodes)] if episodes else []),
                   *(["--code", str(code)] if code else []), *(["--listed"] if listed else [])]
        flags = ["--save_path", str(save_path), "--model_dir", str(Path(work) / "models"), "--workers", str(workers),
                 *train_flags]
        started = time.time()
        output = subprocess.run([sys.executable, str(ROOT / "bench" / "startup_phases.py"), repr(started), *options,
                                 "--", *flags], cwd=code or ROOT, capture_output=True, text=True)
    if output.returncode:
        raise RuntimeError(f"train.py start-up run failed:\n{output.stderr[-3000:]}")
    result = json.loads(output.stdout.strip().splitlines()[-1])
    result["load_average"] = os.getloadavg()
    print(f"measured train.py to its first episode{' (listed)' if listed else ''}: {result['first_episode_s']:.2f} s, "
          f"main CPU {result['cpu_s']:.2f} s, load {result['load_average'][0]:.1f}", file=sys.stderr, flush=True)
    return result


def phase_medians(runs: list) -> list:
    """(phase name, depth, median wall seconds, median CPU seconds) of every phase of ``runs``, in the
    order of the first run (a phase inside another follows it, one deeper)."""
    table = []
    for first in runs[0]["phases"]:
        found = [phase for run in runs for phase in run["phases"]
                 if (phase["name"], phase["depth"]) == (first["name"], first["depth"])]
        table.append((first["name"], first["depth"],
                      statistics.median(phase.get("end", phase["start"]) - phase["start"] for phase in found),
                      statistics.median(phase.get("cpu", 0.0) for phase in found)))
    return table


def phase_note(runs: list) -> str:
    loads = [run["load_average"][0] for run in runs]
    phases = "; ".join(f"{'(inside) ' * depth}{name.split(' (')[0]} {wall:.2f} s ({cpu:.2f} s CPU)"
                       for name, depth, wall, cpu in phase_medians(runs) if wall >= 0.05 or cpu >= 0.05)
    firsts = ", ".join(f"{run['first_episode_s']:.2f}" for run in runs)
    return (f"{firsts} s at load average "
            f"{min(loads):.1f}-{max(loads):.1f}; phases (median wall, main-process CPU): {phases}")


def train_rows(args, store: Path, first_listed: float = None) -> list:
    """The rows measured along train.py's own path (first episode, phases, memory of its workers).
    Baseline: ``--compare DIR``'s train.py measured the same way, its runs alternating with ours; else,
    for the first episode only, ``first_listed`` (the listed corpus), when measured."""
    runs, compared = [], []
    for _ in range(args.repeats):
        runs.append(train_phases(store, args.workers))
        if args.compare:
            compared.append(train_phases(store, args.workers, code=args.compare))
    memory = train_phases(store, args.workers, args.train_episodes)
    old_memory = train_phases(store, args.workers, args.train_episodes, code=args.compare) if args.compare else None

    def median(of, key):
        return statistics.median(run[key] for run in of) if of else None

    def largest(result, count):
        return None if result is None else max(result["worker_private_bytes"][str(count)]) / MB
    against = f"; {args.compare}: {phase_note(compared)}" if compared else ""
    rows = [report.Result("train_start_to_first_episode_s", median(runs, "first_episode_s"), "s",
                          median(compared, "first_episode_s") if compared else first_listed, False, None,
                          f"python train.py (100-way 1-shot 2-query, width 32, {args.workers} workers), median of "
                          f"{len(runs)}: {phase_note(runs)}{against}"),
            report.Result("train_main_cpu_to_first_episode_s", median(runs, "cpu_s"), "s", median(compared, "cpu_s"),
                          False, None, "CPU seconds (user + system) of train.py's main process to the first episode "
                          "(getrusage; workers not included): what the machine's load inflates least"),
            report.Result("train_main_rss_mb", max(memory["main_rss_bytes"].values()) / MB, "MB",
                          old_memory and max(old_memory["main_rss_bytes"].values()) / MB, False, None,
                          "VmRSS of train.py's main process (torch, model, corpus index) while its workers run")]
    for count in args.train_episodes:
        sizes = memory["worker_private_bytes"][str(count)]
        old = "" if old_memory is None else \
            f" vs {', '.join(f'{b / MB:.1f}' for b in old_memory['worker_private_bytes'][str(count)])}"
        rows.append(report.Result(
            f"train_worker_private_mb_after_{count}_episodes", max(sizes) / MB, "MB", largest(old_memory, count),
            False, None, f"train.py's own DataLoader ({args.workers} workers, prefetch 4, persistent), largest "
            f"worker's Private_Clean+Private_Dirty after {count} episodes each; all (MiB): "
            f"{', '.join(f'{b / MB:.1f}' for b in sizes)}{old}"))
    return rows


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
    if args.train_only:
        return train_rows(args, store)
    build = None if args.reuse_index else index_build_seconds(store)
    print(f"measured index build: {build} s", file=sys.stderr, flush=True)
    ours = run_child("workers", "index", store, args.workers, *args.episodes)
    startups = [ours["seconds"]] + [run_child("startup", "index", store)["seconds"]
                                    for _ in range(args.repeats - 1)]
    listed = None if args.skip_listing else run_child("workers", "listed", store, args.workers, *args.episodes)
    first_listed = None if listed is None else train_phases(store, args.workers, listed=True)["first_episode_s"]
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
    return results + train_rows(args, store, first_listed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "meta_sr_vox2_store",
                        help="where the simulated store is (written once, reused)")
    parser.add_argument("--utterances", type=int, default=VOX2_UTTERANCES)
    parser.add_argument("--speakers", type=int, default=VOX2_SPEAKERS)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers")
    parser.add_argument("--episodes", type=int, nargs="+", default=[25, 250],
                        help="episodes per worker after which worker memory is read")
    parser.add_argument("--train_episodes", type=int, nargs="+", default=[1, 125, 250],
                        help="episodes per worker of train.py's own DataLoader after which memory is read")
    parser.add_argument("--repeats", type=int, default=3, help="start-up runs (median)")
    parser.add_argument("--train_only", action="store_true",
                        help="only the rows of train.py's own path (first episode, phases, memory): minutes")
    parser.add_argument("--compare", type=Path, default=None,
                        help="another checkout (e.g. before a change): its train.py is measured the same way, "
                             "alternating with ours, as the baseline of the train.py rows")
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
