"""Does waveform augmentation help the paper's episodes? A measured comparison on the synthetic corpus.

    python bench/augment_compare.py --out augment_compare_out [--max_epoch 8 --n_episode 30 --seeds 0 1]

Runs the real commands (each printed before it runs): the synthetic corpus and its features, two
synthetic MUSAN/RIRS_NOISES-style sets (``dataprep.py --synthetic_augment`` with two seeds: one
to train with, one, never seen in training, to corrupt the test recordings), a noise-corrupted copy
of the test recordings (each gets noise, music or babble at 0-10 dB, and half of them also a room
response) and its features, then for each seed four training runs with the same budget (epochs,
episodes, width, seed): prototypical + GC with softmax GC (the paper) and with AAM-softmax GC, each
without and with ``--input wav --augment``. Every final checkpoint is scored with ``EER_full.py`` on
the clean and on the corrupted test recordings. Prints one table (also written to
``<out>/results.md``) with the EERs and each run's training time.
"""
import argparse
import functools
import json
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

import configure  # noqa: E402
from common.files import atomic_path, write_text  # noqa: E402
from demo import run as run_command  # noqa: E402
from data_loading import augment  # noqa: E402
from evaluation.cli import result_name  # noqa: E402
from feat_extract.fbank import INT16_SCALE  # noqa: E402

run = functools.partial(run_command, what="comparison step")   # shows the command, stops if it fails

TEST_SNR_DB = (0.0, 10.0)
TEST_REVERB_SHARE = 0.5
CORRUPTION_STREAM = 271828


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="augment_compare_out", help="folder for data, checkpoints and results")
    parser.add_argument("--n_speakers", type=int, default=24, help="training speakers")
    parser.add_argument("--n_test_speakers", type=int, default=10, help="unseen test speakers")
    parser.add_argument("--utterances_per_speaker", type=int, default=8)
    parser.add_argument("--max_epoch", type=int, default=8)
    parser.add_argument("--n_episode", type=int, default=30, help="episodes per epoch")
    parser.add_argument("--nb_class_train", type=int, default=12, help="speakers per episode")
    parser.add_argument("--channels", type=int, default=8, help="encoder width (the paper's is 32)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of each training run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (one row group each)")
    return parser.parse_args(argv)


def prepare_data(args, out: Path) -> None:
    clean = out / "clean"
    if not (clean / "voxceleb1/test/veri_test.txt").is_file():
        run(["dataprep.py", "--synthetic", "--save_path", str(clean), "--n_speakers", str(args.n_speakers),
             "--n_test_speakers", str(args.n_test_speakers), "--utterances_per_speaker",
             str(args.utterances_per_speaker), "--test_utterances_per_speaker", "6", "--seed", "0"])
        run(["feat_extract/feature_extraction.py", "--save_path", str(clean)])
    for name, seed in (("train_noise", 0), ("test_noise", 1)):
        if not (out / name / "augment").is_dir():
            run(["dataprep.py", "--synthetic_augment", "--save_path", str(out / name), "--seed", str(seed)])
    noisy = out / "noisy"
    if not (noisy / "voxceleb1/test/veri_test.txt").is_file():
        corrupt_test_recordings(clean / "voxceleb1/test", noisy / "voxceleb1/test", out / "test_noise/augment")
        run(["feat_extract/feature_extraction.py", "--save_path", str(noisy)])


def corrupt_test_recordings(source: Path, target: Path, noise_root: Path) -> None:
    """Every test recording with noise, music or babble at 0-10 dB from the held-out set, and half of
    them reverberated as well; seeded per recording."""
    kinds = {name: (augment.NoiseFiles(augment.list_audio(noise_root / "musan" / kind.folder)),
                    augment.NoiseKind(kind.folder, TEST_SNR_DB, kind.sources))
             for name, kind in augment.NOISE_KINDS.items()}
    rirs = augment.RirFolder(augment.list_audio(noise_root / "RIRS_NOISES/simulated_rirs"))
    recordings = sorted((source / "wav").rglob("*.wav"))
    for number, path in enumerate(recordings):
        rng = np.random.default_rng([CORRUPTION_STREAM, number])
        samples = sf.read(path, dtype="float64")[0] * INT16_SCALE
        if rng.random() < TEST_REVERB_SHARE:
            samples = augment.reverberate(samples, rirs[int(rng.integers(len(rirs)))])
        files, kind = kinds[list(kinds)[int(rng.integers(len(kinds)))]]
        samples = augment.add_noise(samples, files, kind, rng)
        peak = np.abs(samples).max()
        samples *= min(1.0, 30000 / peak)   # no clipping; the features are level-normalised anyway
        destination = target / "wav" / path.relative_to(source / "wav")
        destination.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(destination, ".wav") as tmp:
            sf.write(tmp, np.round(samples).astype(np.int16), 16000, subtype="PCM_16")
    shutil.copy(source / "veri_test.txt", target / "veri_test.txt")
    print(f"corrupted {len(recordings)} test recordings into {target}", flush=True)


def training_runs(out: Path) -> list:
    noise = out / "train_noise/augment"
    augmented = ["--input", "wav", "--augment", "--noise_dir", str(noise / "musan"),
                 "--rir_dir", str(noise / "RIRS_NOISES/simulated_rirs")]
    return [("prototypical + GC (softmax)", ["--gc_loss", "softmax"]),
            ("prototypical + GC (softmax), --augment", ["--gc_loss", "softmax", *augmented]),
            ("prototypical + GC (aamsoftmax)", ["--gc_loss", "aamsoftmax"]),
            ("prototypical + GC (aamsoftmax), --augment", ["--gc_loss", "aamsoftmax", *augmented])]


def train_and_score(args, out: Path, folder: int, seed: int, extra: list) -> dict:
    models = out / "models"
    command = ["train.py", "--loss_type", "prototypical", "--use_GC", "True", "--data_type", "vox1",
               "--save_path", str(out / "clean"), "--model_dir", str(models), "--n_folder", str(folder),
               "--channels", str(args.channels), "--nb_class_train", str(args.nb_class_train),
               "--n_episode", str(args.n_episode), "--max_epoch", str(args.max_epoch), "--workers",
               str(args.workers), "--seed", str(seed), "--overwrite", *extra]
    seconds = run(command)
    checkpoint = configure.checkpoint_path(folder, args.max_epoch, models)
    result = {"train_s": seconds}
    for test_set in ("clean", "noisy"):
        run(["EER_full.py", "--checkpoint", str(checkpoint), "--save_path", str(out / test_set), "--data_type",
             "vox1", "--trials", str(out / test_set / "voxceleb1/test/veri_test.txt")])
        report = json.loads((checkpoint.parent / result_name("eer_full", args.max_epoch, ".json")).read_text())
        result[test_set] = report["eer"]
    return result


def results_table(rows: list, args, n_trials: int) -> str:
    lines = [f"Synthetic corpus: {args.n_speakers} training speakers x {args.utterances_per_speaker} utterances, "
             f"{args.n_test_speakers} unseen test speakers ({n_trials} trials, half of them target: one "
             f"trial moves an EER by up to {200 / n_trials:.2f} points); ResNet-34 width {args.channels}, "
             f"{args.max_epoch} epochs x {args.n_episode} episodes of {args.nb_class_train} ways "
             "(1 shot, 2 queries), CPU.", "",
             "| run | seed | EER clean (%) | EER noisy (%) | training time (s) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {name} | {seed} | {r['clean']:.2f} | {r['noisy']:.2f} | {r['train_s']:.0f} |"
              for name, seed, r in rows]
    if len(args.seeds) > 1:
        lines += ["", "| run | mean EER clean (%) | mean EER noisy (%) |", "| --- | ---: | ---: |"]
        for name in dict.fromkeys(name for name, _, _ in rows):
            mine = [r for n, _, r in rows if n == name]
            lines.append(f"| {name} | {np.mean([r['clean'] for r in mine]):.2f} | "
                         f"{np.mean([r['noisy'] for r in mine]):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    prepare_data(args, out)
    rows = []
    n_trials = len((out / "clean/voxceleb1/test/veri_test.txt").read_text().splitlines())
    for seed in args.seeds:
        for number, (name, extra) in enumerate(training_runs(out)):
            rows.append((name, seed, train_and_score(args, out, 10 * seed + number, seed, extra)))
            write_text(out / "results.md", results_table(rows, args, n_trials))
    print("\n" + results_table(rows, args, n_trials))


if __name__ == "__main__":
    main()
