"""embed.py (batched; long recordings streamed: audio blocks -> fbank blocks -> exact overlapping
chunks) vs the original one-file-one-forward strategy: peak memory and throughput for one 10 s,
10 min, 1 h and 2 h recording, and for many 8 s files.

    python bench/embed_bench.py [--width 8] [--repeats 3] [--only "10 min" "1 h"] [--out bench/results/DATE-embed.md]

Each measurement runs in a fresh interpreter (so peak RSS is that run's alone: VmHWM); both
strategies load the same checkpoint and read the same wav. "original" is what the paper's code
does for a full utterance (and what embed.py did first): the whole waveform read, its features in
one python_speech_features call, one forward of the whole recording. "ours" is
``embed.py --batch_size 16`` with its defaults (150 s chunks, 60 s audio blocks). Times are the
embedding work inside the process (interpreter and model start-up excluded); values are medians of
``--repeats`` runs (``--hour_repeats`` for 1 h and 2 h). The original strategy is not run on inputs
longer than ``--original_max_s`` (default 1 h: 2 h would need ~12 GB).
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
CASES = (("10 s", 10.0, 1), ("32 files of 8 s", 8.0, 32), ("10 min", 600.0, 1), ("1 h", 3600.0, 1),
         ("2 h", 7200.0, 1))
LONG_CASES = ("1 h", "2 h")


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: reset by exec, unlike ru_maxrss, which a child
    inherits from the parent it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(strategy: str, checkpoint: str, wav_root: str, device: str = "cpu") -> None:
    """One measurement: embed every wav under ``wav_root``; print JSON (seconds, peak RSS, peak GPU memory)."""
    import torch
    import embed as embed_cmd
    from feat_extract.fbank import log_mel_fbank_int16
    from feat_extract.features import model_input
    from speaker_api import SpeakerEncoder, load_samples
    encoder = SpeakerEncoder.from_checkpoint(checkpoint, device=device)
    wavs = sorted(Path(wav_root).rglob("*.wav"))
    before = peak_rss_mb()
    start = time.perf_counter()
    if strategy == "original":
        for wav in wavs:
            samples, _, _ = load_samples(wav)
            with torch.no_grad():     # the whole recording in one forward
                embedding = encoder.model(model_input(log_mel_fbank_int16(samples)[None]).to(device))[0]
            assert torch.isfinite(embedding).all()
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


def run_cases(width: int, repeats: int, work: Path, hour_repeats: int, device: str, only=None,
              original_max_s: float = 3600.0) -> list:
    import torch
    from bench.synthetic import write_wavs
    from model.checkpoint import save_checkpoint
    from model.registry import build_model
    torch.manual_seed(0)
    checkpoint = work / "cp.pth"
    save_checkpoint(checkpoint, epoch=1, state_dict=build_model("background_resnet", num_classes=10, channels=width).state_dict(), optimizer={})
    rows = []
    for name, seconds, n_files in CASES:
        if only and name not in only:
            continue
        wav_root = work / name.replace(" ", "_")
        write_wavs(wav_root, n_files=n_files, seconds=seconds, seed=1)
        strategies = ("original", "ours") if seconds * n_files <= original_max_s else ("ours",)
        runs = {strategy: [] for strategy in strategies}
        for _ in range(hour_repeats if name in LONG_CASES else repeats):   # alternate: load hits both alike
            for strategy in runs:
                runs[strategy].append(measure(strategy, checkpoint, wav_root, device))
        row = {"case": name, "audio_s": seconds * n_files, "width": width,
               "original": {"failed": "not run"}}
        for strategy, results in runs.items():
            ok = [r for r in results if "failed" not in r]
            row[strategy] = ({"seconds": median_of(ok, "seconds"), "peak_rss_mb": median_of(ok, "peak_rss_mb"),
                              "rss_before_mb": median_of(ok, "rss_before_mb"),
                              "peak_gpu_mb": median_of(ok, "peak_gpu_mb"), "runs": len(ok)}
                             if ok else {"failed": results[0]["failed"]})
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
        for wav in wav_root.rglob("*.wav"):     # a 2 h wav is 230 MB: do not keep it past its case
            wav.unlink()
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
        cells += [f"{s:,.1f}" if s else r["failed"] for s, r in zip(speeds, (original, ours))]
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
    parser.add_argument("--hour_repeats", type=int, default=3, help="repeats of the 1 h and 2 h cases")
    parser.add_argument("--original_max_s", type=float, default=3600.0,
                        help="run the original strategy only on inputs up to this many seconds")
    parser.add_argument("--out", default=None, help="markdown table (and .json beside it)")
    parser.add_argument("--only", nargs="+", choices=[case[0] for case in CASES], default=None,
                        help="measure only these cases (e.g. --only '1 h')")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rows = run_cases(args.width, args.repeats, Path(work), args.hour_repeats, args.device, args.only,
                         args.original_max_s)
    text = table(rows, args.width, f"{args.repeats} ({args.hour_repeats} for 1 h and 2 h)", args.device)
    print(text)
    if args.out:
        from common.files import write_text
        write_text(args.out, text)
        write_text(Path(args.out).with_suffix(".json"), json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
