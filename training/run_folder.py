"""A training run's folder ``<model_dir>/baseline_XXX``: never reused by accident, one writer at a time,
room for checkpoints checked before the first epoch.

- A fresh run (no ``--use_checkpoint``) refuses a folder that already holds checkpoints: one
  ``error:`` line names the folder, what is in it and the three ways on (resume, another
  ``--n_folder``, ``--overwrite``). ``--overwrite`` moves the old run's files into a dated
  subfolder ``replaced_<YYYYmmdd-HHMMSS>/``; nothing is deleted. A folder whose run stopped before
  its first checkpoint (a ``config.json``, a log, no checkpoint) is reused the same way, with a note.
- ``train.lock`` in the folder is locked with ``fcntl.flock`` for as long as a run trains there (rank 0
  of a torchrun job). A second run stops, naming the holder. The operating system drops the lock when
  the process ends in any way, so the file a killed run leaves behind never blocks a resume. The file
  is never deleted (deleting a lock file lets two processes lock two different files).
"""
import contextlib
import datetime
import fcntl
import os
import socket
import sys
from pathlib import Path

from common.errors import UserInputError
from common.files import reported_write_errors
from common.preflight import check_room
from model.checkpoint import available_checkpoints
from model.registry import build_model

LOCK_NAME = "train.lock"
REPLACED_PREFIX = "replaced_"
CHECKPOINT_OVERHEAD = 256 * 1024  # zip records, config, RNG states (the Mersenne Twister alone is 5 KB)


def number_ranges(numbers) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    spans, start = [], None
    for i, number in enumerate(numbers):
        if start is None:
            start = number
        if i + 1 == len(numbers) or numbers[i + 1] != number + 1:
            spans.append(f"{start}" if start == number else f"{start}-{number}")
            start = None
    return ", ".join(spans)


def run_contents(folder: Path) -> str:
    """What a used run folder holds, e.g. 'checkpoints 1-3, config from 2026-11-26 03:12'; '' if unused."""
    parts = []
    checkpoints = available_checkpoints(folder)
    if checkpoints:
        parts.append(f"checkpoint{'s' if len(checkpoints) > 1 else ''} {number_ranges(checkpoints)}")
    config = folder / "config.json"
    if config.is_file():
        written = datetime.datetime.fromtimestamp(config.stat().st_mtime)
        parts.append(f"config from {written:%Y-%m-%d %H:%M}")
    return ", ".join(parts)


def refusal(folder: Path, contents: str) -> str:
    checkpoints = available_checkpoints(folder)
    resume = (f"resume with --use_checkpoint True --cp_num {checkpoints[-1]}" if checkpoints
              else "resume is not possible (no checkpoint)")
    return (f"{folder} already holds a training run ({contents}); a fresh run would overwrite it. "
            f"Either {resume}, train into another --n_folder (or --model_dir), or pass --overwrite to "
            f"move the old files into {folder}/{REPLACED_PREFIX}<date>/")


def move_aside(folder: Path) -> Path:
    """Move the old run's files (everything but the lock, hidden files and earlier moved-aside
    folders) into ``replaced_<date>/``; returns that folder."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = folder / f"{REPLACED_PREFIX}{stamp}"
    suffix = 1
    while target.exists():
        suffix += 1
        target = folder / f"{REPLACED_PREFIX}{stamp}-{suffix}"
    old = [path for path in sorted(folder.iterdir()) if path.name != LOCK_NAME and not path.name.startswith(".")
           and not (path.is_dir() and path.name.startswith(REPLACED_PREFIX))]
    with reported_write_errors(target):
        target.mkdir()
        for path in old:
            os.rename(path, target / path.name)  # same file system: each move is atomic
    print(f"note: --overwrite: moved {len(old)} files of the earlier run into {target}", file=sys.stderr)
    return target


def lock_holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    return text or "a process that has not written its name yet"


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Hold ``folder/train.lock`` (exclusive, non-blocking ``flock``) for the ``with`` block."""
    lock_path = folder / LOCK_NAME
    with reported_write_errors(lock_path):
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserInputError(f"{folder} is in use by another training run ({lock_holder(lock_path)}); "
                                 "wait for it to end, or train into another --n_folder") from None
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {started}: {' '.join(sys.argv)}\n"
        with reported_write_errors(lock_path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
        yield lock_path
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def claim_run_folder(folder, resume: bool, overwrite: bool):
    """Lock ``folder`` for this run; a fresh run refuses a used folder unless ``overwrite``."""
    folder = Path(folder)
    if resume and overwrite:
        raise UserInputError("--overwrite starts a fresh run but --use_checkpoint True resumes one; "
                             "give one of them")
    with folder_lock(folder):
        contents = run_contents(folder)
        if contents and not resume:
            if not overwrite and available_checkpoints(folder):
                raise UserInputError(refusal(folder, contents))
            if not overwrite:   # a run that stopped before its first checkpoint: nothing to resume
                print(f"note: {folder} holds a run that stopped before its first checkpoint ({contents}); "
                      "starting afresh there", file=sys.stderr)
            move_aside(folder)
        yield folder


def checkpoint_bytes(encoder) -> int:
    """Size of one training checkpoint of ``encoder``: its state_dict, one SGD momentum buffer per
    trained parameter, and a fixed allowance for everything else."""
    state = sum(t.numel() * t.element_size() for t in encoder.state_dict().values())
    momentum = sum(p.numel() * p.element_size() for p in encoder.parameters() if p.requires_grad)
    return state + momentum + CHECKPOINT_OVERHEAD


def check_room_for_checkpoints(folder, model: str, model_args: dict) -> int:
    """The run folder takes files and has room for two checkpoints of the ``model`` (registry name)
    built from ``model_args`` (on the meta device: no memory, no random numbers drawn); returns one
    checkpoint's estimated size."""
    import torch
    with torch.device("meta"):
        encoder = build_model(model, **model_args)
    size = checkpoint_bytes(encoder)
    check_room(folder, 2 * size, "two checkpoints of this model")
    return size
