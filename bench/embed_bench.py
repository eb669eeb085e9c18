"""embed.py (batched, exact chunks for long recordings) vs the original one-file-one-forward
strategy: peak memory and throughput for one 10 s, 10 min and 1 h recording, and for many 8 s files.

    python bench/embed_bench.py [--width 8] [--repeats 3] [--out bench/results/DATE-embed.md]

Each measurement runs in a fresh interpreter (so peak RSS, ``ru_maxrss``, is that run's alone: VmHWM); both
strategies load the same checkpoint, read the same wav and compute the same features. "original"
is what embed.py did before (and what the paper's code does for a full utterance): the whole
recording's features in one python_speech_features call and one forward. "ours" is
``embed.py --batch_size 16 --chunk_seconds 150``. Times are the embedding work inside the process
(interpreter and model start-up excluded); values are medians of ``--repeats`` runs.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CASES = (("10 s", 10.0, 1), ("32 files of 8 s", 8.0, 32), ("10 min", 600.0, 1), ("1 h", 3600.0, 1))
LONGEST = "1 h"


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: reset by exec, unlike ru_maxrss, which a child
    inherits from the parent it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(strategy: str, checkpoint: str, wav_root: str, device: str = "cpu") -> None:
    """One measurement: embed every wav under ``wav_root``; print JSON (seconds, peak RSS, peak GPU memory)."""
    import numpy as np
    import torch
    import embed as embed_cmd
    from feat_extract.fbank import log_mel_fbank
    from speaker_api import SpeakerEncoder, load_samples
    encoder = SpeakerEncoder.from_checkpoint(checkpoint, device=device)
    wavs = sorted(Path(wav_root).rglob("*.wav"))
    before = peak_rss_mb()
    start = time.perf_counter()
    if strategy == "original":
        for wav in wavs:
            samples, _, _ = load_samples(wav)
            embedding = encoder.embed_features(log_mel_fbank(samples))
            assert np.isfinite(embedding).all()
    else:
        with tempfile.TemporaryDirectory() as out:
            embed_cmd.main(["--checkpoint", checkpoint, "--out", out, "--use_cuda", str(device == "cuda"), wav_root])
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    gpu_mb = torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda" else 0.0
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": before,
                      "peak_gpu_mb": gpu_mb, "threads": torch.get_num_threads()}))


def measure(strategy, checkpoint, wav_root, device) -> dict:
    completed = subprocess.run([sys.executable, __file__, "--child", strategy, str(checkpoint), str(wav_root), device],
                               cwd=ROOT, capture_output=True, text=True)
    if completed.returncode != 0:
        return {"failed": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "killed"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def median_of(runs: list, key: str) -> float:
    return statistics.median(run[key] for run in runs)


def run_cases(width: int, repeats: int, work: Path, hour_repeats: int, device: str, only=None) -> list:
    import torch
    from bench.synthetic import write_wavs
    from model.checkpoint import save_checkpoint
    from model.model import background_resnet
    torch.manual_seed(0)
    checkpoint = work / "cp.pth"
    save_checkpoint(checkpoint, epoch=1, state_dict=background_resnet(10, channels=width).state_dict(), optimizer={})
    rows = []
    for name, seconds, n_files in CASES:
        if only and name not in only:
            continue
        wav_root = work / name.replace(" ", "_")
        write_wavs(wav_root, n_files=n_files, seconds=seconds, seed=1)
        runs = {strategy: [] for strategy in ("original", "ours")}
        for _ in range(hour_repeats if name == LONGEST else repeats):   # alternate: load hits both alike
            for strategy in runs:
                runs[strategy].append(measure(strategy, checkpoint, wav_root, device))
        row = {"case": name, "audio_s": seconds * n_files, "width": width}
        for strategy, results in runs.items():
            ok = [r for r in results if "failed" not in r]
            row[strategy] = ({"seconds": median_of(ok, "seconds"), "peak_rss_mb": median_of(ok, "peak_rss_mb"),
                              "rss_before_mb": median_of(ok, "rss_before_mb"),
                              "peak_gpu_mb": median_of(ok, "peak_gpu_mb"), "runs": len(ok)}
                             if ok else {"failed": results[0]["failed"]})
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows


def table(rows: list, width: int, repeats, device: str) -> str:
    import platform
    lines = [f"# embed.py vs one-file-one-forward (ResNet-34 width {width}, {device}, medians of {repeats})", "",
             f"machine: {platform.node()}, {os.cpu_count()} CPU cores", "",
             "| input | original: peak RSS | ours: peak RSS | original: peak GPU | ours: peak GPU | "
             "original: x real time | ours: x real time | speed-up |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        original, ours = row["original"], row["ours"]
        cells = []
        for key in ("peak_rss_mb", "peak_gpu_mb"):
            cells += [f"{r[key]:,.0f} MB" if key in r else r["failed"] for r in (original, ours)]
        speeds = [row["audio_s"] / r["seconds"] if "seconds" in r else None for r in (original, ours)]
        cells += [f"{s:,.0f}" if s else "failed" for s in speeds]
        cells.append(f"{speeds[1] / speeds[0]:.2f}x" if all(speeds) else "")
        lines.append(f"| {row['case']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(*sys.argv[2:6])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=8, help="ResNet-34 width (--channels); the paper's is 32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--hour_repeats", type=int, default=3, help="repeats of the 1 h case")
    parser.add_argument("--out", default=None, help="markdown table (and .json beside it)")
    parser.add_argument("--only", nargs="+", choices=[case[0] for case in CASES], default=None,
                        help="measure only these cases (e.g. --only '1 h')")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rows = run_cases(args.width, args.repeats, Path(work), args.hour_repeats, args.device, args.only)
    text = table(rows, args.width, f"{args.repeats} ({args.hour_repeats} for 1 h)", args.device)
    print(text)
    if args.out:
        from common.files import write_text
        write_text(args.out, text)
        write_text(Path(args.out).with_suffix(".json"), json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
