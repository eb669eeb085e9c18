"""The helper of bench/gpu_speed.sh: every issue-23 lever measured on one machine, then one summary.

    python bench/gpu_speed.py levers --save_path DATA --way 100 --channels 32 --json W/levers.json
    python bench/gpu_speed.py original --way 100 --json W/original.json --tmp_dir W
    python bench/gpu_speed.py eer_short --json W/eer_short.json --tmp_dir W
    python bench/gpu_speed.py exit_probe --json W/exit.json -- train.py FLAGS...
    python bench/gpu_speed.py summary --out OUT --work W --models M   -> OUT/<date>-<card>-speed.json, .md

``levers`` runs train.py's own set-up (training.run.build_parts) once per lever on the same episodes
(already in pinned memory: the step alone, the loader is measured by the train.py runs): one pass
over them (CUDA graph captures, compilation), then ``--passes`` timed passes. It writes the best
train.py flags for bf16, fp32 and torchrun (no CUDA graphs under DDP) beside its JSON.
MFU: FLOPs of one step's forward (torch.utils.flop_counter.FlopCounterMode; support 200 frames,
queries the mean of the shortest and longest length: FLOPs are linear in frames) x 3 for forward +
backward, against the card's dense peak (bf16 for --amp, TF32 otherwise; bench/training_bench.py).
"""
import argparse
import functools
import gc
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import configure  # noqa: E402

VOX2_CROPS = 1_092_009          # VoxCeleb2 dev utterances: one crop each per epoch
EER_SHORT_TRIALS = 250_200      # the paper's EER_short protocol, trials per test length
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass
class Lever:
    name: str
    flags: list
    note: str
    sync_every_step: bool = False
    pinned: bool = True
    cuda_only: bool = False
    compiles: bool = False
    amp: bool = field(init=False)

    def __post_init__(self):
        self.amp = "--amp" in self.flags


LEVERS = (  # the likely winners first, compilation last: a tight budget cuts only the tail
    Lever("eager_fp32", [], "today's step: fp32 (TF32 convolutions), channels-last on the GPU, torch's SGD"),
    Lever("eager_bf16", ["--amp"], "bf16 autocast (--amp), no fp32 casts in the loss"),
    Lever("graphs_bf16", ["--amp", "--cuda_graphs"], "one CUDA graph per episode shape + bf16", cuda_only=True),
    Lever("graphs_fused_bf16", ["--amp", "--cuda_graphs", "--sgd_impl", "fused"], "CUDA graphs + fused SGD",
          cuda_only=True),
    Lever("graphs_fp32", ["--cuda_graphs"], "CUDA graphs in fp32", cuda_only=True),
    Lever("fused_sgd_bf16", ["--amp", "--sgd_impl", "fused"], "fused SGD: one kernel"),
    Lever("foreach_sgd_bf16", ["--amp", "--sgd_impl", "foreach"], "SGD's foreach kernels (bitwise = for-loop)"),
    Lever("forloop_sgd_bf16", ["--amp", "--sgd_impl", "for-loop"], "SGD as a Python loop over parameters"),
    Lever("contiguous_bf16", ["--amp", "--channels_last", "False"], "NCHW instead of channels-last"),
    Lever("sync_every_step_bf16", ["--amp"], "loss.item() after every step (what the loop avoids)",
          sync_every_step=True),
    Lever("pageable_bf16", ["--amp"], "episodes in pageable, not pinned, memory", pinned=False),
    Lever("compile_graphs_bf16", ["--amp", "--compile", "--cuda_graphs", "--sgd_impl", "fused"],
          "torch.compile + CUDA graphs + fused SGD", cuda_only=True, compiles=True),
    Lever("compile_bf16", ["--amp", "--compile"], "torch.compile, query time axis dynamic", compiles=True),
    Lever("compile_fp32", ["--compile"], "torch.compile in fp32", compiles=True),
)


def peak_tflops(device_name: str, amp: bool):
    from bench.training_bench import PEAK_TFLOPS
    for fragment, peaks in PEAK_TFLOPS.items():
        if fragment in device_name:
            return peaks[0] if amp else peaks[1]
    return None


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def write_json(path: Path, content) -> None:
    from common.files import write_text
    write_text(path, json.dumps(content, indent=1) + "\n")


# ---------------------------------------------------------------- levers
def base_flags(args) -> list:
    return ["--loss_type", "prototypical", "--use_GC", "True", "--n_shot", "1", "--n_query", "2",
            "--use_variable", "True", "--nb_class_train", str(args.way), "--channels", str(args.channels),
            "--data_type", "vox1", "--save_path", str(args.save_path), "--workers", "0", "--seed", "0",
            "--use_cuda", str(torch.cuda.is_available())]


def lever_config(args, lever: Lever):
    import train
    from training.config import resolve_config
    return resolve_config(train.build_parser().parse_args(base_flags(args) + lever.flags))


def training_parts(config, corpus, n_episodes: int):
    """train.py's own set-up of encoder, step, optimiser and fast step (training.run.build_parts)."""
    from training.distributed import DistContext
    from training.run import TrainingRun, build_parts, training_device
    device = training_device(config, DistContext())
    torch.manual_seed(config.seed)
    return build_parts(TrainingRun(DistContext(), config, corpus, n_episodes), device)


def step_function(parts, config):
    from training.step import train_step
    return parts.fast_step or functools.partial(train_step, parts.step, parts.optimizer, device=parts.device,
                                                amp=config.amp)


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_passes(one_step, batches, passes: int, device, sync_every_step: bool) -> float:
    synchronize(device)
    started = time.perf_counter()
    for _ in range(passes):
        for batch in batches:
            parts = one_step(batch)
            if sync_every_step:
                parts["loss"].item()
    synchronize(device)
    return time.perf_counter() - started


def measure_lever(args, lever: Lever, corpus, episodes: dict) -> dict:
    """Steps/s of one lever over ``episodes`` after one untimed pass (captures, compilation)."""
    config = lever_config(args, lever)
    if lever.compiles:
        torch._dynamo.reset()
    parts = training_parts(config, corpus, len(episodes["pinned"]))
    one_step = step_function(parts, config)
    batches = episodes["pinned" if lever.pinned else "pageable"]
    first_pass_s = timed_passes(one_step, batches, 1, parts.device, lever.sync_every_step)
    seconds = timed_passes(one_step, batches, args.passes, parts.device, lever.sync_every_step)
    steps = args.passes * len(batches)
    return {"status": "ok", "steps_per_s": steps / seconds, "first_pass_s": first_pass_s,
            "crops_per_s": steps * config.episode.samples_per_class * config.episode.n_way / seconds}


def step_flops(args, corpus) -> float:
    """FLOPs of one training step: forward FLOPs (counted) x 3, queries of mean length."""
    from torch.utils.flop_counter import FlopCounterMode

    from data_loading.episodes import CROP_FRAMES, QUERY_FRAMES_RANGE
    config = lever_config(args, LEVERS[0])
    parts = training_parts(config, corpus, 1)
    episode, device = config.episode, parts.device
    support = torch.zeros(episode.n_way * episode.n_shot, 1, 40, CROP_FRAMES, device=device)
    label_g = torch.arange(episode.n_way, device=device).repeat(episode.n_shot + episode.n_query)
    counts = []
    for frames in (QUERY_FRAMES_RANGE[0], QUERY_FRAMES_RANGE[1] - 1):
        query = torch.zeros(episode.n_way * episode.n_query, 1, 40, frames, device=device)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            parts.step(support, query, label_g)
        counts.append(counter.get_total_flops())
    return 3.0 * sum(counts) / len(counts)


def lever_episodes(args, corpus) -> dict:
    from data_loading.episodes import EpisodeDataset
    config = lever_config(args, LEVERS[0])
    dataset = EpisodeDataset(corpus, config.episode, args.episodes, seed=0)
    pageable = [dataset[index] for index in range(args.episodes)]
    if not torch.cuda.is_available():
        return {"pinned": pageable, "pageable": pageable}
    pinned = [{key: value.pin_memory() for key, value in batch.items()} for batch in pageable]
    return {"pinned": pinned, "pageable": pageable}


def skip_reason(args, lever: Lever, started: float):
    if lever.cuda_only and not torch.cuda.is_available():
        return "skipped: needs CUDA"
    if lever.compiles and args.no_compile:
        return "skipped: --no_compile"
    if args.levers and lever.name not in args.levers:
        return "skipped: not in --levers"
    if time.perf_counter() - started > args.budget_s:
        return "skipped: time budget"
    return None


def run_levers(args) -> dict:
    import configure
    from data_loading.corpus import FeatureCorpus
    corpus = FeatureCorpus(configure.feature_dir(args.save_path, *configure.TRAIN_DATA["vox1"]))
    episodes = lever_episodes(args, corpus)
    started, results = time.perf_counter(), {}
    for lever in LEVERS:
        reason = skip_reason(args, lever, started)
        try:
            results[lever.name] = {"status": reason} if reason else measure_lever(args, lever, corpus, episodes)
        except Exception as error:  # a lever that fails on this card is a finding; the others still run
            results[lever.name] = {"status": f"failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"}
        results[lever.name].update(flags=lever.flags, note=lever.note, amp=lever.amp)
        print(lever.name, results[lever.name], flush=True)
        gc.collect()   # the lever's graphs and their memory pool go before the next lever starts
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    crops = args.way * 3
    report = {"device": device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
              "flops_per_step": step_flops(args, corpus), "crops_per_step": crops, "way": args.way,
              "channels": args.channels, "episodes": args.episodes, "passes": args.passes, "levers": results}
    write_json(args.json, report)
    write_best_flags(results, args.json.parent)
    return report


def best_lever(results: dict, amp: bool, allow_graphs: bool = True) -> str:
    candidates = [(value["steps_per_s"], name) for name, value in results.items()
                  if value["status"] == "ok" and value["amp"] == amp
                  and name not in ("sync_every_step_bf16", "pageable_bf16")   # slower by design
                  and (allow_graphs or "--cuda_graphs" not in value["flags"])]
    return max(candidates)[1] if candidates else ("eager_bf16" if amp else "eager_fp32")


def write_best_flags(results: dict, folder: Path) -> None:
    """best_bf16.flags, best_fp32.flags, best_ddp.flags: train.py flags of the fastest levers."""
    from common.files import write_text
    choices = {"bf16": best_lever(results, True), "fp32": best_lever(results, False),
               "ddp": best_lever(results, True, allow_graphs=False)}
    for name, lever in choices.items():
        flags = dict((lever_.name, lever_.flags) for lever_ in LEVERS)[lever]
        write_text(folder / f"best_{name}.flags", " ".join(flags) + "\n")


# ---------------------------------------------------------------- original, EER_short, exit
def run_original(args) -> dict:
    """The original's data path + step (float64 pickles assembled in the loop's thread, fp32):
    bench/training_bench.run_loop, ResNet-34 width 32, as bench/run.py measures it."""
    from bench.synthetic import write_feature_store
    from bench.training_bench import run_loop
    from data_loading.episodes import EpisodeConfig
    store = write_feature_store(args.tmp_dir / "original_store", n_speakers=args.way, n_utterances=3,
                                mean_frames=300, seed=2)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    crops_per_s, _ = run_loop(store, EpisodeConfig(args.way, 1, 2, True), args.steps, 2, 0, device, ours=False,
                              channels=args.channels)
    report = {"device": device_name(device), "original_crops_per_s": crops_per_s, "way": args.way,
              "channels": args.channels, "steps": args.steps}
    write_json(args.json, report)
    return report


def run_eer_short(args) -> dict:
    """bench/eer_short_bench in each --eval_precision against the original's per-trial fp32 strategy."""
    from bench.eer_short_bench import eer_short_results
    from bench.synthetic import write_feature_store
    speakers, utterances, pairs, channels = (4, 5, 3, 4) if args.quick else (20, 10, 8, 8)
    store = write_feature_store(args.tmp_dir / "eer_store", speakers, utterances, seed=1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = {"device": device_name(device), "by_precision": {}}
    for precision in PRECISIONS:
        try:
            result = eer_short_results(store, channels, pairs, args.repeats, device, precision=precision)[0]
            report["by_precision"][precision] = {"s_per_1000_trials": result.value, "baseline": result.baseline,
                                                 "speedup": result.gain, "note": result.note}
        except AssertionError as error:   # scores further from the fp32 baseline than allowed
            report["by_precision"][precision] = {"failed": str(error)}
    write_json(args.json, report)
    return report


def run_exit_probe(args) -> dict:
    """Seconds a train.py process lives after its last epoch line (persistent pinned workers each
    used to wait out a 5 s join timeout at interpreter exit: training/data.py stop_workers)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-u", *args.train_command], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    last_epoch = None
    for line in process.stdout:
        if line.startswith("Epoch "):
            last_epoch = time.perf_counter()
    process.wait()
    ended = time.perf_counter()
    command = args.train_command
    given = [int(value) for flag, value in zip(command, command[1:]) if flag == "--workers"]
    workers = given[-1] if given else None   # the last --workers wins, as argparse reads it
    report = {"returncode": process.returncode, "workers": workers, "wall_s": ended - started,
              "after_last_epoch_s": None if last_epoch is None else ended - last_epoch}
    write_json(args.json, report)
    return report


# ---------------------------------------------------------------- summary
TRAIN_RUNS = {"bf16": 1, "fp32": 2, "torchrun": 3, "plain_ddp_flags": 4, "torchrun_sync_bn": 6}   # baseline_00N


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def last_epoch_rate(models: Path, run: int):
    import csv
    log = models / configure.run_folder_name(run) / "train_log.csv"
    if not log.is_file():
        return None
    rows = list(csv.DictReader(log.open()))
    return float(rows[-1]["samples_per_s"]) if rows else None


def mfu(crops_per_s, levers: dict, amp: bool):
    peak = peak_tflops(levers.get("device", ""), amp)
    if crops_per_s is None or not peak or not levers.get("flops_per_step"):
        return None
    return crops_per_s / levers["crops_per_step"] * levers["flops_per_step"] / (peak * 1e12)


def ratio(top, bottom):
    return top / bottom if top and bottom else None


def headline(work: Path, models: Path) -> dict:
    levers, original = read_json(work / "levers.json"), read_json(work / "original.json")
    eer, exit_probe = read_json(work / "eer_short.json").get("by_precision", {}), read_json(work / "exit.json")
    rates = {name: last_epoch_rate(models, run) for name, run in TRAIN_RUNS.items()}
    flags = {name: (work / f"best_{name}.flags").read_text().strip() if (work / f"best_{name}.flags").is_file()
             else None for name in ("bf16", "fp32", "ddp")}
    summary = {"device": levers.get("device") or original.get("device"),
               "train_crops_per_s_bf16": rates["bf16"], "train_mfu_bf16": mfu(rates["bf16"], levers, True),
               "train_crops_per_s_fp32": rates["fp32"], "train_mfu_fp32": mfu(rates["fp32"], levers, False),
               "train_flags_bf16": flags["bf16"], "train_flags_fp32": flags["fp32"],
               "original_crops_per_s": original.get("original_crops_per_s"),
               "train_speedup_vs_original": ratio(rates["bf16"], original.get("original_crops_per_s")),
               "eer_short_speedup_vs_original": eer.get("fp32", {}).get("speedup"),
               "vox2_epoch_s": ratio(VOX2_CROPS, rates["bf16"]),
               "torchrun_1gpu_crops_per_s": rates["torchrun"], "torchrun_flags": flags["ddp"],
               "torchrun_vs_plain_same_flags": ratio(rates["torchrun"], rates["plain_ddp_flags"]
                                                     or (rates["bf16"] if flags["bf16"] == flags["ddp"] else None)),
               "torchrun_sync_bn_crops_per_s": rates["torchrun_sync_bn"],
               "exit_after_last_epoch_s": exit_probe.get("after_last_epoch_s"),
               "exit_probe_workers": exit_probe.get("workers"),
               "flops_per_step": levers.get("flops_per_step"), "crops_per_step": levers.get("crops_per_step")}
    for precision, result in eer.items():
        if "s_per_1000_trials" in result:
            summary[f"eer_short_speedup_vs_original_{precision}"] = result["speedup"]
            summary[f"eer_short_full_protocol_s_per_length_{precision}"] = (result["s_per_1000_trials"]
                                                                           * EER_SHORT_TRIALS / 1000)
    return summary


def cell(value, digits: int = 1, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.{digits}f} %" if percent else f"{value:,.{digits}f}"


def lever_rows(levers: dict) -> list:
    rows = ["| lever | train.py flags | steps/s | crops/s | MFU | vs eager, same precision | first pass s | "
            "status | what it changes |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    results = levers.get("levers", {})
    for name, result in results.items():
        eager = results.get("eager_bf16" if result["amp"] else "eager_fp32", {}).get("steps_per_s")
        rows.append(f"| {name} | `{' '.join(result['flags']) or '(none)'}` | {cell(result.get('steps_per_s'))} | "
                    f"{cell(result.get('crops_per_s'), 0)} | {cell(mfu(result.get('crops_per_s'), levers, result['amp']), 1, True)} | "
                    f"{cell(ratio(result.get('steps_per_s'), eager), 2)} | {cell(result.get('first_pass_s'))} | "
                    f"{result['status']} | {result['note']} |")
    return rows


def summary_markdown(summary: dict, levers: dict, out: Path) -> str:
    lines = [f"# GPU speed, {time.strftime('%Y-%m-%d')}, {summary['device']}", "",
             "Written by bench/gpu_speed.sh (docs/bench.md). Headline figures:", "",
             "| figure | value |", "| --- | ---: |"]
    for key, value in summary.items():
        shown = cell(value, 3) if isinstance(value, float) else ("-" if value is None else f"`{value}`")
        lines.append(f"| {key} | {shown} |")
    lines += ["", f"## Levers ({levers.get('way')}-way 1-shot 2-query episodes, width {levers.get('channels')}, "
              f"{levers.get('episodes')} episodes x {levers.get('passes')} timed passes, step only)", ""]
    lines += lever_rows(levers)
    steps = out / "steps.tsv"
    if steps.is_file():
        lines += ["", "## Steps (exit code, seconds)", "", "| step | exit | s |", "| --- | ---: | ---: |"]
        lines += [f"| {' | '.join(line.split(chr(9)))} |" for line in steps.read_text().splitlines() if line]
    return "\n".join(lines) + "\n"


def card_slug(device: str) -> str:
    import re
    match = re.search(r"(H200|H100|A100|L40S|L4|A10)", device or "")
    return match.group(1).lower() if match else re.sub(r"[^a-z0-9]+", "-", (device or "unknown").lower()).strip("-")


def run_summary(args) -> dict:
    from common.files import write_text
    summary = headline(args.work, args.models)
    levers = read_json(args.work / "levers.json")
    stem = f"{time.strftime('%Y-%m-%d')}-{card_slug(summary['device'])}-speed"
    write_json(args.out / f"{stem}.json", {**summary, "levers": levers.get("levers", {}),
                                          "eer_short": read_json(args.work / "eer_short.json")})
    text = summary_markdown(summary, levers, args.out)
    write_text(args.out / f"{stem}.md", text)
    print(text)
    return summary


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="action", required=True)
    levers = commands.add_parser("levers")
    levers.add_argument("--save_path", type=Path, required=True)
    for sub in (levers, commands.add_parser("original")):
        sub.add_argument("--way", type=int, default=100)
        sub.add_argument("--channels", type=int, default=32)
    levers.add_argument("--episodes", type=int, default=20, help="episodes per pass")
    levers.add_argument("--passes", type=int, default=2, help="timed passes over them")
    levers.add_argument("--budget_s", type=float, default=240, help="no lever starts after this")
    levers.add_argument("--no_compile", action="store_true", help="skip the torch.compile levers")
    levers.add_argument("--levers", nargs="+", choices=[lever.name for lever in LEVERS], default=None,
                        help="measure only these (default: all)")
    commands.choices["original"].add_argument("--steps", type=int, default=20)
    eer = commands.add_parser("eer_short")
    eer.add_argument("--quick", action="store_true")
    eer.add_argument("--repeats", type=int, default=3)
    probe = commands.add_parser("exit_probe")
    probe.add_argument("train_command", nargs=argparse.REMAINDER, help="-- train.py flags...")
    summary = commands.add_parser("summary")
    for name in ("out", "work", "models"):
        summary.add_argument(f"--{name}", type=Path, required=True)
    for sub in (levers, commands.choices["original"], eer, probe):
        sub.add_argument("--json", type=Path, required=True)
    for sub in (commands.choices["original"], eer):
        sub.add_argument("--tmp_dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.action == "exit_probe":
        args.train_command = [part for part in args.train_command if part != "--"]
    return args


def main(argv=None):
    args = parse_args(argv)
    return {"levers": run_levers, "original": run_original, "eer_short": run_eer_short,
            "exit_probe": run_exit_probe, "summary": run_summary}[args.action](args)


if __name__ == "__main__":
    main()
