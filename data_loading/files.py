"""Crash-safe file writing and the one exception type that entry scripts turn into a clear message.

Every file the project writes goes to a temporary name in the same folder and is renamed into place,
so a kill at any instant leaves either the old complete file or the new complete file.
"""
import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch


class UserInputError(Exception):
    """Bad input (file, list, option): entry scripts print ``error: <message>`` and exit non-zero."""


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp_name)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def read_npy_header(path):
    """(shape, fortran_order, dtype, data offset) of a ``.npy`` file, read from its header alone.

    Raises OSError/ValueError (and EOFError) for files that are missing or not ``.npy``."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(handle)
        return shape, fortran_order, dtype, handle.tell()


def save_npy(path, array: np.ndarray) -> None:
    with atomic_path(path, ".npy") as tmp:
        np.save(tmp, array)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def torch_save(path, obj) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def torch_load(path, map_location="cpu"):
    """Load a checkpoint without running code from it (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # pickle.UnpicklingError, RuntimeError, EOFError ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserInputError(f"{path}: not a loadable weights-only checkpoint ({first_line})") from None
