"""Same speaker or not? Score two recordings with a trained encoder and accept/reject.

    python verify.py --n_folder 0 --cp_num 100 enroll.wav test.wav
    python verify.py --checkpoint saved_model/baseline_000/checkpoint_100.pth enroll.wav test.flac
    python verify.py --checkpoint my_model.pth --threshold 0.55 enroll.wav test.wav

Prints the cosine score, the threshold and where it came from, and ACCEPT or REJECT. The default
threshold is the EER threshold EER_full.py saved for the checkpoint (``eer_full_cpXXX.json`` beside
``checkpoint_XXX.pth``; with ``--checkpoint PATH --cp_num XXX`` the XXX given, as EER_full.py names
it; ``--threshold_file`` names the file directly); ``--threshold`` overrides it.
"""
import argparse
import json
import sys
from pathlib import Path

import configure
from common.errors import UserInputError, run_main
from model.checkpoint import checkpoint_number


def eer_threshold_file(checkpoint_path, cp_num=None) -> Path:
    """``eer_full_cpXXX.json`` beside the checkpoint: XXX is ``cp_num`` when given (as EER_full.py
    names it), else read from a ``checkpoint_XXX.pth`` name (None for other names)."""
    if cp_num is None:
        cp_num = checkpoint_number(checkpoint_path)
        if cp_num is None:
            return None
    return Path(checkpoint_path).parent / f"eer_full_cp{cp_num:03d}.json"


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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("enroll", help="enrolment recording (wav, flac, ogg; m4a/mp3 with ffmpeg)")
    parser.add_argument("test", help="test recording")
    configure.add_checkpoint_arguments(parser)
    parser.add_argument("--threshold", type=float, default=None,
                        help="accept when score >= threshold (default: EER_full.py's EER threshold)")
    parser.add_argument("--threshold_file", type=str, default=None,
                        help="an eer_full_cpXXX.json to take the threshold from (e.g. EER_full.py "
                             "--out_dir results); default: the one beside the checkpoint")
    configure.add_common_arguments(parser)
    args = parser.parse_args(argv)
    configure.check_checkpoint_arguments(parser, args)
    return configure.apply_common_arguments(args)


def main(argv=None):
    args = parse_args(argv)
    from model.checkpoint import resolve_checkpoint
    from speaker_api import SpeakerEncoder
    checkpoint_path = resolve_checkpoint(args.n_folder, args.cp_num, args.checkpoint, args.model_dir)
    threshold, source = resolve_threshold(args.threshold, checkpoint_path, args.cp_num, args.threshold_file)
    encoder = SpeakerEncoder.from_checkpoint(checkpoint_path, device=args.device,
                                             note_handler=lambda note: print(f"note: {note}", file=sys.stderr),
                                             warning_handler=lambda text: print(f"warning: {text}", file=sys.stderr))
    score = encoder.score(encoder.embed(args.enroll), encoder.embed(args.test))
    accepted = score >= threshold
    print(f"score: {score:.6f}")
    print(f"threshold: {threshold:.6f} ({source})")
    print(f"decision: {'ACCEPT (same speaker)' if accepted else 'REJECT (different speakers)'}")
    return score, threshold, accepted


if __name__ == "__main__":
    run_main(main)
