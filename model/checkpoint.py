"""Checkpoints: ``saved_model/baseline_{n_folder:03d}/checkpoint_{epoch:03d}.pth``.

A checkpoint is a dict with at least ``{'epoch', 'state_dict', 'optimizer'}`` as the paper's code
writes it (the authors' published file has exactly these); this project adds more keys: ``model`` and
``model_args`` (the registry name and constructor arguments the encoder is rebuilt from), resolved
``config``, scheduler and RNG states. Files are read with ``weights_only=True``; for files without
``model`` (the authors' checkpoint, older files) the encoder's shape (classes, width, depth) is read
from the weights themselves, so any of them loads without options.

Epochs: this project stores ``'epoch': N`` (the epoch just trained) in ``checkpoint_N.pth``; the
original code stores ``'epoch': N + 1`` (the next epoch to run) there. ``trained_epochs`` reads both:
either way ``--cp_num N`` resumes at epoch N + 1 and the API reports N.
"""
import hashlib
import pickle  # only for its exception type: nothing here unpickles
import zipfile
from pathlib import Path

import torch

import configure
from common.errors import UserInputError
from common.files import atomic_path
from model.model import background_resnet
from model.registry import build_model, model_name
from model.resnet import BLOCKS_PER_STAGE


def torch_save(path, obj) -> None:
    """``torch.save`` atomically (temporary file + rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)  # through a Python file: a full disk raises OSError(ENOSPC), not a C++ error


def torch_load(path, map_location="cpu"):
    """Load a checkpoint without running code from it (``weights_only=True``)."""
    path = checked_checkpoint_file(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        if "global" not in message.lower():  # not a refused object: the bytes are not a checkpoint
            reason = message.split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
            raise UserInputError(f"{path}: not a loadable weights-only checkpoint (corrupt or not a "
                                 f"PyTorch file: {reason})") from None
        raise UserInputError(f"{path}: not a loadable weights-only checkpoint (it holds pickled objects "
                             "other than weights, which could run code; refused)") from None
    except Exception as error:  # RuntimeError (not a zip/pickle), EOFError (truncated) ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserInputError(f"{path}: not a loadable weights-only checkpoint ({first_line})") from None


def checked_checkpoint_file(path) -> Path:
    """``path`` when it is a file that may be a checkpoint; otherwise what it is instead, in one line: missing,
    a run folder (its checkpoints listed) or a TorchScript export (export.py's encoder.pt, which torch
    would only load by running its code)."""
    path = Path(path)
    if path.is_dir():
        listed = ", ".join(configure.checkpoint_name(n) for n in available_checkpoints(path)) or "none"
        raise UserInputError(f"checkpoint {path} is a folder, not a checkpoint file; its checkpoints: {listed}")
    if not path.is_file():
        raise UserInputError(f"checkpoint not found: {path}")
    if is_torchscript_archive(path):
        raise UserInputError(f"{path}: a TorchScript export (export.py's encoder.pt), not a training checkpoint; "
                             "give the checkpoint_XXX.pth it was exported from")
    return path


def is_torchscript_archive(path) -> bool:
    """A zip archive with TorchScript's ``constants.pkl`` record (a checkpoint saved by torch.save has none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in archive.namelist())


def encoder_shape(state_dict) -> dict:
    """``num_classes``, ``channels`` and ``backbone`` of a ``background_resnet`` state_dict."""
    missing = [k for k in ("weight", "fc1", "pretrained.conv1.weight") if k not in state_dict]
    if missing:
        raise UserInputError(f"not a background_resnet state_dict: missing {', '.join(missing)}")
    blocks = [len({key.split(".")[2] for key in state_dict if key.startswith(f"pretrained.layer{i}.")})
              for i in range(1, 5)]
    backbone = next((name for name, layout in BLOCKS_PER_STAGE.items() if layout == blocks), None)
    if backbone is None:
        raise UserInputError(f"unknown ResNet layout {blocks} in state_dict")
    return {"num_classes": int(state_dict["weight"].shape[0]),
            "channels": int(state_dict["pretrained.conv1.weight"].shape[0]),
            "backbone": backbone}


def model_from_state_dict(state_dict) -> background_resnet:
    model = background_resnet(**encoder_shape(state_dict))
    model.load_state_dict(state_dict, strict=True)
    return model


def model_fields(model) -> dict:
    """``{"model": name, "model_args": {...}}``: what a checkpoint records to rebuild ``model``."""
    return {"model": model_name(model), "model_args": dict(model.model_args)}


def model_from_checkpoint(checkpoint: dict):
    """The encoder of a checkpoint dict, weights loaded (strict): rebuilt from ``model``/``model_args``
    where the file records them, otherwise inferred from the state_dict's keys and shapes."""
    if "model" not in checkpoint:
        return model_from_state_dict(checkpoint["state_dict"])
    try:
        model = build_model(checkpoint["model"], **checkpoint.get("model_args", {}))
    except (ValueError, TypeError) as error:
        raise UserInputError(f"cannot rebuild the checkpoint's model: {error}") from None
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model


def is_original_layout(checkpoint: dict) -> bool:
    """Written by the paper's code (or another tool): none of the keys this project adds."""
    return not ({"config", "model"} & checkpoint.keys())


def trained_epochs(checkpoint: dict, path=None):
    """Epochs the weights were trained for (see the module docstring); from the file name
    ``checkpoint_N.pth`` when the dict has no ``epoch``; None when unknown."""
    if "epoch" in checkpoint:
        epoch = int(checkpoint["epoch"])
        return epoch - 1 if is_original_layout(checkpoint) else epoch
    return configure.checkpoint_number(path) if path is not None else None


def load_checkpoint(path) -> dict:
    """A checkpoint dict with ``state_dict``; a bare state_dict file is wrapped as ``{'state_dict': ...}``."""
    checkpoint = torch_load(path)
    if not isinstance(checkpoint, dict):
        raise UserInputError(f"{path}: expected a dict checkpoint, found {type(checkpoint).__name__}")
    if "state_dict" not in checkpoint:
        checkpoint = {"state_dict": checkpoint}
    return checkpoint


def load_encoder(path, device="cpu"):
    """(model in eval mode on ``device``, checkpoint dict) from a checkpoint file."""
    checkpoint = load_checkpoint(path)
    model = model_from_checkpoint(checkpoint).to(device).eval()
    return model, checkpoint


def checkpoint_digest(path) -> str:
    """blake2b (128-bit, hex) of the checkpoint file's bytes: names the model a cached or saved
    embedding came from (two files with the same weights but other bytes get different digests)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def available_checkpoints(folder) -> list:
    """The epochs of the ``checkpoint_N.pth`` files in ``folder`` (names: configure.py), sorted."""
    numbers = [configure.checkpoint_number(path) for path in Path(folder).glob(configure.CHECKPOINT_GLOB)]
    return sorted(number for number in numbers if number is not None)


def resolve_checkpoint(n_folder: int, cp_num: int, checkpoint=None, model_dir=None) -> Path:
    """The file for ``--checkpoint`` or ``--n_folder/--cp_num`` in ``--model_dir`` (default
    saved_model/); a clear error listing the checkpoints that exist."""
    if checkpoint:
        return Path(checkpoint)
    path = configure.checkpoint_path(n_folder, cp_num, model_dir)
    if not path.is_file():
        existing = available_checkpoints(path.parent)
        listed = ", ".join(map(str, existing)) if existing else "none"
        raise UserInputError(f"no checkpoint {path} (--cp_num {cp_num}); checkpoints in "
                             f"{path.parent}: {listed}")
    return path


def save_checkpoint(path, **fields) -> None:
    """Write a checkpoint atomically (temporary file + rename)."""
    torch_save(path, fields)
