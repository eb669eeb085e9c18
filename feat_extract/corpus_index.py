"""The corpus index: what training and evaluation need to know about every feature file of a store,
kept in one file beside the features, so that start-up never opens a feature file.

``<root>/corpus_index.npz`` holds one row per ``<speaker>/<session>/<utt>.npy`` file, in the order
of a sorted listing (``sorted(root.glob('*/*/*.npy'))``), as fixed-width numpy columns:

    path      S<w>   the file's path relative to the root (UTF-8)
    speaker   int32  row of ``speakers`` (the sorted speaker folder names)
    n_frames  int32  frames stored
    offset    int32  byte offset of the frames (the .npy header length)
    dtype     uint8  row of ``dtypes`` (b'<f4', b'<f2')

plus ``speakers``, ``dtypes``, ``version`` and ``fingerprint``. Why an uncompressed ``.npz``: numpy
reads it without pickle (``allow_pickle=False``) into exactly the arrays the in-memory corpus uses
(about 45 bytes per utterance: 50 MB and ~0.1 s for VoxCeleb2's 1.09 M utterances), it is one file
(so one atomic rename replaces it) and it needs no new dependency. SQLite would return rows as Python
objects that must be converted back into arrays (seconds at this size) and offers queries nobody needs.

The fingerprint is a hash of every speaker folder's name and modification time: a speaker added or
removed, or a session (video) folder added, removed or renamed in a speaker folder, changes it, and
checking it costs one ``stat`` per speaker (6 k for VoxCeleb2: ~0.1 s) instead of listing 1.09 M files.
Stat-ing the ~150 k session folders as well (to see files added or removed inside an existing session)
was measured at 4 s on the 2-core VM, too slow for every start-up, so such a hand edit is not noticed:
``--reindex`` rebuilds the index on demand. Our own tools never need it: feature extraction rewrites
the index after every run, and a file that vanished is named in a clear error when a crop reads it.
"""
import contextlib
import hashlib
import multiprocessing
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.cached_index import build_lock, load_or_build
from common.errors import UserInputError
from common.files import atomic_path
from feat_extract.fbank import N_MELS
from feat_extract.features import feature_layout

INDEX_NAME = "corpus_index.npz"
SHARD_GLOB = "corpus_index.shard-*-of-*.npz"
VERSION = 1
CHUNK = 2048               # header reads per task of the parallel build
SERIAL_BELOW = 4096        # smaller stores are indexed in this process
NOTE_FROM = 4096           # stores this big get a note when (re)indexed; small ones are indexed quietly
COLUMNS = {"path": "S", "speaker": "i", "n_frames": "i", "offset": "i", "dtype": "u"}


@dataclass
class CorpusIndex:
    path: np.ndarray
    speaker: np.ndarray
    n_frames: np.ndarray
    offset: np.ndarray
    dtype: np.ndarray
    speakers: np.ndarray
    dtypes: np.ndarray
    fingerprint: str = ""

    def __len__(self) -> int:
        return len(self.path)

    def arrays(self) -> dict:
        return {"version": np.int64(VERSION), "fingerprint": np.bytes_(self.fingerprint),
                **{name: getattr(self, name) for name in (*COLUMNS, "speakers", "dtypes")}}

    def entries(self) -> dict:
        """relative path -> (n_frames, offset, dtype string), for reusing rows in a rebuild."""
        dtypes = [d.decode() for d in self.dtypes]
        return {os.fsdecode(p): (int(f), int(o), dtypes[c])
                for p, f, o, c in zip(self.path, self.n_frames, self.offset, self.dtype)}


def empty_index() -> CorpusIndex:
    return table_index([], [], [], [], "")


def table_index(relpaths: list, n_frames, offsets, dtypes: list, fingerprint: str) -> CorpusIndex:
    """A CorpusIndex from rows in listing order (relative paths ``speaker/session/utt.npy``)."""
    speaker_names = [rel.split("/", 1)[0] for rel in relpaths]
    speakers = sorted(set(speaker_names))
    label = {name: code for code, name in enumerate(speakers)}
    dtype_table = sorted(set(dtypes))
    dtype_code = {name: code for code, name in enumerate(dtype_table)}
    return CorpusIndex(
        path=np.array([os.fsencode(rel) for rel in relpaths], dtype=bytes),
        speaker=np.array([label[name] for name in speaker_names], dtype=np.int32),
        n_frames=np.asarray(n_frames, dtype=np.int32), offset=np.asarray(offsets, dtype=np.int32),
        dtype=np.array([dtype_code[name] for name in dtypes], dtype=np.uint8),
        speakers=np.array([os.fsencode(name) for name in speakers], dtype=bytes),
        dtypes=np.array([name.encode() for name in dtype_table], dtype=bytes), fingerprint=fingerprint)


# ---------------------------------------------------------------- listing and fingerprint
def sorted_folders(folder, with_mtime: bool = False) -> list:
    """Names of the sub-folders of ``folder`` sorted (symlinks followed, as glob does); with
    ``with_mtime`` (name, mtime_ns) pairs."""
    try:
        with os.scandir(folder) as entries:
            if with_mtime:
                return sorted((entry.name, entry.stat().st_mtime_ns) for entry in entries if entry.is_dir())
            return sorted(entry.name for entry in entries if entry.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def scan_store(root, with_files: bool = True) -> tuple:
    """(sorted relative paths of ``*/*/*.npy``, fingerprint). The speaker folders are stat-ed before
    they are listed, so a change during the scan makes the fingerprint stale rather than hiding it."""
    root = str(root)
    speakers = sorted_folders(root, with_mtime=True)
    fingerprint = hashlib.blake2b("".join(f"{name}\t{mtime}\n" for name, mtime in speakers).encode(
        errors="surrogateescape"), digest_size=16).hexdigest()
    relpaths = []
    for speaker, _ in tqdm(speakers if with_files else (), desc=f"listing {Path(root).name}", unit="speaker",
                           disable=len(speakers) < 1000 or not with_files):
        for session in sorted_folders(os.path.join(root, speaker)):
            with os.scandir(os.path.join(root, speaker, session)) as entries:
                names = sorted(entry.name for entry in entries if entry.name.endswith(".npy"))
            prefix = f"{speaker}/{session}/"
            relpaths += [prefix + name for name in names]
    return relpaths, fingerprint


def store_fingerprint(root) -> str:
    return scan_store(root, with_files=False)[1]


# ---------------------------------------------------------------- reading and writing the index file
def write_index(path, index: CorpusIndex) -> None:
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, **index.arrays())


def read_index(path) -> CorpusIndex:
    """The index stored at ``path``; None when there is none; UserInputError when it is corrupt."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise corrupt(path, str(error).strip().splitlines()[0] if str(error).strip() else
                      type(error).__name__) from None
    check_arrays(path, arrays)
    index = CorpusIndex(**{name: arrays[name] for name in (*COLUMNS, "speakers", "dtypes")},
                        fingerprint=arrays["fingerprint"].item().decode(errors="replace"))
    check_paths(path, index.path)
    return index


def corrupt(path, reason: str) -> UserInputError:
    return UserInputError(f"{path}: corrupt corpus index ({reason}); delete it or pass --reindex "
                          "to rebuild it from the feature files")


def check_arrays(path, arrays: dict) -> None:
    kinds = {**COLUMNS, "speakers": "S", "dtypes": "S", "version": "i", "fingerprint": "S"}
    for name, kind in kinds.items():
        if name not in arrays:
            raise corrupt(path, f"no '{name}' column")
        if arrays[name].dtype.kind != kind:
            raise corrupt(path, f"column '{name}' has type {arrays[name].dtype}")
    if arrays["version"].item() != VERSION:
        raise corrupt(path, f"format version {arrays['version'].item()}, this code reads {VERSION}")
    lengths = {len(arrays[name]) if arrays[name].ndim == 1 else -1 for name in COLUMNS}
    if len(lengths) != 1 or -1 in lengths:
        raise corrupt(path, "columns of different lengths")
    if len(arrays["path"]) and (arrays["speaker"].min() < 0 or arrays["speaker"].max() >= len(arrays["speakers"])
                                or arrays["dtype"].max() >= len(arrays["dtypes"])):
        raise corrupt(path, "speaker or dtype numbers out of range")
    if len(arrays["path"]) and (arrays["n_frames"].min() < 1 or arrays["offset"].min() < 10):
        raise corrupt(path, "frame counts or data offsets out of range")
    for name in arrays["dtypes"]:
        try:
            valid = np.dtype(name.decode()).kind == "f"
        except (TypeError, ValueError, UnicodeDecodeError):
            valid = False
        if not valid:
            raise corrupt(path, f"feature type {name!r} is not a float type")


def check_paths(path, paths: np.ndarray) -> None:
    """No path may leave the root: none absolute, none with a '..' folder (a file name with a NUL byte
    is refused when it is opened). Column tests for the first bytes and one regular-expression search
    for '/../' over the column's buffer (no copy): ~10 ms for 1.09 M paths on an idle core."""
    if not len(paths):
        return
    chars = paths.view(np.uint8).reshape(len(paths), -1)
    width = chars.shape[1]
    bad = (chars[:, 0] == ord("/")) | ((chars[:, 0] == ord(".")) & (chars[:, 1 % width] == ord("."))
                                       & (chars[:, 2 % width] == ord("/")))
    row = int(bad.argmax()) if bad.any() else None
    if row is None:
        found = re.search(rb"/\.\./", memoryview(np.ascontiguousarray(chars)).cast("B"))
        row = None if found is None else (found.start() + 1) // width
    if row is not None:
        raise corrupt(path, f"bad relative path {bytes(paths[row])!r}")


# ---------------------------------------------------------------- building
def read_layout_rows(paths: list) -> tuple:
    """Pool task: (n_frames, offsets, dtype strings) of feature files, validated from their headers."""
    layouts = [feature_layout(path) for path in paths]
    return ([layout.n_frames for layout in layouts], [layout.offset for layout in layouts],
            [layout.dtype for layout in layouts])


def read_layouts(paths: list, workers: int, desc: str) -> tuple:
    """``read_layout_rows`` of many files over ``workers`` forked processes, with a progress bar."""
    frames, offsets, dtypes = [], [], []
    chunks = [paths[start:start + CHUNK] for start in range(0, len(paths), CHUNK)]
    serial = workers <= 1 or len(paths) < SERIAL_BELOW or "fork" not in multiprocessing.get_all_start_methods()
    with contextlib.ExitStack() as stack:
        if serial:
            results = map(read_layout_rows, chunks)
        else:
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers))
            results = pool.imap(read_layout_rows, chunks)
        with tqdm(total=len(paths), desc=desc, unit="file", disable=len(paths) < SERIAL_BELOW) as bar:
            for chunk_frames, chunk_offsets, chunk_dtypes in results:
                frames += chunk_frames
                offsets += chunk_offsets
                dtypes += chunk_dtypes
                bar.update(len(chunk_frames))
    return frames, offsets, dtypes


def build_index(root, workers: int = None, known: dict = None, relpaths: list = None,
                fingerprint: str = "") -> CorpusIndex:
    """Index the store at ``root`` (or only ``relpaths`` of it, without a fingerprint). Rows of
    ``known`` (relative path -> (n_frames, offset, dtype)) are reused for files whose size still
    matches them; every other file's header is read, in parallel."""
    root = Path(root)
    if relpaths is None:
        relpaths, fingerprint = scan_store(root)
    rows = [None] * len(relpaths)
    for row, rel in enumerate(relpaths):
        entry = (known or {}).get(rel)
        if entry and stored_size(root / rel) == entry[1] + entry[0] * N_MELS * np.dtype(entry[2]).itemsize:
            rows[row] = entry
    unknown = [row for row, entry in enumerate(rows) if entry is None]
    read = read_layouts([str(root / relpaths[row]) for row in unknown], workers or os.cpu_count() or 1,
                        f"indexing {root.name}")
    for row, entry in zip(unknown, zip(*read)):
        rows[row] = entry
    n_frames, offsets, dtypes = zip(*rows) if rows else ((), (), ())
    return table_index(relpaths, n_frames, offsets, list(dtypes), fingerprint)


def stored_size(path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


# ---------------------------------------------------------------- what the corpus uses
def fresh_index(root) -> tuple:
    """(index, None) when ``root``'s index matches its store, else (None, why not)."""
    index = read_index(Path(root) / INDEX_NAME)
    if index is None:
        return None, "corpus index missing"
    if index.fingerprint != store_fingerprint(root):
        return None, "corpus index out of date (speaker or session folders changed since it was written)"
    return index, None


def load_index(root, reindex: bool = False, workers: int = None, builder: bool = True) -> CorpusIndex:
    """The index of the store at ``root``, built (and saved) when it is missing, stale or ``reindex``.
    A process that is not the ``builder`` (a torchrun rank other than 0) waits for a fresh index."""
    root = Path(root)
    if not root.is_dir():
        return empty_index()
    return load_or_build(lambda: fresh_index(root), lambda reason: rebuild_index(root, reason, workers),
                         root, root / INDEX_NAME, reindex=reindex, builder=builder)


def rebuild_index(root, reason: str, workers: int = None, known: dict = None) -> CorpusIndex:
    """Build the index of ``root`` (reusing rows of shard indexes and ``known``), save it, say so."""
    root = Path(root)
    known = {**(known or {}), **shard_entries(root)}
    workers = workers or os.cpu_count() or 1
    relpaths, fingerprint = scan_store(root)
    if len(relpaths) >= NOTE_FROM:  # (a few thousand files are indexed in a blink: no note before an error)
        reused = f", reusing {len(known)} rows already indexed" if known else ""
        print(f"note: {root}: {reason}: building {INDEX_NAME} from {len(relpaths):,} feature files "
              f"({workers} processes{reused}); later runs start from it", file=sys.stderr, flush=True)
    index = build_index(root, workers, known, relpaths, fingerprint)
    if len(index):
        try:
            write_index(root / INDEX_NAME, index)
        except OSError as error:
            print(f"warning: could not save {root / INDEX_NAME} ({error}); using the index in memory",
                  file=sys.stderr)
            return index
        for shard in root.glob(SHARD_GLOB):
            shard.unlink(missing_ok=True)
    return index


# ---------------------------------------------------------------- shards (extraction across machines)
def shard_index_path(root, shard: tuple) -> Path:
    return Path(root) / f"corpus_index.shard-{shard[0]}-of-{shard[1]}.npz"


def shard_entries(root) -> dict:
    """Rows of every shard index under ``root`` (relative path -> (n_frames, offset, dtype))."""
    known = {}
    for path in sorted(Path(root).glob(SHARD_GLOB)):
        known.update(read_index(path).entries())
    return known


def missing_shards(root) -> list:
    """Names of the shard indexes that the present ones say should exist but do not."""
    present = {path.name for path in Path(root).glob(SHARD_GLOB)}
    totals = {int(name.rsplit("-of-", 1)[1][:-len(".npz")]) for name in present}
    return sorted({shard_index_path(root, (k, n)).name for n in totals for k in range(1, n + 1)} - present)


def merge_shard_indexes(root, workers: int = None) -> CorpusIndex:
    """Join the shard indexes of ``root`` into its index (files no shard indexed are read)."""
    missing = missing_shards(root)
    if missing:
        raise UserInputError(f"{root}: cannot merge the shard indexes: {', '.join(missing)} not written "
                             "yet (that extraction shard has not finished)")
    with build_lock(Path(root)):
        return rebuild_index(root, "merging the shard indexes", workers)


# ---------------------------------------------------------------- feature extraction's side
def indexed_complete_files(root) -> dict:
    """Rows of ``root``'s index and shard indexes whose file still has the size they give: the files a
    rerun of extraction can skip, found with one ``stat`` each instead of opening them. A corrupt
    index is ignored here (extraction rewrites it)."""
    root = Path(root)
    known = {}
    try:
        for path in [root / INDEX_NAME, *sorted(root.glob(SHARD_GLOB))]:
            index = read_index(path)
            known.update(index.entries() if index is not None else {})
    except UserInputError as error:
        print(f"warning: {error}; it will be rewritten", file=sys.stderr)
    return {rel: entry for rel, entry in known.items()
            if stored_size(root / rel) == entry[1] + entry[0] * N_MELS * np.dtype(entry[2]).itemsize}


def index_extraction(root, done: list, known: dict, shard: tuple = None, workers: int = None) -> Path:
    """After extraction: ``root``'s index, reusing the ``known`` rows (files not rewritten by this run).
    A ``shard`` run writes only the rows of its own ``done`` files, to a shard index that the next
    corpus load (or ``--merge_index``) joins."""
    root = Path(root)
    if shard is None:
        rebuild_index(root, "features extracted", workers, known)
        return root / INDEX_NAME
    relpaths = sorted(done, key=lambda rel: rel.split("/"))
    path = shard_index_path(root, shard)
    write_index(path, build_index(root, workers, known, relpaths))
    return path
