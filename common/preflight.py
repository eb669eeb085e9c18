"""Before the work: the output folder can be written and has room for what will go into it.

A full disk found after an epoch of training (or an hour of extraction) wastes that hour; these
checks run first and stop with one ``error:`` line (exit code 2) naming the folder.
"""
import os
import tempfile
from pathlib import Path

from common.disk import free_bytes, human_bytes
from common.errors import UserInputError
from common.files import reported_write_errors


def check_writable(folder) -> Path:
    """``folder`` exists (created if needed) and takes a new file (a probe, removed again)."""
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise UserInputError(f"{folder} is a file, not a folder: choose another output folder (nothing was written)")
    with reported_write_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    return folder


def check_creatable(folder) -> Path:
    """``folder`` (a folder, or to be one) can be written, checked without creating it: its nearest
    existing ancestor takes a new file (a probe, removed again); nothing is left behind."""
    folder = check_output_place(folder, "output folder", folder=True)
    existing = next(path for path in [folder.absolute(), *folder.absolute().parents] if path.exists())
    with reported_write_errors(folder):
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    return folder


def check_room(folder, needed_bytes: int, what: str) -> Path:
    """``folder`` is writable and has about ``needed_bytes`` free for ``what``; else UserInputError."""
    check_writable(folder)
    free = free_bytes(folder)
    if free < needed_bytes:
        raise UserInputError(f"{folder}: only {human_bytes(free)} free but {what} need about "
                             f"{human_bytes(needed_bytes)}; free some space or choose another folder "
                             "(nothing was written)")
    return Path(folder)


def check_output_place(path, what: str, folder: bool = False) -> Path:
    """Before any work and without writing: ``path`` can become a file (or, with ``folder``, a folder):
    it is not a folder (a file), and no part of the path above it is a file."""
    path = Path(path)
    if os.path.lexists(path) and path.is_dir() != folder:
        kind = "a file" if folder else "a folder"
        raise UserInputError(f"{what} {path} is {kind}, not {'a folder' if folder else 'a file'}; choose another "
                             "(nothing was written)")
    for parent in path.absolute().parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise UserInputError(f"{what} {path}: {parent} is a file, not a folder (nothing was written)")
            break
    return path


def check_replaceable(folder, names, what: str, overwrite: bool) -> list:
    """Before any work and without writing: ``folder`` can be an output folder, and the outputs
    ``names`` it already holds (an earlier run's) are replaced only with ``overwrite``; those found."""
    folder = check_output_place(folder, what, folder=True)
    found = [name for name in names if os.path.lexists(folder / name)]
    if found and not overwrite:
        raise UserInputError(f"{what} {folder} already holds {', '.join(found)} of an earlier run; pass --overwrite "
                             "to replace them, or choose another folder (nothing was written)")
    return found
