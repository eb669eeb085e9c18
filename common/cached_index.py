"""A file computed once and reused while it is fresh (``corpus_index.npz``, ``wav_index.npz``): load it
if fresh, else take the folder's lock and rebuild it (unless another process did meanwhile), or, in a
process that must not build it (a torchrun rank other than 0), wait until the builder has written it.

    load_or_build(read_fresh, build, lock_folder, path, reindex=..., builder=...)

``read_fresh()`` returns ``(value, None)`` for a fresh stored value, else ``(None, why not)``;
``build(reason)`` computes the value (and saves it) and returns it.
"""
import contextlib
import fcntl
import os
import time

from common.errors import UserInputError

WAIT_TIMEOUT_S = 3600      # how long a rank waits for rank 0 to write the file
REINDEX_REASON = "--reindex given"


@contextlib.contextmanager
def build_lock(folder):
    """An exclusive ``flock`` on ``folder`` while one process builds what it caches (others wait);
    no lock where the folder cannot be locked."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def load_or_build(read_fresh, build, lock_folder, path, reindex: bool = False, builder: bool = True,
                  timeout_s: float = WAIT_TIMEOUT_S, poll_s: float = 1.0):
    """The fresh stored value, else ``build(reason)`` under ``lock_folder``'s lock (``reindex``: always
    rebuilt); a process that is not the ``builder`` waits for ``path`` to be fresh instead."""
    reason = REINDEX_REASON
    if not reindex:
        value, reason = read_fresh()
        if value is not None:
            return value
    if not builder:
        return wait_until_fresh(read_fresh, path, timeout_s, poll_s)
    with build_lock(lock_folder):
        if not reindex:
            value, reason = read_fresh()   # another process may have built it meanwhile
            if value is not None:
                return value
        return build(reason)


def wait_until_fresh(read_fresh, path, timeout_s: float = WAIT_TIMEOUT_S, poll_s: float = 1.0):
    """Poll ``read_fresh`` until it gives a value; a UserInputError after ``timeout_s`` seconds."""
    started = time.monotonic()
    while True:
        value, _ = read_fresh()
        if value is not None:
            return value
        if time.monotonic() - started > timeout_s:
            raise UserInputError(f"waited {timeout_s:.0f} s for rank 0 to write {path}")
        time.sleep(poll_s)
