"""``--shard K/N``: a deterministic 1/N of a file list, so N machines (or a SLURM array) share a corpus.

A file belongs to shard ``crc32(its path relative to the corpus root) % N + 1``: the same on every
machine whatever the mount point or the order of listing, independent of which other files exist,
and about N equal parts of a large corpus.
"""
import zlib

from common.errors import UserInputError


def parse_shard(text: str) -> tuple:
    """``"K/N"`` -> (K, N) with 1 <= K <= N; None for None."""
    if text is None:
        return None
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserInputError(f"--shard must look like K/N (e.g. 2/8), got {text!r}") from None
    if not 1 <= k <= n:
        raise UserInputError(f"--shard {text}: K must be between 1 and N")
    return k, n


def shard_of(relative_path: str, n_shards: int) -> int:
    """The shard (1..N) of a file, from its path relative to the corpus root."""
    return zlib.crc32(relative_path.encode("utf-8", "surrogateescape")) % n_shards + 1


def select_shard(items: list, relative_path, shard: tuple) -> list:
    """The ``items`` whose ``relative_path(item)`` falls in ``shard`` (all of them for None)."""
    if shard is None:
        return list(items)
    k, n = shard
    return [item for item in items if shard_of(relative_path(item), n) == k]
