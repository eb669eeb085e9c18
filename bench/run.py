"""Run the benchmark suite and print its table: ``python bench/run.py [--quick] [--only NAME ...]
[--json OUT] [--markdown PATH]``.

All data is synthetic and written into a temporary folder first: feature files averaging 8 s stored
as float32 .npy, float16 .npy and (for the baselines) float64 pickles, plus a few wavs. Each value is
the median of ``--repeats`` runs; each baseline is measured in the same run on the same data.
"""
import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import configure  # noqa: E402
from bench import report  # noqa: E402
from common.errors import UserInputError, run_main  # noqa: E402
from common.files import write_text  # noqa: E402
from data_loading.episodes import EpisodeConfig  # noqa: E402

BENCHMARKS = ("episodes", "store", "eer_short", "extraction", "torch_fbank", "training", "flops")


@dataclass
class Sizes:
    """How much work each benchmark does (full run vs --quick)."""
    speakers: int = 200
    utterances: int = 10
    episodes: int = 20
    eer_speakers: int = 20
    eer_pairs: int = 8   # x 2 / 10 utterances per speaker = 1.6 trials per utterance (paper: 1.63)
    eer_channels: int = 8
    wavs: int = 128
    fbank_signals: int = 32
    train_config: EpisodeConfig = EpisodeConfig(n_way=10, n_shot=1, n_query=2, variable_query=True)
    train_steps: int = 2
    train_warmup: int = 1


QUICK = Sizes(speakers=100, utterances=3, episodes=3, eer_speakers=4, eer_pairs=3, eer_channels=4, wavs=16,
              fbank_signals=4,
              train_config=EpisodeConfig(n_way=2, n_shot=1, n_query=1, variable_query=True), train_steps=1)
GPU_TRAIN = EpisodeConfig(n_way=100, n_shot=1, n_query=2, variable_query=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (under a minute)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=None, help="run only these")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per measurement (default 5, quick 1)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers for our data path (default: min(8, cores))")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write a markdown table here (e.g. bench/results/<date>-<machine>.md)")
    parser.add_argument("--tmp_dir", type=Path, default=None, help="where the synthetic data goes")
    configure.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        raise UserInputError(f"--repeats must be at least 1, got {args.repeats}")
    if args.workers is not None and args.workers < 0:
        raise UserInputError(f"--workers must be 0 or more, got {args.workers}")
    return configure.apply_common_arguments(args)


def run_benchmarks(names, sizes: Sizes, repeats: int, workers: int, device, work_dir: Path) -> list:
    from bench.synthetic import write_feature_store
    results = []
    store = None
    if {"episodes", "store", "training"} & set(names):
        store = write_feature_store(work_dir / "store", sizes.speakers, sizes.utterances)
    if "episodes" in names:
        from bench.episodes_bench import episode_results
        for dtype in ("float32", "float16"):
            results += episode_results(store, dtype, sizes.episodes, repeats, workers)
    if "store" in names:
        from bench.store_bench import store_results
        results += store_results(store)
    if "eer_short" in names:
        results += eer_short(sizes, repeats, device, work_dir)
    if "extraction" in names:
        from bench.extraction_bench import extraction_results
        results += extraction_results(work_dir / "extraction", sizes.wavs, 8.0, repeats)
    if "torch_fbank" in names:
        from bench.torch_fbank_bench import torch_fbank_results
        results += torch_fbank_results(sizes.fbank_signals, 8.0, repeats, device)
    if "training" in names:
        results += training(store, sizes, workers, device)
    if "flops" in names:
        from bench.training_bench import measured_gmac_per_crop
        results.append(report.Result("encoder_gmac_per_200_frame_crop", measured_gmac_per_crop(), "GMAC",
                                     note="torch FLOP counter / 2; MFU figures assume 2.4"))
    return results


def eer_short(sizes: Sizes, repeats: int, device, work_dir: Path) -> list:
    from bench.eer_short_bench import eer_short_results
    from bench.synthetic import write_feature_store
    store = write_feature_store(work_dir / "eer_store", sizes.eer_speakers, 10 if sizes.eer_speakers > 4 else 5,
                                seed=1)
    results = eer_short_results(store, sizes.eer_channels, sizes.eer_pairs, repeats, device)
    if device.type == "cuda":  # also the CPU figure the CPU target refers to
        import torch
        results += eer_short_results(store, sizes.eer_channels, sizes.eer_pairs, repeats, torch.device("cpu"))
    return results


def training(store, sizes: Sizes, workers: int, device) -> list:
    from bench.training_bench import training_results
    cpu = training_results(store, sizes.train_config, sizes.train_steps, sizes.train_warmup, workers,
                           __import__("torch").device("cpu"))
    if device.type != "cuda":
        return cpu
    steps = 5 if sizes is QUICK else 20
    return cpu + training_results(store, GPU_TRAIN, steps, 3, workers, device)


def main(argv=None) -> list:
    import os
    args = parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    repeats = args.repeats or (1 if args.quick else 5)
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    names = args.only or list(BENCHMARKS)
    with tempfile.TemporaryDirectory(prefix="meta_sr_bench_", dir=args.tmp_dir) as work_dir:
        results = run_benchmarks(names, sizes, repeats, workers, args.device, Path(work_dir))
    print(report.text_table(results))
    command = "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.json:
        write_text(args.json, report.results_json(results) + "\n")
    if args.markdown:
        write_text(args.markdown, report.markdown_table(results, command.strip()))
    return results


if __name__ == "__main__":
    run_main(main)
