"""What EER_full.py, EER_short.py and identification.py share: model flags, loading, reports, files."""
import json
from pathlib import Path

import numpy as np

import configure
from common.errors import UserInputError
from common.files import write_text
from common.preflight import check_room
from evaluation.metrics import P_TARGETS, verification_report
from evaluation.long_recordings import DEFAULT_CHUNK_FRAMES
from evaluation.precision import add_precision_argument, with_precision
from feat_extract.fbank import WIN_STEP
from model.checkpoint import checked_checkpoint_file, load_encoder, resolve_checkpoint

RESULT_BYTES = 4 * 1024 * 1024  # scores of VoxCeleb1-O (2.6 MB), the JSON summary and the DET plot


def add_model_arguments(parser, batch_size: int = 64) -> None:
    """The original's --n_folder/--cp_num/--data_type plus --checkpoint, --batch_size, --out_dir."""
    configure.add_common_arguments(parser)
    configure.add_checkpoint_arguments(parser, configure.PAPER_N_FOLDER, configure.PAPER_CP_NUM)
    parser.add_argument("--data_type", type=str, default="vox2", choices=("vox1", "vox2"),
                        help="training data of the model: chooses the default evaluation data")
    parser.add_argument("--batch_size", type=int, default=batch_size, help="items per forward pass")
    parser.add_argument("--out_dir", type=str, default=None,
                        help="where result files go (default: the checkpoint's folder)")
    parser.add_argument("--reindex", action="store_true",
                        help="rebuild the feature folders' corpus index first (done by itself when stale)")
    add_precision_argument(parser)


def add_chunk_seconds_argument(parser) -> None:
    parser.add_argument("--chunk_seconds", type=float, default=DEFAULT_CHUNK_FRAMES * WIN_STEP,
                        help="longer recordings are embedded in exact overlapping chunks of this length")


def check_checkpoint(args) -> Path:
    """The checkpoint the flags name, or an error: run first, so that a missing checkpoint is reported
    before a missing trial list or feature folder."""
    return checked_checkpoint_file(resolve_checkpoint(args.n_folder, args.cp_num, args.checkpoint, args.model_dir))


def check_positive(args, *names) -> None:
    for name in names:
        if getattr(args, name) < 1:
            raise UserInputError(f"--{name} must be a positive integer, got {getattr(args, name)}")


def load_model(args):
    """(model in eval mode on args.device, checkpoint path, output folder) for the parsed flags."""
    check_positive(args, "batch_size")
    path = resolve_checkpoint(args.n_folder, args.cp_num, args.checkpoint, args.model_dir)
    number = configure.checkpoint_number(path)
    if args.checkpoint and number is not None:  # result files carry the checkpoint's own number
        args.cp_num = number
    model, _ = load_encoder(path, args.device)
    precision = getattr(args, "eval_precision", "fp32")
    model = with_precision(model, precision)   # opt-in TF32 / bfloat16 (evaluation/precision.py)
    out_dir = check_room(Path(args.out_dir) if args.out_dir else path.parent, RESULT_BYTES, "the result files")
    print(f"checkpoint: {path} ({model.backbone}, width {model.channels}, "
          f"{model.num_classes} training classes) on {args.device}"
          f"{'' if precision == 'fp32' else ', ' + precision}")
    return model, path, out_dir


def result_name(stem: str, cp_num: int, suffix: str) -> str:
    """``<stem>_cp<NNN><suffix>``: the name of every result file of checkpoint ``cp_num``
    (``eer_full_cp100.json`` ...), which verify.py and demo.py read back."""
    return f"{stem}_cp{cp_num:03d}{suffix}"


def result_path(args, out_dir: Path, stem: str, suffix: str) -> Path:
    return out_dir / result_name(stem, args.cp_num, suffix)


def report_lines(report: dict, prefix: str = "") -> list:
    lines = [f"{prefix}EER: {report['eer']:.6f} %", f"{prefix}threshold: {report['threshold']:.6f}"]
    lines += [f"{prefix}minDCF(p_target={p:g}): {report[f'mindcf_{p:g}']:.6f}" for p in P_TARGETS]
    return lines


def evaluate_scores(labels, scores, prefix: str = "") -> dict:
    """Verification report of ``scores`` (exactly as ``write_scores`` writes them), printed."""
    scores = np.asarray(scores, dtype=np.float64)
    report = verification_report(np.asarray(labels), scores)
    print("\n".join(report_lines(report, prefix)))
    return report


def write_scores(path: Path, labels, scores, enroll, test, llrs=None) -> None:
    """The one score-file writer (EER_full.py, EER_short.py, score.py): ``label score [llr] enroll
    test`` per line -- no label for a list without labels (``labels`` None), the LLR when calibrated --
    numbers in Python's round-trip repr (exact)."""
    numbers = [np.asarray(scores, dtype=np.float64)]
    numbers += [np.asarray(llrs, dtype=np.float64)] if llrs is not None else []
    labels = [f"{int(label)} " for label in labels] if labels is not None else [""] * len(enroll)
    lines = (f"{label}{' '.join(repr(float(v)) for v in row)} {e} {t}\n"
             for label, row, e, t in zip(labels, zip(*numbers), enroll, test))
    write_text(path, "".join(lines))


def read_scores(path) -> tuple:
    """(labels, scores) of a score file written by ``write_scores``."""
    rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    return np.array([int(r[0]) for r in rows]), np.array([float(r[1]) for r in rows])


def write_json(path: Path, content: dict) -> None:
    write_text(path, json.dumps(content, indent=1, default=str) + "\n")
