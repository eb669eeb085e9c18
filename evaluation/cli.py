"""What EER_full.py, EER_short.py and identification.py share: model flags, loading, reports, files."""
import json
from pathlib import Path

import numpy as np

import configure
from common.errors import UserInputError
from common.files import write_text
from common.preflight import check_room
from evaluation.metrics import P_TARGETS, verification_report
from evaluation.precision import add_precision_argument, with_precision
from model.checkpoint import checkpoint_number, load_encoder, resolve_checkpoint

RESULT_BYTES = 4 * 1024 * 1024  # scores of VoxCeleb1-O (2.6 MB), the JSON summary and the DET plot


def add_model_arguments(parser, batch_size: int = 64) -> None:
    """The original's --n_folder/--cp_num/--data_type plus --checkpoint, --batch_size, --out_dir."""
    configure.add_common_arguments(parser)
    parser.add_argument("--n_folder", type=int, default=0, help="model folder <model_dir>/baseline_NNN")
    parser.add_argument("--cp_num", type=int, default=100, help="checkpoint (epoch) number")
    parser.add_argument("--data_type", type=str, default="vox2", choices=("vox1", "vox2"),
                        help="training data of the model: chooses the default evaluation data")
    parser.add_argument("--checkpoint", type=str, default=None,
                        help="any checkpoint file (e.g. the authors' published one) instead of "
                             "--n_folder/--cp_num")
    configure.add_model_dir_argument(parser)
    parser.add_argument("--batch_size", type=int, default=batch_size, help="items per forward pass")
    parser.add_argument("--out_dir", type=str, default=None,
                        help="where result files go (default: the checkpoint's folder)")
    parser.add_argument("--reindex", action="store_true",
                        help="rebuild the feature folders' corpus index first (done by itself when stale)")
    add_precision_argument(parser)


def check_positive(args, *names) -> None:
    for name in names:
        if getattr(args, name) < 1:
            raise UserInputError(f"--{name} must be a positive integer, got {getattr(args, name)}")


def load_model(args):
    """(model in eval mode on args.device, checkpoint path, output folder) for the parsed flags."""
    check_positive(args, "batch_size")
    path = resolve_checkpoint(args.n_folder, args.cp_num, args.checkpoint, args.model_dir)
    number = checkpoint_number(path)
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


def result_path(args, out_dir: Path, stem: str, suffix: str) -> Path:
    return out_dir / f"{stem}_cp{args.cp_num:03d}{suffix}"


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


def write_scores(path: Path, labels, scores, enroll, test) -> None:
    """``label score enroll test`` per line; scores written with Python's round-trip repr (exact)."""
    lines = (f"{int(label)} {float(score)!r} {e} {t}\n"
             for label, score, e, t in zip(labels, np.asarray(scores, dtype=np.float64), enroll, test))
    write_text(path, "".join(lines))


def read_scores(path) -> tuple:
    """(labels, scores) of a score file written by ``write_scores``."""
    rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    return np.array([int(r[0]) for r in rows]), np.array([float(r[1]) for r in rows])


def write_json(path: Path, content: dict) -> None:
    write_text(path, json.dumps(content, indent=1, default=str) + "\n")
