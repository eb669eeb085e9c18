"""Paths and constants shared by every script. ``--save_path`` (or $META_SR_SAVE_PATH) moves the data root.

Data layout under ``save_path`` (as the paper's code lays it out):
    voxceleb1/dev/wav/<spk>/<session>/<utt>.wav   voxceleb1/dev/feat/train_logfbank_nfilt40/<spk>/<session>/<utt>.npy
    voxceleb1/test/wav/...                        voxceleb1/test/feat/test_logfbank_nfilt40/...
    voxceleb2/dev/wav/... (converted from aac)    voxceleb2/dev/feat/train_logfbank_nfilt40/...
"""
import argparse
import os
import re
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent        # the code, and the lists/ it ships
# A checkout (or an editable install of one: pyproject.toml beside this file) keeps data/ and
# saved_model/ beside the code, as the paper's commands expect; an installed package (`pip install .`)
# keeps them in the folder a command runs in.
WORK_ROOT = PROJECT_ROOT if (PROJECT_ROOT / "pyproject.toml").is_file() else Path.cwd()
save_path = os.environ.get("META_SR_SAVE_PATH", str(WORK_ROOT / "data"))
SAVED_MODEL_DIR = WORK_ROOT / "saved_model"
LISTS_DIR = PROJECT_ROOT / "lists"
VOX1_O_TRIALS = LISTS_DIR / "veri_test.txt"   # the paper's list (VoxCeleb1-O original): EER_full.py's default

# VoxCeleb1 verification protocols -> their list file (`dataprep.py --download_lists` fetches them into
# lists/). The cleaned lists are the default; "-original" names the lists as first published.
PROTOCOL_LISTS = {
    "O": "veri_test2.txt",
    "O-original": "veri_test.txt",
    "E": "list_test_all2.txt",
    "E-original": "list_test_all.txt",
    "H": "list_test_hard2.txt",
    "H-original": "list_test_hard.txt",
}
DEFAULT_PROTOCOL = "O"

TRAIN_FEAT_FOLDER = "train_logfbank_nfilt40"
TEST_FEAT_FOLDER = "test_logfbank_nfilt40"

# (dataset, split) -> (wav folder, feature folder), relative to save_path
SPLITS = {
    ("voxceleb1", "dev"): ("voxceleb1/dev/wav", f"voxceleb1/dev/feat/{TRAIN_FEAT_FOLDER}"),
    ("voxceleb1", "test"): ("voxceleb1/test/wav", f"voxceleb1/test/feat/{TEST_FEAT_FOLDER}"),
    ("voxceleb2", "dev"): ("voxceleb2/dev/wav", f"voxceleb2/dev/feat/{TRAIN_FEAT_FOLDER}"),
}
TRAIN_DATA = {"vox1": ("voxceleb1", "dev"), "vox2": ("voxceleb2", "dev")}


def feature_dir(root, dataset: str, split: str) -> Path:
    return Path(root) / SPLITS[(dataset, split)][1]


def wav_dir(root, dataset: str, split: str) -> Path:
    return Path(root) / SPLITS[(dataset, split)][0]


VOXCELEB1_SPLITS = (("voxceleb1", "test"), ("voxceleb1", "dev"))   # trial lists' names: test, then dev


def feature_roots(root, splits=tuple(SPLITS), need: str = "none", what: str = "features") -> list:
    """The one locator of feature folders: those of ``splits`` under ``root`` that exist, in order.

    ``need``: "none" (the list may be empty), "any" (an error when none exists), "all" (an error naming
    each missing one); ``what`` names them in the error."""
    candidates = [feature_dir(root, *split) for split in splits]
    found = [folder for folder in candidates if folder.is_dir()]
    missing = [str(folder) for folder in candidates if not folder.is_dir()]
    if (need == "any" and not found) or (need == "all" and missing):
        from common.errors import UserInputError
        listed = ", ".join(missing) if need == "all" else " or ".join(missing)
        raise UserInputError(f"{what} not found at {listed} (run dataprep.py and the feature extraction, "
                             f"or pass --save_path)")
    return found


# the paper's commands' checkpoint, saved_model/baseline_000/checkpoint_100.pth: the evaluation scripts'
# default, where train.py writes epoch 100 of run 0, and where --download_pretrained puts the authors' file
PAPER_N_FOLDER, PAPER_CP_NUM = 0, 100


# Run folders and checkpoints: the one home of their names. train.py writes them (training/outputs.py),
# every command reads them (--n_folder/--cp_num), model/checkpoint.py lists them, demo.py finds them.
CHECKPOINT_GLOB = "checkpoint_*.pth"


def run_folder_name(n_folder: int) -> str:
    return f"baseline_{n_folder:03d}"


def checkpoint_name(epoch: int) -> str:
    return f"checkpoint_{epoch:03d}.pth"


def checkpoint_number(path):
    """The epoch ``N`` of a ``checkpoint_N.pth`` file name; None for any other name."""
    match = re.fullmatch(r"checkpoint_(\d+)\.pth", Path(path).name)
    return int(match.group(1)) if match else None


def run_folder(n_folder: int, root=None) -> Path:
    """``<root>/baseline_{n_folder:03d}`` (root: ``--model_dir``, default saved_model/)."""
    return Path(root or SAVED_MODEL_DIR) / run_folder_name(n_folder)


def checkpoint_path(n_folder: int, epoch: int, root=None) -> Path:
    """``<root>/baseline_{n_folder:03d}/checkpoint_{epoch:03d}.pth``."""
    return run_folder(n_folder, root) / checkpoint_name(epoch)


def protocol_list_path(protocol: str, lists_dir=None) -> Path:
    """The trial list of a VoxCeleb1 protocol (a key of ``PROTOCOL_LISTS``) in ``lists_dir`` (default lists/)."""
    if protocol not in PROTOCOL_LISTS:
        from common.errors import UserInputError
        raise UserInputError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOL_LISTS)}")
    return Path(lists_dir or LISTS_DIR) / PROTOCOL_LISTS[protocol]


# ---------------------------------------------------------------- command-line helpers shared by scripts
NOT_SHOWN = (None, False, argparse.SUPPRESS)   # defaults --help leaves to the flag's help text (by identity: 0 is shown)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` of every script: the description's line breaks kept, each flag's default shown as
    ``(default: X)`` (a flag without a value to show, default None, says in its help what happens)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or any(action.default is value for value in NOT_SHOWN):
            return text
        return text + " (default: %(default)s)"


def argument_parser(description: str) -> argparse.ArgumentParser:
    """The parser every script starts from (its module docstring as the description)."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)


def str2bool(value) -> bool:
    """True/False/yes/no/1/0 (any case), as the paper's scripts accept them."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("true", "t", "yes", "y", "1"):
        return True
    if lowered in ("false", "f", "no", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False/yes/no/1/0), got {value!r}")


def add_save_path_argument(parser) -> None:
    parser.add_argument("--save_path", type=str, default=None,
                        help=f"data root (default {save_path}, or $META_SR_SAVE_PATH)")


def add_common_arguments(parser) -> None:
    """--save_path, --use_cuda, --gpu, --seed: the flags every script shares."""
    add_save_path_argument(parser)
    parser.add_argument("--use_cuda", type=str2bool, default=None,
                        help="run on the GPU (default: True when one is present)")
    parser.add_argument("--gpu", type=int, default=0, help="GPU index")
    parser.add_argument("--seed", type=int, default=0, help="random seed (runs are reproducible)")


def add_checkpoint_arguments(parser, n_folder=None, cp_num=None, checkpoint: bool = True) -> None:
    """--checkpoint PATH, or --n_folder/--cp_num (in --model_dir): how commands pick a checkpoint (the
    evaluation scripts default to the paper's folder 0, epoch 100; train.py has no --checkpoint)."""
    if checkpoint:
        parser.add_argument("--checkpoint", type=str, default=None,
                            help="any checkpoint file (.pth, e.g. the authors' published one) instead of "
                                 "--n_folder/--cp_num")
    parser.add_argument("--n_folder", type=int, default=n_folder, help="run folder <model_dir>/baseline_NNN")
    parser.add_argument("--cp_num", type=int, default=cp_num,
                        help="checkpoint (epoch) number: checkpoint_NNN.pth in that folder")
    add_model_dir_argument(parser)


def add_model_dir_argument(parser) -> None:
    parser.add_argument("--model_dir", type=str, default=None,
                        help=f"where baseline_NNN folders are (default {SAVED_MODEL_DIR})")


def check_checkpoint_arguments(parser, args) -> None:
    if args.checkpoint is None and (args.n_folder is None or args.cp_num is None):
        parser.error("give --checkpoint PATH, or both --n_folder and --cp_num")


def apply_common_arguments(args):
    """Fill in --save_path's default, resolve --use_cuda/--gpu into ``args.device``; seed everything."""
    import random

    import numpy as np
    import torch
    args.save_path = args.save_path or save_path
    cuda_available = torch.cuda.is_available()
    if args.use_cuda is None:
        args.use_cuda = cuda_available
    if args.use_cuda and not cuda_available:
        print("warning: --use_cuda True but no GPU is available; running on CPU", file=sys.stderr)
        args.use_cuda = False
    args.device = torch.device(f"cuda:{args.gpu}" if args.use_cuda else "cpu")
    if not 0 <= args.seed < 2 ** 32:
        from common.errors import UserInputError
        raise UserInputError(f"--seed must lie in [0, 2**32) (the random generators' range), got {args.seed}")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    return args
