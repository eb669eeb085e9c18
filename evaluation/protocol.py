"""Which trial list an evaluation runs on: ``--protocol O|E|H`` (VoxCeleb1, cleaned lists) or
``O-original|E-original|H-original`` (the lists as first published), or any ``--trials`` file.

The table protocol -> list file is ``configure.PROTOCOL_LISTS``; ``dataprep.py --download_lists``
fetches the lists into ``lists/``. Without ``--protocol`` or ``--trials`` the paper's list
``lists/veri_test.txt`` (VoxCeleb1-O original) is used, as the paper's ``EER_full.py`` does, so
its command computes what it always computed. E and H need all of VoxCeleb1 (dev and test
features); O only the test part.
"""
from pathlib import Path

import configure
from common.errors import UserInputError
from evaluation.embedding_cache import cache_identity, open_cache
from evaluation.trials import read_trials, voxceleb1_feature_roots


PAPER_LIST = configure.VOX1_O_TRIALS.relative_to(configure.PROJECT_ROOT)


def add_protocol_arguments(parser, default: str = f"--trials {PAPER_LIST}, the paper's list") -> None:
    """--protocol and --trials (exclusive); ``default`` says what neither means for this script."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--protocol", choices=tuple(configure.PROTOCOL_LISTS), default=None, nargs="?",
                       const=configure.DEFAULT_PROTOCOL,
                       help="VoxCeleb1 protocol: O, E, H use the cleaned lists, O-original etc. the lists "
                            "as first published (python dataprep.py --download_lists fetches them); "
                            f"--protocol alone: {configure.DEFAULT_PROTOCOL}; without it: {default}")
    group.add_argument("--trials", type=str, default=None,
                       help=f"any trial list file (label enroll test per line); default: {default}")


def add_cache_argument(parser) -> None:
    parser.add_argument("--cache_dir", type=str, default=None,
                        help="where the resumable cache of full-utterance embeddings goes (a folder "
                             "embedding_cache/<model and features key>/ in it); default: the results folder")


def embedding_cache(args, checkpoint, roots, out_dir, n_utterances: int) -> Path:
    """The cache folder for this checkpoint and these feature roots (created, room checked)."""
    base = Path(args.cache_dir) if args.cache_dir else out_dir
    return open_cache(base, cache_identity(checkpoint, roots), n_utterances)


def protocol_list(protocol: str) -> Path:
    """The list file of ``protocol``; one error line naming the command that fetches it when missing."""
    path = configure.protocol_list_path(protocol)
    if not path.is_file():
        raise UserInputError(f"--protocol {protocol}: trial list {path} not found; "
                             f"`python dataprep.py --download_lists` fetches it")
    return path


def trial_list_path(args) -> Path:
    """The list the flags pick: --protocol's, else --trials, else the paper's VoxCeleb1-O list."""
    if args.protocol:
        return protocol_list(args.protocol)
    return Path(args.trials) if args.trials else configure.VOX1_O_TRIALS


def protocol_feature_roots(args) -> list:
    """VoxCeleb1's feature folders for the flags' list: both test and dev for the E and H protocols
    (an error naming the missing one before any work), else those that exist."""
    if args.protocol and not args.protocol.startswith("O"):
        return configure.feature_roots(args.save_path, configure.VOXCELEB1_SPLITS, "all",
                                       f"--protocol {args.protocol} uses all of VoxCeleb1 (dev and test): features")
    return voxceleb1_feature_roots(args.save_path)


def selected_trials(args):
    """The parsed trials (evaluation.trials.Trials) of the flags' list."""
    return read_trials(trial_list_path(args))
