"""A run's state across interruptions: random generators, checkpoints written and resumed, compatibility.

A checkpoint holds epoch, state_dict, model/model_args, optimizer, scheduler, config, rng and
sampler; resuming it restores all of them, so a resumed run repeats an uninterrupted one bit for bit
(on CPU). ``--cp_num N`` resumes at epoch N + 1, for the original's checkpoints as for ours.
"""
import copy
import random
import sys

import numpy as np
import torch

from common.errors import UserInputError
from model.checkpoint import encoder_shape, model_fields, save_checkpoint, trained_epochs
from model.registry import DEFAULT_MODEL
from training.config import TrainConfig


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


def save_training_checkpoint(path, epoch: int, encoder, optimizer, scheduler, config: TrainConfig,
                             **extra) -> None:
    state_dict = {key: value.detach().cpu() for key, value in encoder.state_dict().items()}
    save_checkpoint(path, epoch=epoch, state_dict=state_dict, **model_fields(encoder),
                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), config=config.as_dict(),
                    rng=capture_rng_state(), sampler={"seed": config.seed, "epoch": epoch + 1}, **extra)


def check_compatible(checkpoint: dict, path, num_classes: int, config: TrainConfig) -> None:
    """A clear error when a checkpoint does not fit the model this run builds."""
    if "model" in checkpoint:
        shape = dict(checkpoint.get("model_args", {}), model=checkpoint["model"])
    else:
        shape = dict(encoder_shape(checkpoint["state_dict"]), model=DEFAULT_MODEL)
    if shape["model"] != config.model:
        raise UserInputError(f"{path} is a {shape['model']} but this run uses --model {config.model}")
    if shape.get("num_classes") != num_classes:
        raise UserInputError(f"{path} was trained for {shape.get('num_classes')} classes but the training "
                             f"data has {num_classes} speakers")
    if shape.get("channels") != config.channels:
        raise UserInputError(f"{path} has width {shape.get('channels')} (--channels) but this run uses "
                             f"--channels {config.channels}")
    if "backbone" in shape and shape["backbone"] != config.backbone:
        raise UserInputError(f"{path} is a {shape['backbone']} but this run uses --backbone {config.backbone}")


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
