"""Where ``train.py``'s start-up goes, phase by phase: ``python bench/startup_phases.py T0 -- TRAIN_FLAGS``.

Runs ``train.main(TRAIN_FLAGS)`` in this fresh process exactly as ``python train.py TRAIN_FLAGS`` would,
with timing wrappers around trainer's steps (bench only: the project's modules are not changed),
and stops when the first episode reaches the training step. Prints one JSON line: for each phase
its wall-clock start and end in seconds after ``T0`` (the launcher's ``time.time()`` just before it
started this process, so interpreter start-up counts) and the CPU seconds this process spent in it
(``getrusage``: user + system of the main process only; DataLoader workers are other processes).

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
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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


class FirstEpisode(Exception):
    """Raised by the wrapped training step: the first episode has arrived."""


def main(origin: float, train_argv: list) -> dict:
    timeline = Timeline(origin)
    interpreter = {"name": "interpreter start-up", "start": 0.0, "end": STARTED - origin, "depth": 0,
                   "parent": None, "cpu": cpu_seconds()}
    timeline.phases.append(interpreter)
    phase = timeline.begin("import train (argparse, yaml, configure, model -> torch)")
    import train
    timeline.end(phase)
    phase = timeline.begin("import trainer (data, distributed, evaluation, run_folder)")
    import trainer
    timeline.end(phase)
    wrap_phases(timeline, train, trainer)
    cpu_before = cpu_seconds()
    try:
        train.main(train_argv)
    except FirstEpisode:
        pass
    else:
        raise SystemExit("error: train.py finished without a training step")
    arrived = timeline.phases[-1]["start"]
    return {"phases": timeline.phases, "first_episode_s": arrived, "cpu_s": cpu_seconds(),
            "cpu_in_train_main_s": cpu_seconds() - cpu_before}


def wrap_phases(timeline: Timeline, train, trainer) -> None:
    import configure
    import torch
    from data_loading import corpus as corpus_module
    from feat_extract import corpus_index
    timeline.wrap(train, "parse_args", "arguments: parse_args")
    timeline.wrap(configure, "apply_common_arguments", "arguments: apply_common_arguments (seeds)")
    timeline.wrap(trainer, "resolve_config", "config: resolve_config")
    timeline.wrap(trainer, "FeatureCorpus", "corpus: FeatureCorpus(root)")
    timeline.wrap(corpus_module, "load_index", "index: load_index")
    timeline.wrap(corpus_index, "read_index", "index: read .npz + checks")
    timeline.wrap(corpus_index, "store_fingerprint", "index: staleness fingerprint")
    for name in ("check_episode_config", "report_unused_speakers", "validation_from_config", "claim_run_folder",
                 "check_room_for_checkpoints", "training_device", "init_process_group", "check_same_corpus",
                 "build_encoder", "build_optimizer", "build_scheduler", "build_step", "build_loader",
                 "RunOutputs", "describe_run"):
        timeline.wrap(trainer, name)
    original_iter = torch.utils.data.DataLoader.__iter__

    def timed_iter(loader):
        phase = timeline.begin("DataLoader iter(): start workers")
        try:
            return original_iter(loader)
        finally:
            timeline.end(phase)
            timeline.begin("first episode: wait for worker 0")
    torch.utils.data.DataLoader.__iter__ = timed_iter

    def first_step(*args, **kwargs):
        if timeline.stack:
            timeline.end(timeline.stack[-1])
        timeline.begin("train_step (first episode arrived)")
        raise FirstEpisode()
    trainer.train_step = first_step


if __name__ == "__main__":
    origin = float(sys.argv[1])
    argv = sys.argv[sys.argv.index("--") + 1:]
    print(json.dumps(main(origin, argv)), flush=True)
