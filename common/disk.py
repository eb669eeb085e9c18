"""Writes the system refuses: a full disk, no permission, a read-only file system, a quota.

``files.atomic_path`` turns such a refusal into one ``error:`` line (``write_failure_message``: the
file, the reason, the free space), exit code 2, and the file is either the old complete one or
absent, never half written. ``common.preflight.check_room`` makes the same check before the work starts.
This module imports nothing of the project's (``common.files`` imports it).
"""
import errno
import shutil
from pathlib import Path

REASONS = {  # errno -> what the user is told
    errno.ENOSPC: "no space left on the file system",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EFBIG: "file too large for this file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a file is in the way where a folder is needed",
    errno.EISDIR: "it is a folder",
}
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def human_bytes(n_bytes: float) -> str:
    if n_bytes < 1024:
        return f"{n_bytes:.0f} bytes"
    for unit in ("KB", "MB", "GB"):
        n_bytes /= 1024
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.1f} {unit}"


def free_bytes(folder) -> int:
    """Bytes an unprivileged writer may still use under ``folder`` (or its nearest existing ancestor)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def refused_os_error(error: BaseException):
    """The OSError with a known errno behind ``error`` (torch's C++ writer wraps a Python file's
    ENOSPC into ``RuntimeError: ... unexpected pos``, keeping it as the context); None if there is none."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in REASONS:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def failure_reason(error: BaseException):
    """The user-facing reason of a write refused by the system; None for any other error."""
    refused = refused_os_error(error)
    return REASONS[refused.errno] if refused is not None else None


def write_failure_message(path, error: BaseException) -> str:
    """One line: which file, why, how much room is left, and that nothing was half written."""
    reason = failure_reason(error)
    refused = refused_os_error(error)
    if refused.errno in SPACE_ERRNOS:
        try:
            reason += f", {human_bytes(free_bytes(Path(path).parent))} free"
        except OSError:
            pass
    return (f"cannot write {path}: {reason} (nothing was left half written); free some space, fix the "
            "permissions or choose another output folder")
