"""Train the speaker encoder as the paper does (softmax, or prototypical episodes + global classification).

    python train.py --loss_type prototypical --use_GC True --n_shot 1 --n_query 2 --use_variable True --nb_class_train 100
    python train.py --loss_type softmax --use_GC False --n_shot 1 --n_query 0 --use_variable False --nb_class_train 256
    torchrun --nproc_per_node 4 train.py ...            # one episode shared by 4 processes (DDP)
    python train.py ... --use_checkpoint True --cp_num 7  # resume from epoch 8
    python train.py --config saved_model/baseline_000/config.json --n_folder 1   # repeat a run (flags override)
"""
import argparse
import sys
from pathlib import Path

import yaml

import configure
from common.errors import UserInputError, run_main
from data_loading.waveforms import FBANK_PLACES, INPUTS
from evaluation.validation import DEFAULT_VAL_INTERVAL
from model.loss import CLASSIFICATION_LOSSES, LOSS_ARGS, LOSSES
from model.registry import DEFAULT_ARGS, DEFAULT_MODEL, MODELS
from model.resnet import BLOCKS_PER_STAGE
from training.fast_paths import COMPILE_MODES, SGD_IMPLS

RECORDED_ONLY = {"world_size"}   # in a run's config.json, but not a flag
RESUME_ONLY = ("use_checkpoint", "cp_num")   # how one invocation starts, not a setting of the run it repeats


def build_parser() -> argparse.ArgumentParser:
    parser = configure.argument_parser(__doc__)
    add_objective_arguments(parser)
    configure.add_checkpoint_arguments(parser, configure.PAPER_N_FOLDER, configure.PAPER_CP_NUM, checkpoint=False)
    parser.add_argument("--data_type", choices=("vox1", "vox2"), default="vox2", help="training data")
    parser.add_argument("--use_checkpoint", type=configure.str2bool, default=False, help="resume from --cp_num")
    parser.add_argument("--overwrite", type=configure.str2bool, nargs="?", const=True, default=False,
                        help="start afresh in a used --n_folder: its old files move into replaced_<date>/")
    configure.add_common_arguments(parser)
    parser.add_argument("--max_epoch", type=int, default=100, help="last epoch to train")
    parser.add_argument("--n_episode", type=int, default=None, help="episodes per epoch (default: all data)")
    parser.add_argument("--channels", type=int, default=None,
                        help="encoder width (default: the model's own, " +
                             ", ".join(f"{name} {args['channels']}" for name, args in DEFAULT_ARGS.items()) + ")")
    parser.add_argument("--model", choices=tuple(MODELS), default=DEFAULT_MODEL, help="encoder")
    parser.add_argument("--backbone", choices=tuple(BLOCKS_PER_STAGE), default="resnet34", help="ResNet depth")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default min(4, cpus))")
    parser.add_argument("--amp", type=configure.str2bool, nargs="?", const=True, default=False,
                        help="bfloat16 autocast on the GPU")
    parser.add_argument("--cudnn_benchmark", type=configure.str2bool, default=None,
                        help="cuDNN autotuning on the GPU (default: only without --use_variable: each new "
                             "query length is tuned once, which made the first epochs ~10x slower on an H200)")
    parser.add_argument("--sync_bn", type=configure.str2bool, nargs="?", const=True, default=False,
                        help="BatchNorm statistics over all processes (torchrun)")
    parser.add_argument("--lr", type=float, default=0.1, help="initial SGD learning rate")
    add_validation_arguments(parser)
    add_waveform_arguments(parser)
    add_speed_arguments(parser)
    parser.add_argument("--config", type=str, default=None,
                        help="YAML or JSON file of settings (e.g. a run's config.json); flags override it")
    parser.add_argument("--tensorboard", type=configure.str2bool, nargs="?", const=True, default=False,
                        help="also log the epoch scalars for TensorBoard in <run folder>/tensorboard/")
    parser.add_argument("--reindex", action="store_true",
                        help="rebuild the feature store's corpus index before training (done by itself when stale)")
    return parser


def add_objective_arguments(parser) -> None:
    """The loss and the episodes (or, for the classification losses, batches of full crops)."""
    parser.add_argument("--loss_type", choices=tuple(LOSSES), default="prototypical",
                        help="training objective (amsoftmax/aamsoftmax: margin softmax baselines, not in the paper)")
    parser.add_argument("--use_GC", type=configure.str2bool, default=None,
                        help="add global classification (default True; prototypical only: classification "
                             "losses have no GC term)")
    parser.add_argument("--gc_loss", choices=CLASSIFICATION_LOSSES, default="softmax",
                        help="loss of the global classification (softmax as the paper)")
    parser.add_argument("--margin", type=float, default=LOSS_ARGS["margin"], help="margin m of amsoftmax/aamsoftmax")
    parser.add_argument("--scale", type=float, default=LOSS_ARGS["scale"], help="scale s of amsoftmax/aamsoftmax")
    parser.add_argument("--n_shot", type=int, default=1, help="support utterances per speaker")
    parser.add_argument("--n_query", type=int, default=2, help="query utterances per speaker")
    parser.add_argument("--use_variable", type=configure.str2bool, default=None,
                        help="query length drawn per episode from [100, 200) frames (default True; "
                             "prototypical only: classification losses always train on full 200-frame crops)")
    parser.add_argument("--nb_class_train", type=int, default=None,
                        help="speakers per episode (default 100; softmax batch default 256)")


def add_validation_arguments(parser) -> None:
    """Validation while training (not in the paper; evaluation/validation.py)."""
    parser.add_argument("--val_trials", type=str, default=None,
                        help="validate on this trial list (label enroll test) while training; best.pth kept")
    parser.add_argument("--val_interval", type=int, default=DEFAULT_VAL_INTERVAL,
                        help="validate every N epochs (and after the last)")
    parser.add_argument("--val_features", nargs="+", default=None,
                        help="feature folders of the validation utterances (default: VoxCeleb1 test, dev)")


def add_waveform_arguments(parser) -> None:
    """Training from recordings and augmenting them (beyond the paper; docs/training.md)."""
    parser.add_argument("--input", choices=INPUTS, default=INPUTS[0],
                        help="cut training crops from the stored features (the paper) or from the recordings, "
                             "features computed on the fly")
    parser.add_argument("--wav_dir", type=str, default=None,
                        help="recordings of the training features, same <speaker>/<session>/<utt> paths "
                             "(default: the wav folder they were extracted from, e.g. voxceleb2/dev/wav)")
    parser.add_argument("--augment", type=configure.str2bool, nargs="?", const=True, default=False,
                        help="noise, music, babble (MUSAN --noise_dir) or reverberation (--rir_dir, else simulated rooms)")
    parser.add_argument("--noise_dir", type=str, default=None, help="MUSAN-style folder: noise/, music/, speech/")
    parser.add_argument("--rir_dir", type=str, default=None,
                        help="room impulse responses (*.wav below it, e.g. RIRS_NOISES/simulated_rirs); "
                             "default: simulated shoebox rooms")
    parser.add_argument("--speed_perturb", type=configure.str2bool, nargs="?", const=True, default=False,
                        help="also play every recording at 0.9x and 1.1x speed, as new speakers (3x speakers)")
    parser.add_argument("--wav_fbank", choices=FBANK_PLACES, default=FBANK_PLACES[0],
                        help="--input wav: compute the features in the DataLoader workers, or on the training "
                             "device (GPU) in the step, from the crops' samples")


def add_speed_arguments(parser) -> None:
    """Opt-in faster paths (training/fast_paths.py; docs/bench.md): off by default."""
    str2bool = configure.str2bool
    parser.add_argument("--channels_last", type=str2bool, nargs="?", const=True, default=None,
                        help="NHWC convolutions (default: on the GPU only)")
    parser.add_argument("--sgd_impl", choices=SGD_IMPLS, default="default",
                        help="SGD kernels: torch's choice, the for-loop, foreach (bitwise equal) or fused")
    parser.add_argument("--compile", choices=COMPILE_MODES, nargs="?", const="default", default=None,
                        help="torch.compile the encoder (mode; compiling takes a minute or more at start)")
    parser.add_argument("--cuda_graphs", type=str2bool, nargs="?", const=True, default=False,
                        help="replay each episode shape's forward + backward from a CUDA graph (GPU, one process)")


def parse_args(argv=None) -> argparse.Namespace:
    """Flags, with ``--config FILE`` (YAML, or the config.json a run saved) supplying the defaults
    that the command line does not set."""
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**config_defaults(known.config, parser))
    return parser.parse_args(argv)


def config_defaults(path, parser) -> dict:
    """The settings of a config file that are flags of ``parser`` (keys a run only records, such as
    world_size, are ignored); an unknown key or a file that is not a mapping is an error."""
    try:
        settings = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UserInputError(f"--config {path}: cannot read it ({str(error).splitlines()[0]})") from None
    if not isinstance(settings, dict):
        raise UserInputError(f"--config {path}: expected a mapping of flag names to values")
    actions = {action.dest: action for action in parser._actions if action.dest not in ("help", "config")}
    unknown = sorted(set(map(str, settings)) - set(actions) - RECORDED_ONLY)
    if unknown:
        raise UserInputError(f"--config {path}: unknown setting(s) {', '.join(unknown)}")
    checked = {key: checked_setting(parser, actions[key], value, path) for key, value in settings.items()
               if key in actions}
    return without_resume(checked, path)


def without_resume(settings: dict, path) -> dict:
    """A config file's settings less how the run it records was started: resuming is asked on the
    command line (``--use_checkpoint True --cp_num N``), so the config.json of a resumed run repeats the
    run from its start, as that of a fresh run does, instead of looking for a checkpoint to resume."""
    if settings.get("use_checkpoint"):
        print(f"note: --config {path}: use_checkpoint is not taken from a config file (a resumed run's "
              "config.json repeats the run from epoch 1); to resume, pass --use_checkpoint True --cp_num N",
              file=sys.stderr)
    return {key: value for key, value in settings.items() if key not in RESUME_ONLY}


def checked_setting(parser, action, value, path):
    """A config file's value through the flag's own type and choices, as if given on the command line
    (``loss_type: triplet`` or ``n_query: [1, 2]`` are refused as the flags would refuse them)."""
    where = f"--config {path}: {action.dest}"
    if value is None:
        if action.default is None:
            return None
        raise UserInputError(f"{where}: null is not a value of --{action.dest}")
    many = action.nargs in ("+", "*")
    if isinstance(value, (dict, list)) and not (many and isinstance(value, list) and value):
        raise UserInputError(f"{where}: expected {'a list of values' if many else 'one value'}, got {value!r}")
    if action.nargs == 0:   # store_true: no value on the command line, a boolean in the file
        return setting_bool(value, where)
    strings = [setting_text(item, where) for item in (value if many else [value])]
    try:
        return parser._get_values(action, strings)   # argparse's own conversion and choice check
    except argparse.ArgumentError as error:
        raise UserInputError(f"{where}: {error.message}") from None


def setting_bool(value, where: str) -> bool:
    try:
        return configure.str2bool(setting_text(value, where))
    except argparse.ArgumentTypeError as error:
        raise UserInputError(f"{where}: {error}") from None


def setting_text(value, where: str) -> str:
    """A scalar as the command line would spell it (a nested list or mapping is refused)."""
    if isinstance(value, (dict, list)):
        raise UserInputError(f"{where}: expected plain values, got {value!r}")
    return str(value)


def main(argv=None) -> None:
    args = configure.apply_common_arguments(parse_args(argv))
    from training.run import train  # torch and the data stack: after the flags are known to be good
    train(args)


if __name__ == "__main__":
    run_main(main)
