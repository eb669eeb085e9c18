"""A training run's settings: ``TrainConfig``, resolved once from the flags, checked, saved as config.json.

Every field is a train.py flag of the same name (``world_size`` is recorded, not set). The resolved
config is written beside the checkpoints (``config.json``) and into each checkpoint, and
``python train.py --config <run>/config.json`` repeats the run.
"""
import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from typing import Optional

import configure
from common.errors import UserInputError
from data_loading.episodes import CROP_FRAMES, EpisodeConfig
from data_loading.waveforms import check_waveform_config, resolve_waveform_config
from evaluation.validation import DEFAULT_VAL_INTERVAL
from model.loss import CLASSIFICATION_LOSSES, LOSS_ARGS, LOSSES
from model.registry import DEFAULT_MODEL, default_args
from training.distributed import DistContext
from training.fast_paths import check_fast_paths

PROTOTYPICAL_WAYS = 100       # --nb_class_train default of the paper's episodes
SOFTMAX_BATCH_SPEAKERS = 256  # the softmax baseline's batch


@dataclass
class TrainConfig:
    # objective and episodes
    loss_type: str
    use_GC: bool
    gc_loss: Optional[str]
    margin: Optional[float]
    scale: Optional[float]
    n_shot: int
    n_query: int
    use_variable: bool
    nb_class_train: int
    # data and run folder
    data_type: str
    save_path: str
    model_dir: str
    n_folder: int
    use_checkpoint: bool
    cp_num: int
    # model and optimisation
    model: str
    backbone: str
    channels: int
    lr: float
    max_epoch: int
    n_episode: Optional[int]
    seed: int
    # hardware
    use_cuda: bool
    gpu: int
    workers: int
    amp: bool
    sync_bn: bool
    cudnn_benchmark: bool
    # validation while training, logs
    val_trials: Optional[str]
    val_interval: int
    val_features: Optional[list]
    tensorboard: bool = False
    world_size: int = 1
    # training from recordings (data_loading/waveforms.py): --input wav, augmentation, speed perturbation
    input: str = "features"
    wav_dir: Optional[str] = None
    augment: bool = False
    noise_dir: Optional[str] = None
    rir_dir: Optional[str] = None
    speed_perturb: bool = False
    wav_fbank: str = "workers"
    # opt-in faster paths (training/fast_paths.py); the defaults compute exactly what they always did
    channels_last: Optional[bool] = None
    sgd_impl: str = "default"
    compile: Optional[str] = None
    cuda_graphs: bool = False

    def as_dict(self) -> dict:
        """Plain JSON-able values (config.json, the checkpoint's ``config``)."""
        return dataclasses.asdict(self)

    @property
    def episode(self) -> EpisodeConfig:
        """What one training step reads. A classification loss (softmax, amsoftmax, aamsoftmax) has no
        support/query split, as the original's softmax: all ``n_shot + n_query`` crops of each speaker
        are full length and go through the encoder in one pass (one BatchNorm batch)."""
        if self.loss_type in CLASSIFICATION_LOSSES:
            return EpisodeConfig(n_way=self.nb_class_train, n_shot=self.n_shot + self.n_query)
        return EpisodeConfig(n_way=self.nb_class_train, n_shot=self.n_shot, n_query=self.n_query,
                             variable_query=self.use_variable)

    @property
    def loss_args(self) -> dict:
        """The loss hyper-parameters (``--margin``, ``--scale``) as the one mapping the losses take;
        config.json keeps them as fields of their own."""
        return {key: getattr(self, key) for key in LOSS_ARGS if getattr(self, key, None) is not None}

    @property
    def objective_name(self) -> str:
        """What is trained, as the log says it: ``prototypical + GC (aamsoftmax)``."""
        if not (self.loss_type == "prototypical" and self.use_GC):
            return self.loss_type
        return "prototypical + GC" + (f" ({self.gc_loss})" if (self.gc_loss or "softmax") != "softmax" else "")


def resolve_config(args, ctx: DistContext = DistContext()) -> TrainConfig:
    """The run's settings from parsed flags, defaults filled in; bad values -> UserInputError."""
    values = {field.name: getattr(args, field.name, None) for field in dataclasses.fields(TrainConfig)}
    resolve_objective_defaults(values, ctx)
    if values["workers"] is None:
        values["workers"] = min(4, os.cpu_count() or 1)
    if values["cudnn_benchmark"] is None:  # autotuning pays off only when the shapes repeat
        values["cudnn_benchmark"] = not values["use_variable"]
    if values["val_interval"] is None:
        values["val_interval"] = DEFAULT_VAL_INTERVAL
    values["model_dir"] = str(values["model_dir"] or configure.SAVED_MODEL_DIR)
    values.update(sgd_impl=values["sgd_impl"] or "default", cuda_graphs=bool(values["cuda_graphs"]))
    values["tensorboard"] = bool(values["tensorboard"])
    values["world_size"] = ctx.world_size
    values.update(resolve_waveform_config(values))   # --input wav: the wav folder the features mirror
    config = TrainConfig(**values)
    check_config(config)
    return config


def resolve_objective_defaults(values: dict, ctx: DistContext) -> None:
    """Defaults that depend on ``--loss_type`` and ``--model``, filled into ``values`` in place.

    A classification loss trains on full crops only (the original cuts query crops for prototypical
    alone) and has no global classification term: ``use_variable`` and ``use_GC`` are False whatever
    was asked, with a note when the flags or the config file asked for True (``prototypical_only``).
    ``channels`` left out is the model's own default (``model.registry.default_args``)."""
    classification = values["loss_type"] in CLASSIFICATION_LOSSES
    prototypical_only(values, "use_variable", classification, ctx,
                      f"always trains on full {CROP_FRAMES}-frame crops, as the original's softmax")
    prototypical_only(values, "use_GC", classification, ctx,
                      "has no global classification term (GC is an add-on of prototypical episodes)")
    if values["nb_class_train"] is None:
        values["nb_class_train"] = SOFTMAX_BATCH_SPEAKERS if classification else PROTOTYPICAL_WAYS
        if classification and ctx.is_main:
            print(f"note: --loss_type {values['loss_type']}: {SOFTMAX_BATCH_SPEAKERS} speakers per batch (the "
                  f"paper's softmax setting; the original's --nb_class_train default is {PROTOTYPICAL_WAYS})",
                  file=sys.stderr)
    if values["channels"] is None:
        values["channels"] = default_args(values["model"] or DEFAULT_MODEL)["channels"]


def prototypical_only(values: dict, flag: str, classification: bool, ctx: DistContext, why: str) -> None:
    """A prototypical add-on (its flag's default is None, so "asked" is any value given): True unless
    turned off; a classification loss trains without it, with a note when True was asked for."""
    asked = values[flag]
    if classification and asked and ctx.is_main:
        print(f"note: --loss_type {values['loss_type']} {why}: --{flag} True is ignored", file=sys.stderr)
    values[flag] = not classification and (asked is None or bool(asked))


def check_config(config: TrainConfig) -> None:
    minimum = {"n_shot": 1, "n_query": 0, "nb_class_train": 1, "max_epoch": 1, "channels": 1, "workers": 0,
               "n_folder": 0}
    if LOSSES[config.loss_type].needs_queries:
        minimum.update(n_query=1, nb_class_train=2)
    for key, low in minimum.items():
        if getattr(config, key) < low:
            raise UserInputError(f"--{key} must be at least {low} for --loss_type {config.loss_type}, "
                                 f"got {getattr(config, key)}")
    if config.val_interval < 1:   # also without --val_trials: a value no run can use
        raise UserInputError(f"--val_interval must be at least 1, got {config.val_interval}")
    if config.n_episode is not None and config.n_episode < 1:
        raise UserInputError(f"--n_episode must be at least 1, got {config.n_episode}")
    if config.model == "ecapa_tdnn" and config.channels % 8:
        raise UserInputError(f"--channels must be a multiple of 8 for --model ecapa_tdnn (its Res2Net "
                             f"splits channels into 8 groups), got {config.channels}")
    if config.margin is not None and not 0 <= config.margin < math.pi / 2:
        raise UserInputError(f"--margin must be in [0, pi/2), got {config.margin}")
    if config.scale is not None and not 0 < config.scale < math.inf:
        raise UserInputError(f"--scale must be positive and finite, got {config.scale}")
    if not 0 < config.lr < math.inf:
        raise UserInputError(f"--lr must be positive and finite, got {config.lr}")
    if config.nb_class_train < config.world_size:
        raise UserInputError(f"--nb_class_train {config.nb_class_train} is smaller than the "
                             f"{config.world_size} processes sharing each episode")
    check_waveform_config(config.as_dict())   # --input wav, --augment and their folders
    check_fast_paths(config)   # --cuda_graphs on a GPU, in one process


def episodes_per_epoch(n_utterances: int, episode: EpisodeConfig, n_episode=None) -> int:
    """``n_utterances // (n_way * (n_shot + n_query))`` as the original, or ``--n_episode``."""
    if n_episode:
        return int(n_episode)
    per_episode = episode.samples_per_class * episode.n_way
    if n_utterances < per_episode:
        raise UserInputError(f"{n_utterances} training utterances are fewer than one episode needs "
                             f"({per_episode}); use --n_episode or a smaller --nb_class_train")
    return n_utterances // per_episode
