"""What VoxCeleb1-E/H cost on this machine: full-utterance embedding throughput of the paper's
ResNet-34 (width 32) through EER_full.py's own path (feature files read, length-sorted padded
batches, the resumable embedding cache), extrapolated to VoxCeleb1's 145,160 utterances; and the
rest of the protocol measured at full size: finding and sizing 145,160 feature files (a store of
small files in VoxCeleb's layout, bench/vox2_store.py), reading a 579,818-line list, reading 145,160 cached
embeddings back, scoring the E and H trials and their EER/minDCF.

    python bench/protocol_bench.py [--utterances 48] [--repeats 3] [--width 32] [--batch_size 16]
                                   [--out bench/results/DATE-protocol-cpu2.md]

Utterances are synthetic features of real length (uniform in 400-1,200 frames: mean 8 s, as
VoxCeleb1's 8.2 s), written once by bench/synthetic.py. The model has random weights (the time of a
forward does not depend on them) and 5,994 classes (the classifier is not run when embedding).
Throughput is the median over --repeats runs, each into a fresh cache folder.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VOX1_UTTERANCES = 145_160
VOX1_SPEAKERS = 1_251
PROTOCOL_TRIALS = {"O": 37_611, "E": 579_818, "H": 550_894}   # cleaned lists


def embedding_rate(store_root: Path, width: int, batch_size: int, repeats: int, work: Path) -> tuple:
    """(median utterances/s, the per-run times, n) of full-utterance embedding through the cache."""
    import torch
    from evaluation.embedding_cache import cached_embeddings
    from model.registry import build_model
    torch.manual_seed(0)
    model = build_model("background_resnet", num_classes=5994, channels=width).eval()
    paths = sorted(store_root.glob("*/*/*.npy"))
    located = {path.relative_to(store_root).with_suffix(".wav").as_posix(): path for path in paths}
    times = []
    for run in range(repeats):
        start = time.perf_counter()
        cached_embeddings(model, list(located), located, "cpu", batch_size, work / f"cache_{run}",
                          desc=f"run {run + 1}/{repeats}")
        times.append(time.perf_counter() - start)
    return len(paths) / statistics.median(times), times, len(paths)


def synthetic_list(path: Path, names: list, n_trials: int, rng) -> None:
    pairs = rng.integers(0, len(names), (n_trials, 2))
    labels = rng.integers(0, 2, n_trials)
    from common.files import write_text
    write_text(path, "".join(f"{label} {names[a]} {names[b]}\n" for label, (a, b) in zip(labels, pairs)))


def store_steps(store: Path) -> dict:
    """Seconds of finding and sizing every utterance of a VoxCeleb1-size store (145,160 small
    feature files of 1,251 speakers, bench/vox2_store.py's writer): what EER_full.py does per
    utterance before embedding (locate_features, then a header read for the length)."""
    from bench.vox2_store import write_vox2_store
    from evaluation.embedding import item_length
    from evaluation.trials import locate_features
    root = write_vox2_store(store, VOX1_UTTERANCES, VOX1_SPEAKERS)
    names = sorted(path.relative_to(root).with_suffix(".wav").as_posix() for path in root.glob("*/*/*.npy"))
    seconds = {}
    start = time.perf_counter()
    located = locate_features(names, [root])
    seconds["locate 145,160 feature files"] = time.perf_counter() - start
    start = time.perf_counter()
    assert min(item_length(located[name]) for name in names) > 0
    seconds["read 145,160 feature headers (lengths)"] = time.perf_counter() - start
    return seconds


def full_size_steps(work: Path) -> dict:
    """Seconds of the steps after embedding, at VoxCeleb1-E/H size."""
    from evaluation.embedding_cache import read_cache, write_part
    from evaluation.full_utterance import cosine_trial_scores
    from evaluation.metrics import verification_report
    from evaluation.trials import read_trials
    rng = np.random.default_rng(0)
    names = [f"id{i // 116:05d}/video{i % 7:06d}/{i:05d}.wav" for i in range(VOX1_UTTERANCES)]
    embeddings = rng.standard_normal((VOX1_UTTERANCES, 256)).astype(np.float32)
    for begin in range(0, VOX1_UTTERANCES, 2048):
        write_part(work / "full_cache", names[begin:begin + 2048], np.full(len(names[begin:begin + 2048]), 800),
                   embeddings[begin:begin + 2048])
    seconds = {}
    start = time.perf_counter()
    cached = read_cache(work / "full_cache")
    seconds["read 145,160 cached embeddings"] = time.perf_counter() - start
    assert len(cached) == VOX1_UTTERANCES
    for protocol in ("E", "H"):
        synthetic_list(work / f"{protocol}.txt", names, PROTOCOL_TRIALS[protocol], rng)
        start = time.perf_counter()
        trials = read_trials(work / f"{protocol}.txt")
        seconds[f"read the {protocol} list ({PROTOCOL_TRIALS[protocol]:,} trials)"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = cosine_trial_scores(trials, names, embeddings)
        verification_report(trials.labels, scores.astype(np.float64))
        seconds[f"score {protocol} + EER/minDCF"] = time.perf_counter() - start
    return seconds


def markdown(args, rate, times, n, seconds) -> str:
    from bench.report import machine_description
    hours = VOX1_UTTERANCES / rate / 3600
    rest = sum(value for step, value in seconds.items() if "list" in step or "score" in step) / 2
    setup = sum(value for step, value in seconds.items() if "list" not in step and "score" not in step)
    lines = [f"# VoxCeleb1-E/H cost on this machine ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {machine_description()}", "",
             f"Command: `python bench/protocol_bench.py --utterances {args.utterances} --repeats {args.repeats} "
             f"--width {args.width} --batch_size {args.batch_size}`", "",
             "| step | measured | at VoxCeleb1-E/H size |", "| --- | ---: | ---: |",
             f"| full-utterance embedding, ResNet-34 width {args.width}, batch {args.batch_size}, through "
             f"the cache ({n} synthetic utterances, mean 8 s; runs "
             f"{', '.join(f'{t:.1f}' for t in times)} s) | {rate:.2f} utt/s (median of {args.repeats}) | "
             f"{hours:.1f} h for 145,160 utterances |"]
    lines += [f"| {step} | {value:.2f} s | {value:.2f} s |" for step, value in seconds.items()]
    lines += ["", f"Total for VoxCeleb1-E or -H from features: about {hours:.1f} h of embedding (each "
              f"utterance once; E and H share the cache, so both together cost the same), about "
              f"{setup:.0f} s of finding, sizing and reading back the utterances, and about {rest:.0f} s of list "
              "reading and scoring per list."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=48, help="synthetic utterances embedded per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--width", type=int, default=32, help="ResNet-34 channels (the paper's: 32)")
    parser.add_argument("--batch_size", type=int, default=16, help="EER_full.py's default")
    parser.add_argument("--out", default=None, help="markdown file for the results")
    parser.add_argument("--store", default=None,
                        help="folder for the VoxCeleb1-size store of small files (kept and reused; default: "
                             "a temporary folder)")
    args = parser.parse_args(argv)
    from bench.synthetic import write_feature_store
    from common.files import write_text
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        store = write_feature_store(work / "store", n_speakers=-(-args.utterances // 8), n_utterances=8,
                                    mean_frames=800)
        extra = sorted(store.float32.glob("*/*/*.npy"))[args.utterances:]
        for path in extra:
            path.unlink()
        rate, times, n = embedding_rate(store.float32, args.width, args.batch_size, args.repeats, work)
        seconds = {**store_steps(Path(args.store) if args.store else work / "vox1_size"), **full_size_steps(work)}
    text = markdown(args, rate, times, n, seconds)
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
