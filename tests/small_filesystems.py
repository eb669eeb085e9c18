"""Real small or read-only file systems for the full-disk tests: a tmpfs mounted for the test.

Mounting needs root (or CAP_SYS_ADMIN); where it is not allowed ``tmpfs`` yields None and the tests
fall back to a simulated refusal at the write call (or skip), as their docstrings say.
"""
import contextlib
import shutil
import subprocess
from pathlib import Path


def run_quietly(*command) -> bool:
    if shutil.which(command[0]) is None:
        return False
    return subprocess.run(list(command), capture_output=True, timeout=30).returncode == 0


@contextlib.contextmanager
def tmpfs(folder, size_kb: int, read_only: bool = False):
    """Mount a ``size_kb`` tmpfs on ``folder`` (created) for the block; yields the folder or None."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    if not run_quietly("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)):
        yield None
        return
    try:
        yield folder
    finally:
        if not run_quietly("umount", str(folder)):
            run_quietly("umount", "-l", str(folder))
