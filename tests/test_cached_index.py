"""common/cached_index.py: the one "load if fresh, else lock and rebuild (or wait)" that the corpus
index and the wav index share."""
import threading
import time

import pytest

from common.cached_index import REINDEX_REASON, load_or_build, wait_until_fresh
from common.errors import UserInputError


class Store:
    """A value kept in a file: fresh when the file holds ``wanted``."""

    def __init__(self, folder, wanted="v2", build_seconds=0.0):
        self.path, self.wanted, self.build_seconds, self.builds = folder / "index.txt", wanted, build_seconds, []

    def read_fresh(self):
        if not self.path.exists():
            return None, "missing"
        value = self.path.read_text()
        return (value, None) if value == self.wanted else (None, f"stale ({value})")

    def build(self, reason):
        self.builds.append(reason)
        time.sleep(self.build_seconds)
        self.path.write_text(self.wanted)
        return self.wanted

    def load(self, **flags):
        return load_or_build(self.read_fresh, self.build, self.path.parent, self.path, **flags)


def test_fresh_is_loaded_stale_or_missing_is_rebuilt_with_the_reason(tmp_path):
    store = Store(tmp_path)
    assert store.load() == "v2" and store.builds == ["missing"]
    assert store.load() == "v2" and store.builds == ["missing"]          # fresh: not built again
    store.path.write_text("v1")
    assert store.load() == "v2" and store.builds == ["missing", "stale (v1)"]
    assert store.load(reindex=True) == "v2" and store.builds[-1] == REINDEX_REASON == "--reindex given"


def test_concurrent_builders_build_once_under_the_lock(tmp_path):
    store = Store(tmp_path, build_seconds=0.3)
    results = []
    threads = [threading.Thread(target=lambda: results.append(store.load())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["v2"] * 3 and store.builds == ["missing"]   # the others found it fresh under the lock


def test_a_non_builder_waits_for_the_builder_and_never_builds(tmp_path):
    store = Store(tmp_path)
    writer = threading.Timer(0.2, lambda: store.path.write_text("v2"))
    writer.start()
    started = time.monotonic()
    assert store.load(builder=False, poll_s=0.05) == "v2"
    assert time.monotonic() - started >= 0.15 and store.builds == []
    writer.join()


def test_waiting_too_long_is_a_clear_error(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(UserInputError, match=r"waited 0 s for rank 0 to write .*index.txt"):
        wait_until_fresh(store.read_fresh, store.path, timeout_s=0.1, poll_s=0.02)
