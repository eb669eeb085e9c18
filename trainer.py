"""Training loop of the paper (train.py): episodes, SGD + ReduceLROnPlateau, checkpoints, logs, curves.

One epoch = ``n_utterances // ((n_shot + n_query) * nb_class_train)`` episodes (or ``--n_episode``).
Each step runs support and query through the encoder in two forward passes (train-mode BatchNorm
statistics per pass, as the original) and back-propagates ``EpisodeObjective``. After every epoch,
rank 0 writes (atomically) ``checkpoint_{epoch:03d}.pth`` (epoch, state_dict, optimizer, scheduler,
config, rng, sampler), ``train_log.csv``, ``train_curves.png`` and ``config.json`` into
``<model_dir>/baseline_{n_folder:03d}/``. Episodes are pure functions of (seed, epoch, index) and every
random state is restored, so a resumed run repeats an uninterrupted one bit for bit (on CPU).
"""
import contextlib
import copy
import csv
import io
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

import configure
from data_loading.corpus import FeatureCorpus
from data_loading.episodes import EpisodeConfig, EpisodeDataset, check_episode_config
from common.errors import UserInputError
from common.files import atomic_path, write_text
from distributed import (DistContext, ShardedEpisodeDataset, check_same_corpus, context_from_env,
                         convert_sync_batchnorm, destroy_process_group, gather_shot_major, init_process_group,
                         process_group_note)
from model.checkpoint import (encoder_shape, load_checkpoint, model_fields, resolve_checkpoint, save_checkpoint,
                              trained_epochs)
from evaluation.validation import BEST_NAME, VAL_LOG_FIELDS, best_so_far, is_new_best, validation_from_config
from model.loss import CLASSIFICATION_LOSSES, LOSSES, EpisodeObjective
from model.registry import DEFAULT_MODEL, build_model
from run_folder import check_room_for_checkpoints, claim_run_folder

PROTOTYPICAL_WAYS = 100       # --nb_class_train default of the paper's episodes
SOFTMAX_BATCH_SPEAKERS = 256  # the softmax baseline's batch
TRAIN_LOG_FIELDS = ("epoch", "loss", "loss_e", "loss_g", "acc_e", "acc_g", "lr", "seconds", "samples_per_s")
OWN_TEMPORARIES = (".checkpoint_*.pth.*.tmp", ".train_log.csv.*.tmp", ".train_curves.png.*.tmp.png",
                   ".config.json.*.tmp", f".{BEST_NAME}.*.tmp")
CONFIG_KEYS = ("model", "loss_type", "use_GC", "n_shot", "n_query", "use_variable", "nb_class_train", "n_folder",
               "data_type", "use_checkpoint", "cp_num", "save_path", "model_dir", "use_cuda", "gpu", "seed",
               "max_epoch", "n_episode", "channels", "backbone", "workers", "amp", "sync_bn", "lr",
               "cudnn_benchmark", "gc_loss", "margin", "scale", "val_trials", "val_interval", "val_features")


# ---------------------------------------------------------------- configuration
def resolve_config(args, ctx: DistContext = DistContext()) -> dict:
    """The run's settings as a plain JSON-able dict, defaults filled in; bad values -> UserInputError."""
    config = {key: getattr(args, key, None) for key in CONFIG_KEYS}
    softmax = config["loss_type"] in CLASSIFICATION_LOSSES
    if config["nb_class_train"] is None:
        config["nb_class_train"] = SOFTMAX_BATCH_SPEAKERS if softmax else PROTOTYPICAL_WAYS
        if softmax and ctx.is_main:
            print(f"note: --loss_type {config['loss_type']}: {SOFTMAX_BATCH_SPEAKERS} speakers per batch (the paper's "
                  f"softmax setting; the original's --nb_class_train default is {PROTOTYPICAL_WAYS})",
                  file=sys.stderr)
    if config["workers"] is None:
        config["workers"] = min(4, os.cpu_count() or 1)
    if config["cudnn_benchmark"] is None:  # autotuning pays off only when the shapes repeat
        config["cudnn_benchmark"] = not config["use_variable"]
    config["model_dir"] = str(config["model_dir"] or configure.SAVED_MODEL_DIR)
    config["world_size"] = ctx.world_size
    check_config(config)
    return config


def check_config(config: dict) -> None:
    minimum = {"n_shot": 1, "n_query": 0, "nb_class_train": 1, "max_epoch": 1, "channels": 1, "workers": 0,
               "n_folder": 0}
    if LOSSES[config["loss_type"]].needs_queries:
        minimum.update(n_query=1, nb_class_train=2)
    for key, low in minimum.items():
        if config[key] < low:
            raise UserInputError(f"--{key} must be at least {low} for --loss_type {config['loss_type']}, "
                                 f"got {config[key]}")
    if config["n_episode"] is not None and config["n_episode"] < 1:
        raise UserInputError(f"--n_episode must be at least 1, got {config['n_episode']}")
    if config["model"] == "ecapa_tdnn" and config["channels"] % 8:
        raise UserInputError(f"--channels must be a multiple of 8 for --model ecapa_tdnn (its Res2Net "
                             f"splits channels into 8 groups), got {config['channels']}")
    if config["margin"] is not None and not 0 <= config["margin"] < math.pi / 2:
        raise UserInputError(f"--margin must be in [0, pi/2), got {config['margin']}")
    if config["scale"] is not None and not config["scale"] > 0:
        raise UserInputError(f"--scale must be positive, got {config['scale']}")
    if not config["lr"] > 0:
        raise UserInputError(f"--lr must be positive, got {config['lr']}")
    if config["nb_class_train"] < config["world_size"]:
        raise UserInputError(f"--nb_class_train {config['nb_class_train']} is smaller than the "
                             f"{config['world_size']} processes sharing each episode")


def episode_config(config: dict) -> EpisodeConfig:
    return EpisodeConfig(n_way=config["nb_class_train"], n_shot=config["n_shot"],
                         n_query=config["n_query"], variable_query=config["use_variable"])


def episodes_per_epoch(n_utterances: int, episode: EpisodeConfig, n_episode=None) -> int:
    if n_episode:
        return int(n_episode)
    per_episode = episode.samples_per_class * episode.n_way
    if n_utterances < per_episode:
        raise UserInputError(f"{n_utterances} training utterances are fewer than one episode needs "
                             f"({per_episode}); use --n_episode or a smaller --nb_class_train")
    return n_utterances // per_episode


def training_device(config: dict, ctx: DistContext) -> torch.device:
    if not config["use_cuda"]:
        return torch.device("cpu")
    index = ctx.local_rank if ctx.enabled else config["gpu"]
    torch.cuda.set_device(index)
    torch.backends.cudnn.benchmark = config["cudnn_benchmark"]
    return torch.device(f"cuda:{index}")


# ---------------------------------------------------------------- model, optimiser, one step
class EpisodeStep(nn.Module):
    """Encoder + objective in one module (so DDP sees one forward): support and query embedded in two
    passes, gathered over ranks into the whole shot-major episode, then the losses."""

    def __init__(self, encoder: nn.Module, objective: EpisodeObjective, episode: EpisodeConfig,
                 ctx: DistContext = DistContext()):
        super().__init__()
        self.encoder = encoder
        self.objective = objective
        self.episode = episode
        self.ctx = ctx

    def forward(self, support, query, label_g) -> dict:
        n_way = self.episode.n_way
        support_emb = gather_shot_major(self.encoder(support), self.episode.n_shot, n_way, self.ctx)
        if self.episode.n_query:
            query_emb = gather_shot_major(self.encoder(query), self.episode.n_query, n_way, self.ctx)
        else:
            query_emb = support_emb[:0]
        return self.objective(support_emb, query_emb, label_g, n_way, self.encoder.weight)


def build_encoder(config: dict, num_classes: int, device: torch.device, ctx: DistContext):
    torch.manual_seed(config["seed"])  # the same initial weights on every rank
    encoder = build_model(config["model"], num_classes=num_classes, backbone=config["backbone"],
                          channels=config["channels"])
    if config["sync_bn"] and ctx.enabled:
        encoder = convert_sync_batchnorm(encoder, device)
    encoder.weight.requires_grad_(LOSSES[config["loss_type"]](use_gc=config["use_GC"]).needs_class_weights)
    encoder = encoder.to(device)
    if device.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    return encoder


def build_step(encoder, config: dict, ctx: DistContext, device: torch.device) -> nn.Module:
    margins = {key: config[key] for key in ("margin", "scale") if config.get(key) is not None}
    objective = EpisodeObjective(config["loss_type"], config["use_GC"], config.get("gc_loss") or "softmax",
                                 **margins)
    step = EpisodeStep(encoder, objective, episode_config(config), ctx)
    if ctx.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        step = nn.parallel.DistributedDataParallel(step, device_ids=device_ids)
    return step


def build_optimizer(encoder: nn.Module, lr: float) -> torch.optim.SGD:
    return torch.optim.SGD(encoder.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)


def build_scheduler(optimizer) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=3,
                                                      min_lr=1e-5, threshold=1e-4)


def forward_backward(step: nn.Module, batch: dict, device: torch.device, amp: bool = False) -> dict:
    """Loss parts of one episode (detached), gradients accumulated into the parameters."""
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    support = batch["support"].to(device, non_blocking=True, memory_format=memory_format)
    query = batch["query"].to(device, non_blocking=True, memory_format=memory_format)
    label_g = batch["label_g"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        parts = step(support, query, label_g)
    parts["loss"].backward()
    return {key: value.detach().float() for key, value in parts.items()}


def train_step(step: nn.Module, optimizer, batch: dict, device: torch.device, amp: bool = False) -> dict:
    optimizer.zero_grad(set_to_none=True)
    parts = forward_backward(step, batch, device, amp)
    optimizer.step()
    return parts


# ---------------------------------------------------------------- data
class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` so that persistent DataLoader workers always know the epoch."""

    def __init__(self, n_episodes: int):
        self.n_episodes = n_episodes
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_episodes

    def __iter__(self):
        return iter([(self.epoch, index) for index in range(self.n_episodes)])


class EpochEpisodes(torch.utils.data.Dataset):
    def __init__(self, episodes: EpisodeDataset):
        self.episodes = episodes

    def __getitem__(self, key) -> dict:
        epoch, index = key
        self.episodes.set_epoch(epoch)
        return self.episodes[index]


def build_loader(corpus, config: dict, n_episodes: int, ctx: DistContext, device: torch.device):
    episode = episode_config(config)
    if ctx.enabled:
        episodes = ShardedEpisodeDataset(corpus, episode, n_episodes, config["seed"], ctx)
    else:
        episodes = EpisodeDataset(corpus, episode, n_episodes, config["seed"])
    sampler = EpochSampler(n_episodes)
    workers = config["workers"]
    extra = {"prefetch_factor": 4, "persistent_workers": True} if workers > 0 else {}
    loader = torch.utils.data.DataLoader(EpochEpisodes(episodes), batch_size=None, sampler=sampler,
                                         num_workers=workers, pin_memory=device.type == "cuda", **extra)
    return loader, sampler


# ---------------------------------------------------------------- random states and checkpoints
def capture_rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) generator states as tensors/ints (weights_only-loadable)."""
    version, python_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64),
                        "gauss": gauss},
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(path, epoch: int, encoder, optimizer, scheduler, config: dict, **extra) -> None:
    state_dict = {key: value.detach().cpu() for key, value in encoder.state_dict().items()}
    save_checkpoint(path, epoch=epoch, state_dict=state_dict, **model_fields(encoder), optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), config=config, rng=capture_rng_state(),
                    sampler={"seed": config["seed"], "epoch": epoch + 1}, **extra)


def check_compatible(checkpoint: dict, path, num_classes: int, config: dict) -> None:
    """A clear error when a checkpoint does not fit the model this run builds."""
    if "model" in checkpoint:
        shape = dict(checkpoint.get("model_args", {}), model=checkpoint["model"])
    else:
        shape = dict(encoder_shape(checkpoint["state_dict"]), model=DEFAULT_MODEL)
    if shape["model"] != config["model"]:
        raise UserInputError(f"{path} is a {shape['model']} but this run uses --model {config['model']}")
    if shape.get("num_classes") != num_classes:
        raise UserInputError(f"{path} was trained for {shape.get('num_classes')} classes but the training "
                             f"data has {num_classes} speakers")
    if shape.get("channels") != config["channels"]:
        raise UserInputError(f"{path} has width {shape.get('channels')} (--channels) but this run uses "
                             f"--channels {config['channels']}")
    if "backbone" in shape and shape["backbone"] != config["backbone"]:
        raise UserInputError(f"{path} is a {shape['backbone']} but this run uses --backbone {config['backbone']}")


def restore_optimizer(optimizer, state: dict, path) -> None:
    """Load optimiser state; one that does not fit these parameters (e.g. another code base's) is
    skipped with a warning, and training continues with fresh momentum."""
    fresh = copy.deepcopy(optimizer.state_dict())
    try:
        optimizer.load_state_dict(state)
        if all(buffer["momentum_buffer"].shape == param.shape
               for param, buffer in optimizer.state.items() if "momentum_buffer" in buffer):
            return
    except (ValueError, KeyError, TypeError, RuntimeError):
        pass
    print(f"warning: optimizer state in {path} does not fit this model; starting with fresh momentum",
          file=sys.stderr)
    optimizer.load_state_dict(fresh)


def resume(checkpoint: dict, path, encoder, optimizer, scheduler) -> int:
    """Restore everything a checkpoint holds; returns the first epoch to train (``--cp_num N``
    resumes at N + 1, for the original's checkpoints as for this project's: ``trained_epochs``)."""
    encoder.load_state_dict(checkpoint["state_dict"], strict=True)
    if "optimizer" in checkpoint:
        restore_optimizer(optimizer, checkpoint["optimizer"], path)
    if "scheduler" in checkpoint:
        scheduler.load_state_dict(checkpoint["scheduler"])
    if "rng" in checkpoint:
        restore_rng_state(checkpoint["rng"])
    return trained_epochs(checkpoint, path) + 1


# ---------------------------------------------------------------- logs and curves
def read_train_log(path, before_epoch: int) -> list:
    """Rows of an existing ``train_log.csv`` for epochs < ``before_epoch`` (a resumed run rewrites the rest)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [row for row in csv.DictReader(handle) if int(row["epoch"]) < before_epoch]


def write_train_log(path, rows: list) -> None:
    buffer = io.StringIO()
    validated = tuple(key for key in VAL_LOG_FIELDS if any(key in row for row in rows))  # only with --val_trials
    writer = csv.DictWriter(buffer, fieldnames=TRAIN_LOG_FIELDS + validated, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def plot_training_curves(rows: list, path) -> None:
    """Loss, accuracy, learning rate and throughput per epoch, as a PNG (matplotlib Agg)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    def column(name):
        return [float(row[name]) if row.get(name) not in (None, "") else math.nan for row in rows]
    epochs = column("epoch")
    panels = [("loss", ("loss", "loss_e", "loss_g"), ("total", "episodic", "global"), "linear"),
              ("accuracy (%)", ("acc_e", "acc_g"), ("episodic", "global"), "linear"),
              ("learning rate", ("lr",), ("lr",), "log"),
              ("throughput (samples/s)", ("samples_per_s",), ("samples/s",), "linear")]
    if any(row.get("val_eer") for row in rows):  # --val_trials: two more panels
        panels[2:2] = [("validation EER (%)", ("val_eer",), ("EER",), "linear"),
                       ("validation minDCF (0.01)", ("val_mindcf",), ("minDCF",), "linear")]
    figure, axes = plt.subplots(2, len(panels) // 2, figsize=(5 * len(panels) // 2, 7))
    for axis, (title, names, labels, scale) in zip(axes.flat, panels):
        for name, label in zip(names, labels):
            values = column(name)
            if not all(math.isnan(v) for v in values):
                axis.plot(epochs, values, marker="o", label=label)
        axis.set(title=title, xlabel="epoch", yscale=scale)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if len(names) > 1:
            axis.legend()
    figure.tight_layout()
    with atomic_path(path, ".png") as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def epoch_row(epoch: int, means: dict, lr: float, seconds: float, n_samples: int) -> dict:
    row = {"epoch": epoch, "lr": f"{lr:.6g}", "seconds": f"{seconds:.3f}",
           "samples_per_s": f"{n_samples / max(seconds, 1e-9):.2f}"}
    for key in ("loss", "loss_e", "loss_g"):
        row[key] = f"{means[key]:.6f}" if key in means else ""
    for key in ("acc_e", "acc_g"):
        row[key] = f"{100 * means[key]:.3f}" if key in means else ""
    return row


def epoch_log_line(row: dict) -> str:
    losses = " / ".join(f"{name} {row[key]}" for name, key in (("episodic", "loss_e"), ("global", "loss_g"))
                        if row[key])
    accs = " / ".join(f"{name} {row[key]}%" for name, key in (("episodic", "acc_e"), ("global", "acc_g"))
                      if row[key])
    validated = f", val EER {row['val_eer']}%, minDCF {row['val_mindcf']}" if row.get("val_eer") else ""
    return (f"Epoch {row['epoch']}: loss {row['loss']} ({losses}), acc {accs}, lr {row['lr']}, "
            f"{row['seconds']} s, {row['samples_per_s']} samples/s{validated}")


# ---------------------------------------------------------------- the epoch loop
def run_epoch(step, optimizer, loader, device, config: dict, epoch: int, ctx: DistContext) -> dict:
    """Train one epoch; returns the mean of every loss/accuracy part over its episodes."""
    step.train()
    sums, n_steps = {}, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", file=sys.stderr, disable=not ctx.is_main, leave=False,
               dynamic_ncols=True)
    for batch in bar:
        parts = train_step(step, optimizer, batch, device, config["amp"])
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value
        n_steps += 1
        if n_steps % 10 == 1 or n_steps == len(loader):
            shown = {"loss": sums["loss"].item() / n_steps}
            for key in ("acc_e", "acc_g"):
                if key in sums:
                    shown[key] = f"{100 * sums[key].item() / n_steps:.1f}%"
            bar.set_postfix(shown)
    bar.close()
    means = {key: value.item() / max(n_steps, 1) for key, value in sums.items()}
    if not math.isfinite(means.get("loss", math.nan)):
        raise UserInputError(f"the training loss is {means.get('loss')} in epoch {epoch}: training "
                             f"diverged; try a lower --lr or resume from an earlier checkpoint")
    return means


def run_folder(config: dict) -> Path:
    """``<model_dir>/baseline_{n_folder:03d}``: where a run's checkpoints and logs go."""
    return Path(config["model_dir"]) / f"baseline_{config['n_folder']:03d}"


class RunOutputs:
    """Rank 0's files in ``<model_dir>/baseline_XXX``: checkpoints, config.json, train_log.csv, curves."""

    def __init__(self, config: dict, start_epoch: int):
        self.folder = run_folder(config)
        self.folder.mkdir(parents=True, exist_ok=True)
        for pattern in OWN_TEMPORARIES:  # left by a training process killed while writing
            for stale in self.folder.glob(pattern):
                stale.unlink(missing_ok=True)
        self.rows = read_train_log(self.folder / "train_log.csv", start_epoch)
        write_text(self.folder / "config.json", json.dumps(config, indent=2) + "\n")

    def checkpoint(self, epoch: int) -> Path:
        return self.folder / f"checkpoint_{epoch:03d}.pth"

    def add_epoch(self, row: dict) -> None:
        self.rows.append(row)
        write_train_log(self.folder / "train_log.csv", self.rows)
        plot_training_curves(self.rows, self.folder / "train_curves.png")


def prepare(args, claims: contextlib.ExitStack):
    """Everything that can fail on bad input, checked before any process group starts; rank 0 holds
    the run folder (``run_folder.py``) until ``claims`` closes."""
    ctx = context_from_env()
    config = resolve_config(args, ctx)
    corpus = FeatureCorpus(configure.feature_dir(config["save_path"], *configure.TRAIN_DATA[config["data_type"]]),
                           reindex=getattr(args, "reindex", False), build_index=ctx.is_main)  # others wait for rank 0
    episode = episode_config(config)
    check_episode_config(corpus, episode)  # enough speakers?
    if ctx.is_main:
        report_unused_speakers(corpus, episode)
    n_episodes = episodes_per_epoch(len(corpus), episode, config["n_episode"])
    checkpoint = path = None
    if config["use_checkpoint"]:
        path = resolve_checkpoint(config["n_folder"], config["cp_num"], model_dir=config["model_dir"])
        checkpoint = load_checkpoint(path)
        check_compatible(checkpoint, path, corpus.n_speakers, config)
    validation = validation_from_config(config) if ctx.is_main else None
    if ctx.is_main:  # inputs are good: now the run folder (nothing is written before this point)
        claims.enter_context(claim_run_folder(run_folder(config), config["use_checkpoint"],
                                              getattr(args, "overwrite", False)))
        check_room_for_checkpoints(run_folder(config), corpus.n_speakers, config["channels"], config["backbone"])
    return ctx, config, corpus, n_episodes, checkpoint, path, validation


def report_unused_speakers(corpus, episode: EpisodeConfig) -> None:
    """Speakers with fewer than n_shot + n_query utterances never enter an episode: say which."""
    short = [name for name, utts in zip(corpus.speakers, corpus.by_speaker)
             if len(utts) < episode.samples_per_class]
    if short:
        listed = ", ".join(short[:5]) + (", ..." if len(short) > 5 else "")
        print(f"warning: {len(short)} of {corpus.n_speakers} speakers have fewer than "
              f"{episode.samples_per_class} utterances (n_shot + n_query) and are left out of the "
              f"episodes (they still count as classes): {listed}", file=sys.stderr)


def train(args) -> Path:
    """Train as the flags say; returns the folder holding checkpoints and logs."""
    with contextlib.ExitStack() as claims:
        ctx, config, corpus, n_episodes, checkpoint, path, validation = prepare(args, claims)
        device = training_device(config, ctx)
        if config["amp"] and device.type != "cuda":
            print("warning: --amp needs a GPU; training in float32", file=sys.stderr)
            config["amp"] = False
        init_process_group(ctx, device)
        try:
            if ctx.enabled:  # the digest hashes every path (~0.1 s for VoxCeleb2): only when ranks compare
                check_same_corpus(corpus.digest(), ctx)
            return train_epochs(ctx, config, corpus, n_episodes, checkpoint, path, device, validation)
        finally:
            destroy_process_group()


def describe_run(config, corpus, n_episodes, start_epoch, ctx, device) -> str:
    objective = config["loss_type"]
    if objective == "prototypical" and config["use_GC"]:
        objective += " + GC" + (f" ({config['gc_loss']})" if config.get("gc_loss", "softmax") != "softmax" else "")
    if start_epoch > config["max_epoch"]:
        return f"nothing to train: the checkpoint is at epoch {start_epoch - 1} and --max_epoch is {config['max_epoch']}"
    return (f"training {objective} on {len(corpus)} utterances of {corpus.n_speakers} speakers, "
            f"{n_episodes} episodes/epoch, epochs {start_epoch}..{config['max_epoch']}, "
            f"{ctx.world_size} process(es) on {device}{process_group_note()}")


def train_epochs(ctx, config, corpus, n_episodes, checkpoint, path, device, validation=None) -> Path:
    encoder = build_encoder(config, corpus.n_speakers, device, ctx)
    optimizer = build_optimizer(encoder, config["lr"])
    scheduler = build_scheduler(optimizer)
    start_epoch = resume(checkpoint, path, encoder, optimizer, scheduler) if checkpoint else 1
    step = build_step(encoder, config, ctx, device)
    loader, sampler = build_loader(corpus, config, n_episodes, ctx, device)
    outputs = RunOutputs(config, start_epoch) if ctx.is_main else None
    best = best_so_far(outputs.folder, start_epoch) if validation else None
    if ctx.is_main:
        print(describe_run(config, corpus, n_episodes, start_epoch, ctx, device), flush=True)
    samples = config["nb_class_train"] * (config["n_shot"] + config["n_query"]) * n_episodes
    for epoch in range(start_epoch, config["max_epoch"] + 1):
        sampler.set_epoch(epoch)
        started = time.perf_counter()
        means = run_epoch(step, optimizer, loader, device, config, epoch, ctx)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step(means["loss"])
        if ctx.is_main:
            row = epoch_row(epoch, means, lr, time.perf_counter() - started, samples)
            if validation and validation.due(epoch, config["max_epoch"]):
                best = validate(validation, row, best, epoch, encoder, optimizer, scheduler, config, device)
            save_training_checkpoint(outputs.checkpoint(epoch), epoch, encoder, optimizer, scheduler, config)
            outputs.add_epoch(row)
            print(epoch_log_line(row), flush=True)
    return run_folder(config)


def validate(validation, row: dict, best, epoch: int, encoder, optimizer, scheduler, config, device):
    """Add val_eer/val_mindcf to ``row``; a new best is saved as best.pth before the epoch's checkpoint
    (killed in between, the epoch is trained and validated again on resume). Returns the best so far."""
    row.update(validation(encoder, device))
    if not is_new_best(row, best):
        return best
    record = {"epoch": epoch, "val_eer": float(row["val_eer"]), "val_mindcf": float(row["val_mindcf"])}
    save_training_checkpoint(run_folder(config) / BEST_NAME, epoch, encoder, optimizer, scheduler, config,
                             validation=record)
    return record["val_eer"], epoch
