"""The markdown table of one bench/gpu_check.sh run: ``python bench/gpu_summary.py --out OUT --work WORK``.

Reads what the check left: ``steps.tsv`` (exit code and seconds per step), ``versions.txt``,
``gpu_samples.csv`` (time, memory used, utilisation every 0.5 s), the four training runs'
``train_log.csv``, ``bench.json``, the evaluation JSON/score files and ``equivalence.json``.
Training MFU: crops/s x mean frames per crop / 200 x GMAC_PER_CROP x 3 (forward + backward) x 2
FLOPs per MAC, over the card's dense peak (bench/training_bench.py).
"""
import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.training_bench import GMAC_PER_CROP, PEAK_TFLOPS  # noqa: E402
from common.files import write_text  # noqa: E402
from data_loading.episodes import CROP_FRAMES, QUERY_FRAMES_RANGE  # noqa: E402

TRAIN_RUNS = {1: ("train_fp32_autotune", "fp32 (TF32 convs), cuDNN autotuning", False),
              2: ("train_fp32", "fp32 (TF32 convs), no autotuning", False),
              3: ("train_amp", "bf16 autocast (--amp), no autotuning", True),
              4: ("train_torchrun", "torchrun 1 process, NCCL + DDP + SyncBN, --amp", True)}


def read_steps(out: Path) -> dict:
    steps = {}
    for line in (out / "steps.tsv").read_text().splitlines():
        name, rc, seconds = line.split("\t")
        steps[name] = (rc, float(seconds))
    return steps


def mean_frames_per_crop(n_shot: int = 1, n_query: int = 2) -> float:
    """Support crops are CROP_FRAMES long; query lengths are uniform over QUERY_FRAMES_RANGE."""
    query = (QUERY_FRAMES_RANGE[0] + QUERY_FRAMES_RANGE[1] - 1) / 2
    return (n_shot * CROP_FRAMES + n_query * query) / (n_shot + n_query)


def peak_for(gpu_name: str, amp: bool):
    for fragment, peaks in PEAK_TFLOPS.items():
        if fragment in gpu_name:
            return peaks[0] if amp else peaks[1]
    return None


def training_rows(work: Path, steps: dict, gpu_name: str) -> list:
    rows = ["| run | steps | epoch s (first, last) | crops/s (last epoch) | MFU | exit |",
            "| --- | ---: | --- | ---: | ---: | --- |"]
    for number, (step, label, amp) in TRAIN_RUNS.items():
        log = work / f"train_log_{number}.csv"
        if not log.exists():
            rows.append(f"| {label} | - | - | - | - | {steps.get(step, ('missing',))[0]} |")
            continue
        epochs = list(csv.DictReader(log.open()))
        rate = float(epochs[-1]["samples_per_s"])
        peak = peak_for(gpu_name, amp)
        flops = rate * mean_frames_per_crop() / 200 * GMAC_PER_CROP * 1e9 * 3 * 2
        mfu = f"{100 * flops / (peak * 1e12):.1f} % of {peak:g}" if peak else "-"
        seconds = f"{float(epochs[0]['seconds']):.1f}, {float(epochs[-1]['seconds']):.1f}"
        rows.append(f"| {label} | {len(epochs)} epochs | {seconds} | {rate:,.0f} | {mfu} | "
                    f"{steps.get(step, ('?',))[0]} |")
    return rows


def peak_memory_mib(out: Path) -> float:
    values = []
    for line in (out / "gpu_samples.csv").read_text().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) >= 3 and parts[1].split()[0].isdigit():
            values.append(float(parts[1].split()[0]))
    return max(values) if values else float("nan")


def score_difference(work: Path) -> str:
    gpu = sorted((work / "eval_gpu").glob("scores_full_cp*.txt"))
    cpu = sorted((work / "eval_cpu").glob("scores_full_cp*.txt"))
    if not gpu or not cpu:
        return "score files missing"
    def scores(path):
        return [float(line.split()[1]) for line in path.read_text().splitlines() if line.strip()]
    a, b = scores(gpu[0]), scores(cpu[0])
    if len(a) != len(b):
        return f"different trial counts {len(a)} vs {len(b)}"
    return f"{len(a)} trials, max |GPU - CPU| = {max(abs(x - y) for x, y in zip(a, b)):.2e}"


def evaluation_rows(work: Path) -> list:
    rows = []
    for pattern, describe in (("eer_full_cp*.json", lambda r: f"EER {r['eer']:.2f} %, minDCF(0.05) "
                                                             f"{r['mindcf_0.05']:.3f}"),
                              ("eer_short_cp*.json", lambda r: ", ".join(
                                  f"{int(k) / 100:g} s: EER {v['eer']:.2f} %"
                                  for k, v in r["by_test_length"].items())),
                              ("identification_cp*.json", lambda r: f"{r['n_way']}-way accuracy "
                                                                    f"{r['accuracy']:.2f} %")):
        for folder in ("eval_gpu", "eval_cpu"):
            for path in sorted((work / folder).glob(pattern)):
                rows.append(f"- {folder} {path.name}: {describe(json.loads(path.read_text()))}")
    return rows


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--way", type=int, default=100)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    versions = (args.out / "versions.txt").read_text()
    gpu_name = next((line.split(" gpu ", 1)[1] for line in versions.splitlines() if " gpu " in line), "")
    steps = read_steps(args.out)
    lines = ["## Versions", "", "```", versions.strip(), "```", "", "## Steps (exit code, seconds)", "",
             "| step | exit | s |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {rc} | {seconds:.1f} |" for name, (rc, seconds) in steps.items()]
    lines += ["", f"## Training, {args.way}-way 1-shot 2-query episodes, variable queries", ""]
    lines += training_rows(args.work, steps, gpu_name)
    lines += ["", f"Peak GPU memory used (nvidia-smi, whole check): {peak_memory_mib(args.out):,.0f} MiB", ""]
    lines += ["## Evaluation", "", f"- EER_full scores GPU vs CPU: {score_difference(args.work)}"]
    lines += evaluation_rows(args.work)
    equivalence = args.work / "equivalence.json"
    if equivalence.exists():
        lines += ["", "## Embeddings against the CPU's (max abs difference)", "", "```",
                  equivalence.read_text().strip(), "```"]
    for bench in sorted(args.out.glob("bench_*.md")):
        lines += ["", f"## bench/run.py ({bench.stem})", "", bench.read_text().strip()]
    text = "\n".join(lines) + "\n"
    if args.markdown:
        write_text(args.markdown, text)
    print(text)
    return text


if __name__ == "__main__":
    main()
