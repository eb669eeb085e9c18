"""Bytes a piece of work reads, measured from Linux's per-process I/O counters (/proc/self/io).

- ``rchar``: bytes the process asked ``read``/``pread``/``preadv`` for (page cache hits included);
- ``read_bytes``: bytes the process made the block layer fetch from disk. With each file's cached pages
  dropped first (``fsync`` + ``posix_fadvise(POSIX_FADV_DONTNEED)``, which needs no root for files we
  own), this is the cold-cache cost, kernel read-ahead included.

Only work done in this process is counted (not DataLoader workers). Returns None where the counters
are unavailable (not Linux, or I/O accounting off).
"""
import os
from pathlib import Path

IO_COUNTERS = Path("/proc/self/io")


def io_counter(name: str):
    try:
        lines = IO_COUNTERS.read_text().splitlines()
    except OSError:
        return None
    values = dict(line.split(": ") for line in lines if ": " in line)
    return int(values[name]) if name in values else None


def bytes_read(action, counter: str = "rchar"):
    """``counter`` bytes during ``action()`` (None if unavailable)."""
    before = io_counter(counter)
    action()
    after = io_counter(counter)
    return None if before is None or after is None else after - before


def drop_cached_pages(paths) -> bool:
    """Evict the files' pages from the page cache; False where the platform cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # dirty pages would stay cached
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)
    return True


def cold_bytes_read(paths, action):
    """Disk bytes ``action()`` reads after ``paths`` were evicted from the page cache (None if unknown)."""
    if not drop_cached_pages(paths):
        return None
    return bytes_read(action, "read_bytes")
