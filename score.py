"""Score any trial list with a trained encoder: scores, EER, minDCF, actDCF, Cllr, DET, calibration.

    python score.py --trials my_trials.txt --audio_root my_recordings --checkpoint model.pth
    python score.py --trials dev_trials.txt --audio_root dev --checkpoint model.pth --calibrate_out cal.json
    python score.py --trials test_trials.txt --embeddings embeddings/ --calibration cal.json
    python score.py --trials lists/veri_test.txt --n_folder 0 --cp_num 100 --score_norm asnorm --cohort cohort/

A line is ``label enroll test`` (1/0 or target/nontarget) or ``enroll test``. Entries are audio
paths (relative to --audio_root), keys of --embeddings (written by embed.py, any --out_format), or
VoxCeleb keys with features under --save_path; each distinct entry is embedded once. Writes
scores.txt (``label score enroll test``; the LLR as well when calibrated), report.json and det.png
in --out_dir. With labels it prints EER, minDCF (0.01, 0.001, 0.05), actDCF (scores read as LLRs),
Cllr and minCllr. --calibrate_out fits score -> LLR (logistic regression) on this list and prints
Cllr before and after; --calibration applies a saved one. --qmf duration (with --calibrate_out)
makes the calibration duration-aware: the log durations of the shorter and longer side of each
trial are inputs of the fit too, and every later --calibration / verify.py / API use applies them.
"""

import configure
from common.errors import run_main
from evaluation import cli
from evaluation.score_trials import score_trial_list


def parse_args(argv=None):
    parser = configure.argument_parser(__doc__)
    parser.add_argument("--trials", required=True, help="trial list: [label] enroll test per line")
    parser.add_argument("--audio_root", default=None, help="folder the audio entries are relative to")
    parser.add_argument("--embeddings", default=None,
                        help="embeddings to look entries up in (embed.py folder, matrix .npy, Kaldi .scp/.ark)")
    configure.add_checkpoint_arguments(parser)
    parser.add_argument("--batch_size", type=int, default=16, help="recordings per forward pass")
    cli.add_chunk_seconds_argument(parser)
    parser.add_argument("--out_dir", default="score_out", help="where scores.txt, report.json, det.png go")
    parser.add_argument("--score_norm", choices=("none", "asnorm"), default="none",
                        help="asnorm: adaptive S-norm of the scores against --cohort")
    parser.add_argument("--cohort", default=None, help="AS-norm cohort: audio folder or embeddings")
    parser.add_argument("--cohort_size", type=int, default=300, help="AS-norm top-K cohort scores")
    parser.add_argument("--calibrate_out", default=None, help="fit score -> LLR calibration here (JSON)")
    parser.add_argument("--calibration", default=None, help="apply this calibration (JSON from --calibrate_out)")
    parser.add_argument("--qmf", choices=("none", "duration"), default="none",
                        help="with --calibrate_out: quality measures added to the fit; duration = log durations "
                             "of the shorter and the longer side (duration-aware calibration, for short utterances)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run's scores.txt, report.json, det.png in --out_dir, and let "
                             "--calibrate_out replace an existing calibration file (never any other file)")
    configure.add_common_arguments(parser)
    args = configure.apply_common_arguments(parser.parse_args(argv))
    if args.calibration and args.calibrate_out:
        parser.error("give --calibration (apply) or --calibrate_out (fit), not both")
    if args.qmf != "none" and not args.calibrate_out:
        parser.error("--qmf is a choice of the calibration fit: give it with --calibrate_out "
                     "(an applied calibration says its own qmf)")
    if args.score_norm == "asnorm" and not args.cohort:
        parser.error("--score_norm asnorm needs --cohort (an audio folder or embeddings)")
    if args.batch_size < 1 or args.cohort_size < 1 or not args.chunk_seconds >= 1:
        parser.error("--batch_size and --cohort_size must be >= 1, --chunk_seconds >= 1")
    return args


def main(argv=None):
    return score_trial_list(parse_args(argv))


if __name__ == "__main__":
    run_main(main)
