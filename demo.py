"""The whole system on the built-in synthetic corpus, on CPU, in a few minutes.

    python demo.py [--out demo_out] [--full] [--max_epoch N] [--n_episode N] [--channels 8]

Runs the real commands one after another (each is printed before it runs): synthetic corpus ->
feature extraction -> train.py (prototypical + GC, thin encoder) -> EER_full.py, EER_short.py
(1 s and 2 s) and identification.py, for the trained model and for the same encoder untrained, then
prints one table of the results (also written to <out>/results.md) and the time of every step.

By default the run is the quick one (fewer speakers, epochs and identification episodes: about
3 minutes on 2 idle cores); ``--full`` is the longer run with more training (about 8 minutes),
whose trained column is clearly better. Any size flag given explicitly overrides the preset.
"""
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from common.errors import run_main
import configure
from common.files import write_text
from evaluation.cli import result_name
from model.checkpoint import model_fields, save_checkpoint
from model.registry import build_model

TEST_LENGTHS = (100, 200)
# The two presets: the quick default and ``--full``; every value can be overridden by its flag.
PRESETS = {
    "quick": {"n_speakers": 24, "max_epoch": 4, "n_episode": 25, "nb_class_train": 16, "nb_episode": 50},
    "full": {"n_speakers": 40, "max_epoch": 8, "n_episode": 40, "nb_class_train": 20, "nb_episode": 100},
}


def parse_args(argv=None):
    parser = configure.argument_parser(__doc__)
    parser.add_argument("--out", default="demo_out", help="folder for data, checkpoints and results")
    parser.add_argument("--full", action="store_true",
                        help="the longer run (more speakers, epochs and episodes: about 8 minutes on 2 cores)")
    preset = "the preset's (quick: {}; --full: {})"
    for flag, what in (("n_speakers", "training speakers"), ("max_epoch", "training epochs"),
                       ("n_episode", "episodes per epoch"), ("nb_class_train", "speakers per episode"),
                       ("nb_episode", "identification episodes")):
        parser.add_argument(f"--{flag}", type=int, default=None,
                            help=f"{what}; default: " + preset.format(PRESETS["quick"][flag], PRESETS["full"][flag]))
    parser.add_argument("--n_test_speakers", type=int, default=10, help="unseen test speakers")
    parser.add_argument("--channels", type=int, default=8, help="encoder width (the paper's is 32)")
    parser.add_argument("--seed", type=int, default=0, help="corpus, training and evaluation seed")
    args = parser.parse_args(argv)
    for flag, value in PRESETS["full" if args.full else "quick"].items():
        if getattr(args, flag) is None:
            setattr(args, flag, value)
    return args


def run(command: list, what: str = "demo step", times: list = None) -> float:
    """Run one project command, showing it first and its wall time after; stop if it fails (``what``
    names the step in that message). Returns the seconds it took, also appended to ``times`` as
    ``(step, seconds)`` when given."""
    print(f"\n$ python {shlex.join(command)}", flush=True)
    started = time.time()
    completed = subprocess.run([sys.executable] + command, cwd=configure.PROJECT_ROOT)
    if completed.returncode != 0:
        sys.exit(f"error: {what} failed with exit code {completed.returncode}: {shlex.join(command)}")
    seconds = time.time() - started
    print(f"({command[0]}: {seconds:.0f} s)", flush=True)
    if times is not None:
        times.append((what, seconds))
    return seconds


def untrained_checkpoint(args, model_dir: Path) -> Path:
    """The same encoder before any training (epoch 0), as the table's reference column."""
    torch.manual_seed(args.seed)
    model = build_model("background_resnet", num_classes=args.n_speakers, channels=args.channels)
    path = model_dir / "untrained" / configure.checkpoint_name(0)
    save_checkpoint(path, epoch=0, state_dict=model.state_dict(), optimizer={}, **model_fields(model))
    return path


def evaluate(checkpoint: Path, data: Path, args, label: str, times: list) -> dict:
    """EER_full, EER_short and identification for one checkpoint (``label``: which one, for the
    step times); their JSON results."""
    common = ["--checkpoint", str(checkpoint), "--save_path", str(data), "--data_type", "vox1",
              "--seed", str(args.seed)]
    run(["EER_full.py", *common, "--trials", str(data / "voxceleb1/test/veri_test.txt")],
        f"EER_full.py ({label})", times)
    run(["EER_short.py", *common, "--test_length", *map(str, TEST_LENGTHS)], f"EER_short.py ({label})", times)
    run(["identification.py", *common, "--nb_class_test", str(args.n_test_speakers),
         "--nb_episode", str(args.nb_episode)], f"identification.py ({label})", times)
    number = configure.checkpoint_number(checkpoint)
    return {name: json.loads((checkpoint.parent / result_name(name, number, ".json")).read_text())
            for name in ("eer_full", "eer_short", "identification")}


def results_table(untrained: dict, trained: dict, args) -> str:
    rows = [("EER, full utterances (%)", lambda r: r["eer_full"]["eer"]),
            ("minDCF(0.05), full utterances", lambda r: r["eer_full"]["mindcf_0.05"])]
    for length in TEST_LENGTHS:
        rows.append((f"EER, {length / 100:g} s test crops (%)",
                     lambda r, n=str(length): r["eer_short"]["by_test_length"][n]["eer"]))
    identification = untrained["identification"]
    rows.append((f"identification, {identification['n_way']}-way 1-shot (%)",
                 lambda r: r["identification"]["accuracy"]))
    lines = ["| unseen test speakers | untrained | trained |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {value(untrained):.2f} | {value(trained):.2f} |" for name, value in rows]
    chance = 100 / identification["n_way"]
    lines.append(f"\nChance: EER 50 %, identification {chance:.0f} %. Encoder: ResNet-34 of width "
                 f"{args.channels}, {args.max_epoch} epochs x {args.n_episode} episodes "
                 f"({args.nb_class_train}-way, 1 shot, 2 queries, GC).")
    return "\n".join(lines)


def step_times_table(times: list, total: float) -> str:
    """Wall time of every step, and of the whole demo, as a markdown table."""
    lines = ["| step | seconds |", "| --- | ---: |"]
    lines += [f"| {step} | {seconds:.1f} |" for step, seconds in times]
    lines.append(f"| whole demo | {total:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    started, times = time.time(), []
    out = Path(args.out).resolve()
    data, model_dir = out / "data", out / "saved_model"
    run(["dataprep.py", "--synthetic", "--save_path", str(data), "--n_speakers", str(args.n_speakers),
         "--n_test_speakers", str(args.n_test_speakers), "--seed", str(args.seed)], "dataprep.py --synthetic", times)
    run(["feat_extract/feature_extraction.py", "--save_path", str(data)], "feature_extraction.py", times)
    run(["train.py", "--loss_type", "prototypical", "--use_GC", "True", "--n_shot", "1", "--n_query", "2",
         "--use_variable", "True", "--nb_class_train", str(args.nb_class_train), "--data_type", "vox1",
         "--save_path", str(data), "--model_dir", str(model_dir), "--channels", str(args.channels),
         "--max_epoch", str(args.max_epoch), "--n_episode", str(args.n_episode), "--seed", str(args.seed),
         "--overwrite"], "train.py", times)  # a rerun of the demo moves the previous demo run aside
    trained = evaluate(configure.checkpoint_path(0, args.max_epoch, model_dir), data, args, "trained", times)
    untrained = evaluate(untrained_checkpoint(args, model_dir), data, args, "untrained", times)
    table = results_table(untrained, trained, args)
    steps = step_times_table(times, time.time() - started)
    write_text(out / "results.md", f"{table}\n\n{steps}\n")
    print(f"\n{table}\n\n{steps}\n\nDemo finished in {time.time() - started:.0f} s; results in {out}")


if __name__ == "__main__":
    run_main(main)
