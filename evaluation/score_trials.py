"""``score.py``: any trial list scored with a trained encoder (entries are audio, stored embeddings
or VoxCeleb features), AS-norm, metrics, calibration, and the result files (see score.py's help).

Every input and output is checked before the first recording is embedded (``check_before_work``):
labels of both kinds when metrics or a calibration need them, an ``--out_dir`` and a
``--calibrate_out`` that can be written, an ``--out_dir`` holding an earlier run's results and an
existing ``--calibrate_out`` replaced only with ``--overwrite`` (the latter only when it is a
calibration), ``--calibration`` read. ``scores.txt`` is written
as soon as the scores exist, so a step after them that fails loses none of the embedding work."""
import sys
from pathlib import Path

import numpy as np

import configure
from common.errors import UserInputError
from common.preflight import check_creatable, check_output_place, check_replaceable
from evaluation import cli
from evaluation.audio_inputs import collect_inputs
from evaluation.calibration import (Calibration, calibration_beside, duration_qualities, fit_calibration,
                                    is_calibration_file, save_calibration)
from evaluation.embedding_files import INDEX_NAME, key_of, load_embeddings, read_index, read_model_record
from evaluation.full_utterance import asnorm_trial_scores, cosine_trial_scores
from evaluation.llr_metrics import llr_report
from evaluation.metrics import P_TARGETS
from evaluation.score_norm import cohort_matrix
from evaluation.trial_items import Item, embed_items, resolve_items
from evaluation.trials import check_both_kinds, read_trials

RESULT_FILES = ("scores.txt", "report.json", "det.png")   # what a run writes into --out_dir
SCORES, REPORT, DET = RESULT_FILES


class LazyModel:
    """Loads the checkpoint the first time a recording has to be embedded."""

    def __init__(self, args):
        self.args, self.model, self.path = args, None, None

    def get(self):
        if self.model is None:
            from model.checkpoint import load_encoder, resolve_checkpoint
            if self.args.checkpoint is None and (self.args.n_folder is None or self.args.cp_num is None):
                raise UserInputError("some entries are recordings: give --checkpoint PATH, or --n_folder and --cp_num")
            self.path = resolve_checkpoint(self.args.n_folder, self.args.cp_num, self.args.checkpoint,
                                           self.args.model_dir)
            self.model, _ = load_encoder(self.path, self.args.device)
            print(f"checkpoint: {self.path}", file=sys.stderr)
        return self.model


def embed(entries: dict, lazy: LazyModel, args, durations: dict = None) -> dict:
    """{entry: embedding}; the durations (s) of the recordings embedded go into ``durations``."""
    if all(item.kind == "embedding" for item in entries.values()):
        return {name: item.value for name, item in entries.items()}
    return embed_items(lazy.get(), entries, args.device, args.batch_size, int(args.chunk_seconds * 100),
                       durations)


def stored_durations(location, entries: dict) -> dict:
    """{entry: seconds} that embed.py recorded (index.tsv) for the entries taken from --embeddings."""
    if location is None or not Path(location).is_dir():
        return {}
    by_key = {key_of(rel): seconds for rel, (_, seconds) in read_index(Path(location)).items()}
    return {name: by_key[key_of(name)] for name, item in entries.items()
            if item.kind == "embedding" and key_of(name) in by_key}


def trial_qualities(trials, durations: dict) -> np.ndarray:
    """The duration quality measures of every trial; one error naming entries without a duration."""
    from evaluation.trials import first_names
    missing = [name for name in trials.utterances() if name not in durations]
    if missing:
        raise UserInputError(f"duration-aware calibration needs each entry's duration; {len(missing)} entries "
                             "have none (embeddings stored as a matrix or Kaldi ark keep no durations; embed.py's "
                             f"npy folder, audio and features do): {first_names(missing)}")
    return duration_qualities([durations[n] for n in trials.enroll], [durations[n] for n in trials.test])


def cohort_embeddings(args, lazy: LazyModel) -> np.ndarray:
    """One embedding per cohort recording (an audio folder) or per key (embeddings)."""
    location = Path(args.cohort)
    if location.is_dir() and not (location / INDEX_NAME).is_file():
        entries = {str(source): Item("audio", source) for source, _ in collect_inputs([location])}
    else:
        entries = {key: Item("embedding", vector) for key, vector in load_embeddings(location).items()}
    return cohort_matrix(np.stack(list(embed(entries, lazy, args).values())))


def normalised_scores(args, lazy, trials, vectors, raw) -> np.ndarray:
    cohort = cohort_embeddings(args, lazy)
    names = list(vectors)
    return asnorm_trial_scores(trials, names, np.stack([vectors[n] for n in names]), raw, cohort,
                               args.cohort_size)


def check_before_work(args, trials):
    """Everything that can fail on bad input, before any embedding; the calibration to apply (or None)."""
    check_both_kinds(trials)
    if args.calibrate_out and trials.labels is None:
        raise UserInputError(f"--calibrate_out needs labels: {trials.path} has none ('label enroll test' lines)")
    check_replaceable(args.out_dir, RESULT_FILES, "--out_dir", getattr(args, "overwrite", False))
    if args.calibrate_out:
        check_calibrate_out(Path(args.calibrate_out), getattr(args, "overwrite", False))
    if args.cohort and not Path(args.cohort).exists():
        raise UserInputError(f"--cohort {args.cohort}: no such folder or file")
    if not args.calibration:
        return None
    calibration = Calibration.load(args.calibration)
    if calibration.score_norm != args.score_norm:
        raise UserInputError(f"{args.calibration} maps {calibration.score_norm} scores, but this run's "
                             f"--score_norm is {args.score_norm}")
    return calibration


def check_calibrate_out(path: Path, overwrite: bool) -> None:
    """--calibrate_out may become a file; an existing one is replaced only with --overwrite, and only
    when it is a calibration (a checkpoint or any other file never is)."""
    check_output_place(path, "--calibrate_out")
    if not path.exists():
        return
    if not is_calibration_file(path):
        raise UserInputError(f"--calibrate_out {path} exists and is not a calibration file; it is never "
                             "replaced: choose another name (nothing was written)")
    if not overwrite:
        raise UserInputError(f"--calibrate_out {path} already holds a calibration; pass --overwrite to replace "
                             "it, or choose another name (nothing was written)")


def scored_model(args, lazy):
    """(checkpoint, digest) of the model whose embeddings were scored: the one loaded, or the one an
    embed.py folder (--embeddings) records; ("", "") when unknown."""
    from model.checkpoint import checkpoint_digest
    if lazy.path is not None:
        return str(lazy.path), checkpoint_digest(lazy.path)
    record = read_model_record(args.embeddings) if args.embeddings and Path(args.embeddings).is_dir() else {}
    return str(record.get("checkpoint", args.checkpoint or "")), record.get("checkpoint_digest", "")


def report_calibration(args, lazy, trials, scores, summary, calibration, durations) -> object:
    """Fit (--calibrate_out) or apply (--calibration); print Cllr before/after; the LLRs or None."""
    qualities = None
    if args.calibrate_out:
        checkpoint, digest = scored_model(args, lazy)
        qualities = trial_qualities(trials, durations) if args.qmf == "duration" else None
        calibration = fit_calibration(trials.labels, scores, qualities=qualities, trials=str(trials.path),
                                      checkpoint=checkpoint, checkpoint_digest=digest, score_norm=args.score_norm)
        save_calibration(args.calibrate_out, calibration)
        print(f"calibration fitted on {trials.path}: {calibration.formula()}; written to {args.calibrate_out}")
        if lazy.path is not None and Path(args.calibrate_out).resolve() != calibration_beside(lazy.path).resolve():
            print(f"note: verify.py finds it by default at {calibration_beside(lazy.path)}", file=sys.stderr)
    elif calibration is not None:
        print(f"calibration: {args.calibration} ({calibration.formula()})")
        if mismatch := calibration.digest_mismatch(*scored_model(args, lazy)):   # loaded, or --embeddings' own
            print(f"warning: {args.calibration}: {mismatch}", file=sys.stderr)
        qualities = trial_qualities(trials, durations) if calibration.qmf == "duration" else None
    else:
        return None
    summary["calibration_qmf"] = calibration.qmf
    llrs = calibration.llr(scores, qualities)
    if trials.labels is not None:
        summary["calibrated"] = print_llr_metrics(trials.labels, llrs, "calibrated ")
        print(f"Cllr: {summary['llr_metrics']['cllr']:.4f} before calibration, "
              f"{summary['calibrated']['cllr']:.4f} after")
    return llrs


def print_llr_metrics(labels, llrs, prefix: str = "") -> dict:
    report = llr_report(labels, llrs, P_TARGETS)
    lines = [f"{prefix}actDCF(p_target={p:g}): {report[f'actdcf_{p:g}']:.6f}" for p in P_TARGETS]
    print("\n".join(lines + [f"{prefix}Cllr: {report['cllr']:.6f} bits", f"{prefix}minCllr: {report['min_cllr']:.6f} bits"]))
    return report


def score_trial_list(args) -> dict:
    """score.py's work for its parsed flags: scores, metrics, calibration, result files; the summary."""
    trials = read_trials(args.trials, strict=False)
    calibration = check_before_work(args, trials)
    store = load_embeddings(args.embeddings) if args.embeddings else None
    entries = resolve_items(trials.utterances(), store, args.audio_root,
                            configure.feature_roots(args.save_path, configure.VOXCELEB1_SPLITS))
    out_dir = check_creatable(args.out_dir)   # found now, not after the embedding; created with the scores
    if args.calibrate_out:
        check_creatable(Path(args.calibrate_out).absolute().parent)
    lazy = LazyModel(args)
    durations = stored_durations(args.embeddings, entries)
    vectors = embed(entries, lazy, args, durations)
    names = list(vectors)
    scores = cosine_trial_scores(trials, names, np.stack([vectors[n] for n in names])).astype(np.float64)
    if args.score_norm == "asnorm":
        scores = normalised_scores(args, lazy, trials, vectors, scores)
    cli.write_scores(out_dir / SCORES, trials.labels, scores, trials.enroll, trials.test)   # kept if a later step fails
    summary = {"trials": str(trials.path), "checkpoint": str(lazy.path or ""), "score_norm": args.score_norm}
    if trials.labels is not None:
        summary.update(cli.evaluate_scores(trials.labels, scores))
        summary["llr_metrics"] = print_llr_metrics(trials.labels, scores, "(scores as LLRs) ")
    llrs = report_calibration(args, lazy, trials, scores, summary, calibration, durations)
    write_results(out_dir, trials, scores, llrs, summary)
    return summary


def write_results(out_dir: Path, trials, scores, llrs, summary) -> None:
    from evaluation.plots import plot_det   # matplotlib: only when results are written
    if llrs is not None:
        cli.write_scores(out_dir / SCORES, trials.labels, scores, trials.enroll, trials.test, llrs)
    cli.write_json(out_dir / REPORT, summary)
    if trials.labels is not None:
        plot_det([("cosine" if summary["score_norm"] == "none" else "AS-norm", trials.labels, scores)],
                 out_dir / DET, f"DET, {trials.path.name}")
    else:   # an earlier run's curve (replaced with --overwrite) would describe other scores
        (out_dir / DET).unlink(missing_ok=True)
    print(f"results written to {out_dir}")
