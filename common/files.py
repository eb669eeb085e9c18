"""Crash-safe file writing and ``.npy`` headers.

Every file the project writes goes to a temporary name in the same folder and is renamed into place,
so a kill at any instant leaves either the old complete file or the new complete file.
"""
import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from common.disk import failure_reason, write_failure_message
from common.errors import UserInputError


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = current_umask()


@contextlib.contextmanager
def reported_write_errors(path):
    """A write the system refuses (no space, permission, read-only, quota) -> UserInputError naming ``path``."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if failure_reason(error) is None:
            raise
        raise UserInputError(write_failure_message(path, error)) from None


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.
    A refused write becomes one clear UserInputError and leaves ``path`` as it was."""
    path = Path(path)
    with reported_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
        os.close(fd)
        try:
            os.chmod(tmp_name, 0o666 & ~UMASK)  # mkstemp makes 0600; give the file the usual permissions
            yield Path(tmp_name)
            with open(tmp_name, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        finally:
            with contextlib.suppress(OSError):
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
