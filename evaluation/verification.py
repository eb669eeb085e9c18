"""``verify.py``: same speaker or not, with the decision rule the flags and files beside the
checkpoint give (``--threshold``, a calibration, or EER_full.py's saved EER threshold), or a gallery
ranking (see verify.py's help)."""
import json
import math
import sys
from pathlib import Path

import configure
from common.errors import UserInputError
from evaluation.audio_inputs import collect_inputs
from evaluation.calibration import CALIBRATION_SUFFIX, Calibration, calibration_beside
from evaluation.cli import result_name
from evaluation.speaker_encoder import SpeakerEncoder
from model.checkpoint import resolve_checkpoint

DEFAULT_P_TARGET = 0.5   # the calibrated decision's prior when --p_target is not given


def eer_threshold_file(checkpoint_path, cp_num=None) -> Path:
    """``eer_full_cpXXX.json`` beside the checkpoint: XXX is ``cp_num`` when given (as EER_full.py
    names it), else read from a ``checkpoint_XXX.pth`` name (None for other names)."""
    if cp_num is None:
        cp_num = configure.checkpoint_number(checkpoint_path)
        if cp_num is None:
            return None
    return Path(checkpoint_path).parent / result_name("eer_full", cp_num, ".json")


def read_eer_threshold(json_path) -> float:
    try:
        saved = json.loads(Path(json_path).read_text())
        return float(saved["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserInputError(f"{json_path}: cannot read the saved EER threshold "
                             f"({type(error).__name__}: {error}); rerun EER_full.py or pass "
                             f"--threshold") from None


def resolve_threshold(override, checkpoint_path, cp_num=None, threshold_file=None):
    """(threshold, where it came from): ``--threshold`` first, else EER_full's saved EER threshold
    (``--threshold_file``, or ``eer_full_cpXXX.json`` beside the checkpoint)."""
    if override is not None:
        return override, "--threshold"
    if threshold_file is not None:
        if not Path(threshold_file).is_file():
            raise UserInputError(f"--threshold_file {threshold_file}: no such file")
        return read_eer_threshold(threshold_file), f"EER threshold from {threshold_file}"
    json_path = eer_threshold_file(checkpoint_path, cp_num)
    if json_path is not None and json_path.is_file():
        return read_eer_threshold(json_path), f"EER threshold saved by EER_full.py in {json_path}"
    looked = f" (looked for {json_path})" if json_path is not None else ""
    raise UserInputError(f"no decision threshold for {checkpoint_path}{looked}: run EER_full.py for "
                         f"this checkpoint, or pass --threshold")


def calibration_in_use(args, checkpoint_path):
    """The calibration file to use, or None (explicit --calibration, else one beside the checkpoint)."""
    if args.threshold is not None:
        return None
    if args.calibration is not None:
        if not Path(args.calibration).is_file():
            raise UserInputError(f"--calibration {args.calibration}: no such file")
        return Path(args.calibration)
    beside = calibration_beside(checkpoint_path)
    return beside if beside.is_file() else None


def gallery_recordings(folder) -> dict:
    """{speaker sub-folder name: [its audio files]}; a clear error for an empty or missing gallery."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"--gallery {folder}: no such folder")
    speakers = {}
    for source, key in collect_inputs([folder]):
        if len(key.parts) < 2:
            raise UserInputError(f"--gallery {folder}: {source} is not inside a speaker sub-folder")
        speakers.setdefault(key.parts[0], []).append(source)
    return speakers


def rank_gallery(encoder, args, calibration_file):
    gallery = encoder.enroll_gallery(gallery_recordings(args.gallery))
    ranked = encoder.identify(args.recordings[0], gallery, args.top_k)
    calibration = encoder.calibration(calibration_file)[0] if calibration_file else None
    if calibration is not None and calibration.qmf != "none":
        print(f"note: {calibration_file} is duration-aware (qmf {calibration.qmf}); the ranking shows "
              "scores only", file=sys.stderr)
        calibration = None
    print(f"top {len(ranked)} of {len(gallery)} enrolled speakers for {args.recordings[0]}"
          + (f" (LLRs from {calibration_file})" if calibration else "") + ":")
    for rank, (name, score) in enumerate(ranked, start=1):
        llr = f"  llr {float(calibration.llr(score)):+.3f}" if calibration else ""
        print(f"{rank}. {name}  score {score:.6f}{llr}")
    return ranked


def calibrated_decision(encoder, args, calibration_file):
    p_target = DEFAULT_P_TARGET if args.p_target is None else args.p_target
    result = encoder.verify(args.recordings[:-1], args.recordings[-1], p_target, calibration_file)
    print(f"score: {result.score:.6f}")
    print(f"llr: {result.llr:.6f} (calibration {result.calibration_file})")
    print(f"threshold: llr {result.llr_threshold:.6f} (Bayes decision at p_target {p_target:g})")
    print(f"decision: {'ACCEPT (same speaker)' if result.accepted else 'REJECT (different speakers)'}")
    return result.score, result.llr_threshold, result.accepted


def check_decision_flags(args, calibration_file) -> None:
    """A --threshold that is a number; --p_target only where a calibration decides (as the API's
    ``verify``, which needs a calibration): never a silent EER-threshold decision instead."""
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise UserInputError(f"--threshold must be a finite score, got {args.threshold}")
    if args.p_target is None:
        return
    if args.threshold is not None:
        raise UserInputError("--p_target sets the prior of a calibrated decision, but --threshold decides on the "
                             "score: give one of them")
    if calibration_file is None and args.gallery is None:
        raise UserInputError(f"--p_target {args.p_target:g} needs a calibration (--calibration FILE, or "
                             f"<checkpoint>{CALIBRATION_SUFFIX}; score.py --calibrate_out fits one), as the API's "
                             "verify() does")


def verify_recordings(args):
    """verify.py's work for its parsed flags: a gallery ranking, a calibrated decision, or a decision
    at a score threshold."""
    checkpoint_path = resolve_checkpoint(args.n_folder, args.cp_num, args.checkpoint, args.model_dir)
    calibration_file = calibration_in_use(args, checkpoint_path)
    check_decision_flags(args, calibration_file)
    if calibration_file is not None:
        Calibration.load(calibration_file)   # a malformed file is refused before any recording is read
    if calibration_file is None and args.gallery is None:
        threshold, source = resolve_threshold(args.threshold, checkpoint_path, args.cp_num, args.threshold_file)
    encoder = SpeakerEncoder.from_checkpoint(checkpoint_path, device=args.device,
                                             note_handler=lambda note: print(f"note: {note}", file=sys.stderr),
                                             warning_handler=lambda text: print(f"warning: {text}", file=sys.stderr))
    if args.gallery is not None:
        return rank_gallery(encoder, args, calibration_file)
    if calibration_file is not None:
        return calibrated_decision(encoder, args, calibration_file)
    score = encoder.score(encoder.enroll(args.recordings[:-1]), encoder.embed(args.recordings[-1]))
    accepted = score >= threshold
    print(f"score: {score:.6f}")
    print(f"threshold: {threshold:.6f} ({source})")
    print(f"decision: {'ACCEPT (same speaker)' if accepted else 'REJECT (different speakers)'}")
    return score, threshold, accepted
