"""Where ``train.py``'s start-up goes, phase by phase:
``python bench/startup_phases.py T0 [--episodes 1 125 250] [--code DIR] [--listed] -- TRAIN_FLAGS``.

Runs ``train.main(TRAIN_FLAGS)`` in this fresh process exactly as ``python train.py TRAIN_FLAGS`` would,
with timing wrappers around the set-up's steps (training/run.py; ``trainer.py`` in checkouts before
the training package; bench only: the project's modules are not changed),
and stops when the first episode reaches the training step. With ``--episodes``, the training step is
skipped instead (episodes are taken from train.py's own DataLoader and dropped) and, after each count
of episodes per worker, every DataLoader worker's private memory (Private_Clean + Private_Dirty of
``/proc/<pid>/smaps_rollup``) and the main process's VmRSS are recorded. Prints one JSON line: for each phase
its wall-clock start and end in seconds after ``T0`` (the launcher's ``time.time()`` just before it
started this process, so interpreter start-up counts) and the CPU seconds this process spent in it
(``getrusage``: user + system of the main process only; DataLoader workers are other processes).

``--code DIR`` imports the project from DIR (another checkout: before/after tables from one
harness); ``--listed`` gives train.py the corpus before the index (bench/listed_corpus.py).

Phases that run inside other phases (the index read inside the corpus) are listed as well, with
their ``parent``; the phases at depth 0 follow one another and add up to the total.
"""
import time

STARTED = time.time()  # before any import of this process (interpreter start-up is before it)

import functools  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    if "--code" in sys.argv[:sys.argv.index("--")]:
        sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--code") + 1]).resolve()))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Timeline:
    def __init__(self, origin: float):
        self.origin = origin
        self.phases = []
        self.stack = []

    def begin(self, name: str) -> dict:
        phase = {"name": name, "start": time.time() - self.origin, "cpu_start": cpu_seconds(),
                 "depth": len(self.stack), "parent": self.stack[-1]["name"] if self.stack else None}
        self.phases.append(phase)
        self.stack.append(phase)
        return phase

    def end(self, phase: dict) -> None:
        phase["end"] = time.time() - self.origin
        phase["cpu"] = cpu_seconds() - phase.pop("cpu_start")
        self.stack.remove(phase)

    def wrap(self, owner, attribute: str, name: str = None) -> None:
        function = getattr(owner, attribute)
        timeline = self

        @functools.wraps(function)
        def timed(*args, **kwargs):
            phase = timeline.begin(name or attribute)
            try:
                return function(*args, **kwargs)
            finally:
                timeline.end(phase)
        setattr(owner, attribute, timed)


class Stop(Exception):
    """Raised by the wrapped training step: the first episode (or the last one measured) has arrived."""


def private_bytes(pid: int) -> int:
    """Pages only this process holds (copied on write or on reference-count/GC touches)."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                fields[name] = int(value.split()[0]) * 1024
    return fields["Private_Clean"] + fields["Private_Dirty"]


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def main(origin: float, train_argv: list, episodes: list = (), listed: bool = False) -> dict:
    timeline = Timeline(origin)
    interpreter = {"name": "interpreter start-up", "start": 0.0, "end": STARTED - origin, "depth": 0,
                   "parent": None, "cpu": cpu_seconds()}
    timeline.phases.append(interpreter)
    phase = timeline.begin("import train (argparse, yaml, configure, model -> torch)")
    import train
    timeline.end(phase)
    phase = timeline.begin("import training.run (data, distributed, evaluation, run_folder)")
    setup, loop = training_modules()
    timeline.end(phase)
    if listed:
        from bench.listed_corpus import ListedCorpus
        setup.FeatureCorpus = ListedCorpus
    memory = {}
    wrap_phases(timeline, train, setup, loop, list(episodes), memory)
    cpu_before = cpu_seconds()
    try:
        train.main(train_argv)
    except Stop:
        pass
    else:
        raise SystemExit("error: train.py finished before the episodes to measure")
    arrived = next(phase["start"] for phase in timeline.phases if phase["name"].startswith("train_step"))
    return {"phases": timeline.phases, "first_episode_s": arrived, "cpu_s": cpu_seconds(),
            "cpu_in_train_main_s": cpu_seconds() - cpu_before, **memory}


def training_modules() -> tuple:
    """(the module whose globals train.py's set-up calls, the module whose loop calls ``train_step``):
    training.run and training.loop, or ``trainer`` twice in a checkout from before the package."""
    try:
        import training.loop
        import training.run
        return training.run, training.loop
    except ImportError:
        import trainer
        return trainer, trainer


def memory_step(episodes: list, memory: dict):
    """A training step that records memory after ``episodes`` episodes per worker instead of training."""
    import multiprocessing

    import torch
    workers = None
    taken = 0

    def step(*args, **kwargs):
        nonlocal workers, taken
        taken += 1
        workers = workers or [child.pid for child in multiprocessing.active_children()]
        per_worker = taken / max(len(workers), 1)
        if episodes and per_worker >= episodes[0]:
            memory.setdefault("worker_private_bytes", {})[str(episodes.pop(0))] = [private_bytes(pid)
                                                                                   for pid in workers]
            memory.setdefault("main_rss_bytes", {})[str(int(per_worker))] = rss_bytes()
        if not episodes:
            raise Stop()
        return {"loss": torch.zeros(())}
    return step


def wrap_phases(timeline: Timeline, train, setup, loop, episodes: list, memory: dict) -> None:
    import configure
    import torch
    from data_loading import corpus as corpus_module
    from feat_extract import corpus_index
    timeline.wrap(train, "parse_args", "arguments: parse_args")
    timeline.wrap(configure, "apply_common_arguments", "arguments: apply_common_arguments (seeds)")
    timeline.wrap(setup, "resolve_config", "config: resolve_config")
    timeline.wrap(setup, "FeatureCorpus", "corpus: FeatureCorpus(root)")
    timeline.wrap(corpus_module, "load_index", "index: load_index")
    timeline.wrap(corpus_index, "read_index", "index: read .npz + checks")
    timeline.wrap(corpus_index, "store_fingerprint", "index: staleness fingerprint")
    for name in ("check_episode_config", "report_unused_speakers", "validation_from_config", "validation_for",
                 "claim_run_folder",
                 "check_room_for_checkpoints", "training_device", "init_process_group", "check_same_corpus",
                 "build_encoder", "new_encoder", "place_encoder", "build_optimizer", "build_scheduler",
                 "build_step", "build_loader", "RunOutputs", "describe_run"):
        if hasattr(setup, name):  # (this harness also times older code, for before/after tables)
            timeline.wrap(setup, name)
    timeline.wrap(torch.utils.data.DataLoader, "__iter__", "DataLoader iter(): workers start")
    iterator = torch.utils.data.dataloader._BaseDataLoaderIter
    original_next = iterator.__next__

    def first_next(batches):
        phase = timeline.begin("next(): wait for the first episode")
        try:
            return original_next(batches)
        finally:
            timeline.end(phase)
            iterator.__next__ = original_next
    iterator.__next__ = first_next

    measure = memory_step(episodes, memory)

    def first_step(*args, **kwargs):
        timeline.begin("train_step (first episode arrived)")
        loop.train_step = measure
        return measure(*args, **kwargs)
    loop.train_step = first_step


if __name__ == "__main__":
    split = sys.argv.index("--")
    options = sys.argv[1:split]
    counts = []
    for option in options[options.index("--episodes") + 1:] if "--episodes" in options else []:
        if not option.isdigit():
            break
        counts.append(int(option))
    print(json.dumps(main(float(options[0]), sys.argv[split + 1:], counts, "--listed" in options)), flush=True)
