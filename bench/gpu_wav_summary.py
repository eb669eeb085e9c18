"""The table of bench/gpu_wav_check.sh: per training input, the step's wall time, each epoch's time and
throughput (train_log.csv), and the time spent outside the epochs.

    python bench/gpu_wav_summary.py --out gpu_out --way 100 --markdown gpu_out/summary.md
"""
import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.files import write_text  # noqa: E402

RUNS = {1: ("train_features", "crops from the stored features (the paper)"),
        2: ("train_wav", "--input wav: crops from the recordings, fbank on the fly"),
        3: ("train_wav_augment", "--input wav --augment (noise/music/babble + RIRs)"),
        4: ("train_wav_augment_speed", "--input wav --augment --speed_perturb"),
        5: ("train_wav_device", "--input wav --wav_fbank device: fbank on the GPU in the step"),
        6: ("train_wav_augment_device", "--input wav --wav_fbank device --augment")}


def read_steps(out: Path) -> dict:
    """steps.tsv rows: name -> (exit code, seconds)."""
    steps = {}
    path = out / "steps.tsv"
    if path.is_file():
        for line in path.read_text().splitlines():
            name, rc, seconds = line.split("\t")
            steps[name] = (rc, float(seconds))
    return steps


def read_log(path: Path) -> list:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def table(out: Path) -> str:
    steps = read_steps(out)
    lines = ["| training input | exit | step s | epoch 1 s | epoch 2 s | epoch 2 crops/s | outside epochs s | loss epoch 2 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run, (name, label) in RUNS.items():
        rc, seconds = steps.get(name, ("missing", 0.0))
        rows = read_log(out / f"train_log_{run}.csv")
        epochs = [float(row["seconds"]) for row in rows]
        cells = [label, rc, f"{seconds:.1f}"]
        cells += [f"{epochs[0]:.1f}" if epochs else "", f"{epochs[1]:.1f}" if len(epochs) > 1 else ""]
        cells += [rows[1]["samples_per_s"] if len(rows) > 1 else "",
                  f"{seconds - sum(epochs):.1f}" if epochs else "", rows[-1]["loss"] if rows else ""]
        lines.append("| " + " | ".join(cells) + " |")
    extra = [f"- {name}: exit {rc}, {seconds:.1f} s" for name, (rc, seconds) in steps.items()
             if name not in {run[0] for run in RUNS.values()}]
    return "\n".join(lines + [""] + extra) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the folder bench/gpu_wav_check.sh wrote")
    parser.add_argument("--way", type=int, default=100, help="speakers per episode (for the heading)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    text = f"Training input on the GPU ({args.way}-way episodes, 1 support + 2 variable queries)\n\n" + table(args.out)
    print(text)
    if args.markdown:
        write_text(args.markdown, text)


if __name__ == "__main__":
    sys.exit(main())
