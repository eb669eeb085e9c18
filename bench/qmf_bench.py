"""Duration-aware calibration (``score.py --qmf duration``) against plain calibration, on the demo's
synthetic corpus, with trials whose test side is a 1 s crop, a 2 s crop or the full utterance.

    python bench/qmf_bench.py [--out bench_qmf] [--max_epoch 2] [--n_episode 10] [--pairs_per_speaker 150]
                              [--results bench/results/DATE-qmf-cpu2.md]

Builds the demo's chain at demo size with the real commands (dataprep.py --synthetic,
feature_extraction.py, train.py: prototypical + GC, width 8), or reuses it when --out has it. Trials:
per unseen test speaker, --pairs_per_speaker target and as many non-target pairs (the paper's
short-utterance protocol, evaluation.short_utterance), each trial's test side a 1 s crop, a 2 s crop
or the whole utterance (a third each, seeded); enrolment = the whole utterance. Two-fold
cross-validation by enrolment speaker: calibrations are fitted on the trials of half the speakers
and Cllr is measured on the other half's, both ways; the table pools the held-out LLRs. "One
calibration per condition" (a plain calibration fitted on each test-side length alone, which
knows the condition exactly) bounds what any duration-aware calibration could gain here.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONDITIONS = (100, 200, None)        # test side: 1 s crop, 2 s crop, full utterance


def build(args) -> Path:
    """The trained checkpoint (the demo's commands; reused when it exists)."""
    import configure
    from demo import run
    data, models = Path(args.out) / "data", Path(args.out) / "models"
    checkpoint = configure.checkpoint_path(0, args.max_epoch, models)
    if checkpoint.is_file():
        return checkpoint
    if not (data / "voxceleb1" / "test" / "feat").is_dir():     # the corpus and its features, once
        run(["dataprep.py", "--synthetic", "--save_path", str(data), "--n_test_speakers", str(args.n_test_speakers)])
        run(["feat_extract/feature_extraction.py", "--save_path", str(data)])
    run(["train.py", "--loss_type", "prototypical", "--use_GC", "True", "--n_shot", "1", "--n_query", "2",
         "--use_variable", "True", "--nb_class_train", str(args.nb_class_train), "--data_type", "vox1",
         "--save_path", str(data),
         "--model_dir", str(models), "--channels", "8", "--max_epoch", str(args.max_epoch),
         "--n_episode", str(args.n_episode), "--overwrite"])
    return checkpoint


def mixed_trials(args, checkpoint: Path) -> dict:
    """Scores, labels, enrolment speakers and both sides' durations (s) of the mixed-length trials."""
    import torch
    from data_loading.corpus import FeatureCorpus
    from evaluation.embedding import cosine_rows, embed_utterances
    from evaluation.short_utterance import ShortCrops, make_short_trials
    from evaluation.embedding import embed_crops
    from model.checkpoint import load_encoder
    import configure
    torch.manual_seed(0)
    corpus = FeatureCorpus(configure.feature_dir(Path(args.out) / "data", "voxceleb1", "test"))
    model, _ = load_encoder(checkpoint)
    full = make_short_trials(corpus, 100, args.pairs_per_speaker, seed=1)
    condition = np.random.default_rng(2).integers(0, len(CONDITIONS), len(full))
    wanted = np.unique(np.concatenate([full.enroll, full.test]))
    whole = dict(zip(wanted.tolist(), embed_utterances(model, [corpus.path(i) for i in wanted], "cpu", 16)))
    test = np.stack([whole[int(i)] for i in full.test])
    seconds = corpus.n_frames[full.test] / 100.0
    for number, length in enumerate(CONDITIONS):
        if length is None:
            continue
        crops = make_short_trials(corpus, length, args.pairs_per_speaker, seed=1)   # same pairs, seeded crops
        members = np.flatnonzero(condition == number)
        subset = type(crops)(crops.enroll[members], crops.test[members], crops.start[members],
                             crops.label[members], crops.length)
        test[members] = embed_crops(model, ShortCrops(corpus, subset), "cpu", 64, desc=f"{length}-frame crops")
        seconds[members] = crops.length / 100.0
    scores = cosine_rows(np.stack([whole[int(i)] for i in full.enroll]), test).astype(np.float64)
    return {"scores": scores, "labels": full.label, "speaker": corpus.labels[full.enroll], "condition": condition,
            "enroll_s": corpus.n_frames[full.enroll] / 100.0, "test_s": seconds}


def cross_validated_llrs(trials: dict) -> dict:
    """Held-out LLRs of plain and duration-aware calibration (2 folds by enrolment speaker)."""
    from evaluation.calibration import duration_qualities, fit_calibration
    qualities = duration_qualities(trials["enroll_s"], trials["test_s"])
    fold = trials["speaker"] % 2
    llrs = {name: np.zeros(len(fold)) for name in ("plain", "duration QMF", "per condition")}
    for held in (0, 1):
        fit, out = fold != held, fold == held
        plain = fit_calibration(trials["labels"][fit], trials["scores"][fit])
        aware = fit_calibration(trials["labels"][fit], trials["scores"][fit], qualities=qualities[fit])
        llrs["plain"][out] = plain.llr(trials["scores"][out])
        llrs["duration QMF"][out] = aware.llr(trials["scores"][out], qualities[out])
        print(f"fold {held}: {aware.formula()}")
        for condition in range(len(CONDITIONS)):      # a calibration of its own per test-side length
            own = trials["condition"] == condition
            alone = fit_calibration(trials["labels"][fit & own], trials["scores"][fit & own])
            llrs["per condition"][out & own] = alone.llr(trials["scores"][out & own])
    return llrs


def table(trials: dict, llrs: dict) -> str:
    from evaluation.llr_metrics import llr_report
    names = {0: "1 s test side", 1: "2 s test side", 2: "full-length test side"}
    lines = ["| trials | n | EER (%) | Cllr, plain calibration | Cllr, duration QMF | Cllr, one calibration "
             "per condition | minCllr |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    from evaluation.metrics import compute_eer
    groups = [(names[c], trials["condition"] == c) for c in range(3)] + [("all (pooled)", slice(None))]
    for name, members in groups:
        labels = trials["labels"][members]
        plain = llr_report(labels, llrs["plain"][members], [0.01])
        aware = llr_report(labels, llrs["duration QMF"][members], [0.01])
        own = llr_report(labels, llrs["per condition"][members], [0.01])
        eer = compute_eer(labels, trials["scores"][members])[0]
        lines.append(f"| {name} | {len(labels):,} | {eer:.2f} | {plain['cllr']:.4f} | {aware['cllr']:.4f} | "
                     f"{own['cllr']:.4f} | {plain['min_cllr']:.4f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_qmf", help="folder for the corpus and the model (reused)")
    parser.add_argument("--n_test_speakers", type=int, default=20, help="unseen test speakers")
    parser.add_argument("--max_epoch", type=int, default=2, help="training epochs")
    parser.add_argument("--n_episode", type=int, default=10, help="episodes per epoch")
    parser.add_argument("--nb_class_train", type=int, default=10, help="speakers per training episode")
    parser.add_argument("--pairs_per_speaker", type=int, default=150, help="target (and non-target) pairs")
    parser.add_argument("--results", default=None, help="markdown file for the table")
    args = parser.parse_args(argv)
    trials = mixed_trials(args, build(args))
    text = table(trials, cross_validated_llrs(trials))
    print(text)
    if args.results:
        from common.files import write_text
        write_text(args.results, f"# Duration-aware calibration on the synthetic corpus\n\nCommand: `python "
                   f"bench/qmf_bench.py {' '.join(argv or sys.argv[1:])}`\n\n{text}\n")


if __name__ == "__main__":
    main()
