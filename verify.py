"""Same speaker or not? Score two recordings with a trained encoder and accept/reject.

    python verify.py --n_folder 0 --cp_num 100 enroll.wav test.wav
    python verify.py --checkpoint saved_model/baseline_000/checkpoint_100.pth enroll.wav test.flac
    python verify.py --checkpoint my_model.pth --threshold 0.55 enroll.wav test.wav

    python verify.py --checkpoint my_model.pth a1.wav a2.wav a3.wav test.wav     # enrol 3 recordings
    python verify.py --checkpoint my_model.pth --calibration cal.json --p_target 0.01 enroll.wav test.wav
    python verify.py --checkpoint my_model.pth --gallery enrolled/ --top_k 5 probe.wav

The last recording is the test; all before it are the enrolment (several: the mean of their
unit-length embeddings). Prints the cosine score and ACCEPT or REJECT, and says what decided:
1. ``--threshold T`` on the score, if given;
2. a calibration (``--calibration FILE``, or ``<checkpoint>.calibration.json`` beside the checkpoint,
   written by ``score.py --calibrate_out``): the LLR is printed and compared with the Bayes threshold
   log((1 - p) / p) of ``--p_target p`` (default 0.5; ``--p_target`` without a calibration is refused,
   as the API's ``verify`` refuses it);
3. otherwise the EER threshold EER_full.py saved for the checkpoint (``eer_full_cpXXX.json`` beside
   ``checkpoint_XXX.pth``; with ``--checkpoint PATH --cp_num XXX`` the XXX given; ``--threshold_file``
   names the file directly).
``--gallery DIR`` (one sub-folder of recordings per enrolled speaker) ranks the speakers for one
probe recording instead (top ``--top_k``, with LLRs when a calibration is found).
"""

import configure
from common.errors import run_main
from evaluation.verification import verify_recordings


def parse_args(argv=None):
    parser = configure.argument_parser(__doc__)
    parser.add_argument("recordings", nargs="+",
                        help="enrolment recording(s) then the test recording (wav, flac, ogg; m4a/mp3 with "
                             "ffmpeg); with --gallery, the one probe recording")
    configure.add_checkpoint_arguments(parser)
    parser.add_argument("--threshold", type=float, default=None,
                        help="accept when score >= threshold (default: EER_full.py's EER threshold)")
    parser.add_argument("--threshold_file", type=str, default=None,
                        help="an eer_full_cpXXX.json to take the threshold from (e.g. EER_full.py "
                             "--out_dir results); default: the one beside the checkpoint")
    parser.add_argument("--calibration", default=None,
                        help="score -> LLR calibration (score.py --calibrate_out); default: "
                             "<checkpoint>.calibration.json when it exists")
    parser.add_argument("--p_target", type=float, default=None,
                        help="prior probability of 'same speaker' for the calibrated Bayes decision (default "
                             "0.5); needs a calibration, as the API's verify()")
    parser.add_argument("--gallery", default=None, help="folder with one sub-folder of recordings per speaker")
    parser.add_argument("--top_k", type=int, default=5, help="speakers listed with --gallery")
    configure.add_common_arguments(parser)
    args = parser.parse_args(argv)
    configure.check_checkpoint_arguments(parser, args)
    if args.gallery is None and len(args.recordings) < 2:
        parser.error("give at least one enrolment recording and the test recording")
    if args.gallery is not None and len(args.recordings) != 1:
        parser.error("with --gallery, give exactly one probe recording")
    if (args.p_target is not None and not 0 < args.p_target < 1) or args.top_k < 1:
        parser.error("--p_target must lie strictly between 0 and 1, --top_k must be >= 1")
    return configure.apply_common_arguments(args)


def main(argv=None):
    return verify_recordings(parse_args(argv))


if __name__ == "__main__":
    run_main(main)
