"""train.py's set-up, kept apart from the loop: check every input, claim the run folder, start the
process group, build the parts, hand over to ``training.loop.train_epochs``.

    prepare(args, claims) -> TrainingRun      everything that can fail on bad input, before any work
    build_parts(run, device) -> TrainingParts encoder, step, optimiser, scheduler, loader (+ resume)
    train(args) -> Path                       the two, the process group, the epochs
"""
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

import configure
from data_loading.corpus import FeatureCorpus
from data_loading.episodes import EpisodeConfig, check_episode_config
from data_loading.waveforms import training_corpus
from evaluation.validation import best_so_far, validation_for
from model.checkpoint import load_checkpoint, resolve_checkpoint
from model.registry import describe_model
from training.config import TrainConfig, episodes_per_epoch, resolve_config
from training.data import EpochSampler, build_loader, stop_workers
from training.distributed import (DistContext, check_same_corpus, context_from_env, destroy_process_group,
                                  init_process_group, process_group_note)
from training.fast_paths import set_sgd_kernels
from training.fast_step import compile_encoder, fast_train_step
from training.loop import train_epochs
from training.outputs import RunOutputs, run_folder
from training.run_folder import check_room_for_checkpoints, claim_run_folder
from training.state import check_compatible, resume
from training.step import build_encoder, build_optimizer, build_scheduler, build_step


@dataclass
class TrainingRun:
    """A checked run: its settings, process context, corpus, and what it resumes from."""
    ctx: DistContext
    config: TrainConfig
    corpus: FeatureCorpus
    n_episodes: int
    checkpoint: Optional[dict] = None
    checkpoint_path: Optional[Path] = None
    validation: object = None


@dataclass
class TrainingParts:
    """What the loop drives."""
    encoder: torch.nn.Module
    step: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    loader: torch.utils.data.DataLoader
    sampler: EpochSampler
    device: torch.device
    start_epoch: int
    fast_step: object = None   # training/fast_step.py, with --compile / --cuda_graphs


def prepare(args, claims: contextlib.ExitStack) -> TrainingRun:
    """Everything that can fail on bad input, checked before any process group starts; rank 0 holds
    the run folder (``training/run_folder.py``) until ``claims`` closes."""
    ctx = context_from_env()
    config = resolve_config(args, ctx)
    corpus = FeatureCorpus(configure.feature_dir(config.save_path, *configure.TRAIN_DATA[config.data_type]),
                           reindex=getattr(args, "reindex", False), build_index=ctx.is_main)  # others wait for rank 0
    corpus = training_corpus(corpus, config.as_dict(), getattr(args, "reindex", False), ctx.is_main)  # --input wav
    check_episode_config(corpus, config.episode)  # enough speakers?
    if ctx.is_main:
        report_unused_speakers(corpus, config.episode)
    run = TrainingRun(ctx, config, corpus, episodes_per_epoch(len(corpus), config.episode, config.n_episode))
    if config.use_checkpoint:
        run.checkpoint_path = resolve_checkpoint(config.n_folder, config.cp_num, model_dir=config.model_dir)
        run.checkpoint = load_checkpoint(run.checkpoint_path)
        check_compatible(run.checkpoint, run.checkpoint_path, corpus.n_speakers, config)
    if ctx.is_main:
        run.validation = validation_for(config.val_trials, config.val_features, config.save_path,
                                        config.val_interval)
        # inputs are good: now the run folder (nothing is written before this point)
        claims.enter_context(claim_run_folder(run_folder(config), config.use_checkpoint,
                                              getattr(args, "overwrite", False)))
        check_room_for_checkpoints(run_folder(config), config.model, dict(
            num_classes=corpus.n_speakers, backbone=config.backbone, channels=config.channels))
    return run


def report_unused_speakers(corpus, episode: EpisodeConfig) -> None:
    """Speakers with fewer than n_shot + n_query utterances never enter an episode: say which."""
    short = [name for name, utts in zip(corpus.speakers, corpus.by_speaker)
             if len(utts) < episode.samples_per_class]
    if short:
        listed = ", ".join(short[:5]) + (", ..." if len(short) > 5 else "")
        print(f"warning: {len(short)} of {corpus.n_speakers} speakers have fewer than "
              f"{episode.samples_per_class} utterances (n_shot + n_query) and are left out of the "
              f"episodes (they still count as classes): {listed}", file=sys.stderr)


def training_device(config: TrainConfig, ctx: DistContext) -> torch.device:
    if not config.use_cuda:
        return torch.device("cpu")
    index = ctx.local_rank if ctx.enabled else config.gpu
    torch.cuda.set_device(index)
    torch.backends.cudnn.benchmark = config.cudnn_benchmark
    return torch.device(f"cuda:{index}")


def build_parts(run: TrainingRun, device: torch.device) -> TrainingParts:
    """Encoder, step, optimiser and scheduler (restored from the checkpoint when resuming), loader."""
    config, ctx = run.config, run.ctx
    encoder = build_encoder(config, run.corpus.n_speakers, device, ctx)
    optimizer = build_optimizer(encoder, config.lr, config.sgd_impl)
    scheduler = build_scheduler(optimizer)
    start_epoch = 1
    if run.checkpoint:
        start_epoch = resume(run.checkpoint, run.checkpoint_path, encoder, optimizer, scheduler)
        set_sgd_kernels(optimizer, config.sgd_impl)
    if config.compile:
        compile_encoder(encoder, config.compile)
    step = build_step(encoder, config, ctx, device)
    loader, sampler = build_loader(run.corpus, config, run.n_episodes, ctx, device)
    return TrainingParts(encoder, step, optimizer, scheduler, loader, sampler, device, start_epoch,
                         fast_train_step(step, optimizer, config, device))


def describe_run(run: TrainingRun, start_epoch: int, device) -> str:
    config = run.config
    if start_epoch > config.max_epoch:
        return f"nothing to train: the checkpoint is at epoch {start_epoch - 1} and --max_epoch is {config.max_epoch}"
    return (f"training {config.objective_name} on {len(run.corpus)} utterances of {run.corpus.n_speakers} "
            f"speakers, {run.n_episodes} episodes/epoch, epochs {start_epoch}..{config.max_epoch}, "
            f"{run.ctx.world_size} process(es) on {device}{process_group_note()}")


def train(args) -> Path:
    """Train as the flags say; returns the folder holding checkpoints and logs."""
    with contextlib.ExitStack() as claims:
        run = prepare(args, claims)
        config, ctx = run.config, run.ctx
        device = training_device(config, ctx)
        if config.amp and device.type != "cuda":
            print("warning: --amp needs a GPU; training in float32", file=sys.stderr)
            config.amp = False
        init_process_group(ctx, device)
        try:
            if ctx.enabled:  # the digest hashes every path (~0.1 s for VoxCeleb2): only when ranks compare
                check_same_corpus(run.corpus.digest(), ctx)
            parts = build_parts(run, device)
            outputs = RunOutputs(config, parts.start_epoch) if ctx.is_main else None
            if outputs:
                claims.callback(outputs.close)
                print(describe_model(parts.encoder), flush=True)
                print(describe_run(run, parts.start_epoch, device), flush=True)
            best = best_so_far(outputs.folder, parts.start_epoch) if run.validation else None
            try:
                train_epochs(parts, config, run.n_episodes, parts.start_epoch, ctx, outputs, run.validation, best)
            finally:
                stop_workers(parts.loader)
            return run_folder(config)
        finally:
            destroy_process_group()
