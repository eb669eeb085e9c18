"""A resumable on-disk cache of full-utterance embeddings, for the large VoxCeleb1-E/H protocols.

The cache is a folder ``<base>/embedding_cache/<key>/`` where ``key`` hashes the checkpoint file's
bytes (``model.checkpoint.checkpoint_digest``) and the feature stores' paths and fingerprints
(``feat_extract.corpus_index.store_fingerprint``): another model, or a store whose speakers changed,
never reuses it. Inside, ``meta.json`` says what it belongs to, and each ``part_*.npz`` holds one
chunk: ``names`` (trial-list names), ``n_frames`` (the feature file's length when embedded: an entry
whose file has another length now is recomputed) and ``embeddings`` (float32). Parts are written
atomically, one per chunk, so an interrupted run keeps every finished chunk and the next run embeds
only the rest.

Utterances are embedded in order of length, as ``embedding.embed_utterances`` batches them, and
every chunk is a whole number of batches, so a resumed run forms exactly the batches an
uninterrupted run forms: the embeddings, and the scores, are identical.
"""
import hashlib
import json
import secrets
import zipfile
from pathlib import Path

import numpy as np

from common.errors import UserInputError
from common.files import atomic_path, write_text
from common.preflight import check_room
from evaluation.embedding import embed_utterances, item_length, progress
from feat_extract.corpus_index import store_fingerprint
from model.checkpoint import checkpoint_digest

VERSION = 1
CACHE_FOLDER = "embedding_cache"
DEFAULT_CHUNK = 2048            # utterances per part (~8 MB with 256-d float32 embeddings)
BYTES_PER_ENTRY = 1200          # embedding + name + length, with room to spare


def cache_identity(checkpoint_path, roots) -> dict:
    """What a cache belongs to: the checkpoint's digest and each feature root's fingerprint."""
    return {"version": VERSION, "checkpoint": str(checkpoint_path),
            "checkpoint_digest": checkpoint_digest(checkpoint_path),
            "feature_roots": {str(Path(root).resolve()): store_fingerprint(root) for root in roots}}


def cache_folder(base, identity: dict) -> Path:
    keyed = {key: value for key, value in identity.items() if key != "checkpoint"}  # the bytes, not the name
    key = hashlib.blake2b(json.dumps(keyed, sort_keys=True).encode(), digest_size=10).hexdigest()
    return Path(base) / CACHE_FOLDER / key


def read_part(path: Path) -> tuple:
    """(names, n_frames, embeddings) of one part; a damaged part is reported, naming the folder."""
    try:
        with np.load(path, allow_pickle=False) as part:
            names, n_frames, embeddings = part["names"], part["n_frames"], part["embeddings"]
        if not (len(names) == len(n_frames) == len(embeddings) and embeddings.ndim == 2):
            raise ValueError("its arrays disagree in length")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise UserInputError(f"{path}: a damaged embedding-cache part ({error}); delete {path.parent} "
                             "to recompute its embeddings") from None
    return names.tolist(), n_frames, embeddings


def read_cache(folder: Path) -> dict:
    """{name: (n_frames, embedding)} of every part in ``folder``; a name in several parts (an entry
    recomputed after its feature file changed) takes the newest part's."""
    cached = {}
    for path in sorted(folder.glob("part_*.npz"), key=lambda part: (part.stat().st_mtime_ns, part.name)):
        names, n_frames, embeddings = read_part(path)
        cached.update(zip(names, zip(n_frames.tolist(), embeddings)))
    return cached


def write_part(folder: Path, names: list, n_frames: np.ndarray, embeddings: np.ndarray) -> None:
    with atomic_path(folder / f"part_{secrets.token_hex(6)}.npz", ".npz") as tmp:
        np.savez(tmp, names=np.array(names, dtype=str), n_frames=np.asarray(n_frames, dtype=np.int64),
                 embeddings=np.asarray(embeddings, dtype=np.float32))


def open_cache(base, identity: dict, n_entries: int) -> Path:
    """The cache folder of ``identity`` under ``base``, created (meta.json) with room checked."""
    folder = cache_folder(base, identity)
    folder.mkdir(parents=True, exist_ok=True)
    check_room(folder, n_entries * BYTES_PER_ENTRY, "the embedding cache")
    if not (folder / "meta.json").is_file():
        write_text(folder / "meta.json", json.dumps(identity, indent=1) + "\n")
    return folder


def cached_embeddings(model, names: list, located: dict, device, batch_size: int, folder: Path,
                      chunk: int = None, desc: str = "embedding utterances") -> np.ndarray:
    """(len(names), D) full-utterance embeddings of ``names`` (feature paths in ``located``): those
    in the cache at ``folder`` read back, the rest embedded ``chunk`` (default ``DEFAULT_CHUNK``) at a
    time (rounded up to whole batches), each chunk saved as a part as soon as it is done. One progress bar for all."""
    lengths = np.array([item_length(located[name]) for name in names], dtype=np.int64)
    cached = read_cache(folder)
    known = {name: entry[1] for name, entry in cached.items()}
    missing = [i for i, name in enumerate(names) if name not in cached or cached[name][0] != lengths[i]]
    for i in missing:
        known.pop(names[i], None)
    order = [missing[i] for i in np.argsort(lengths[missing], kind="stable")] if missing else []
    step = -(-max(1, chunk or DEFAULT_CHUNK) // batch_size) * batch_size
    with progress(len(names), desc) as bar:
        bar.update(len(names) - len(missing))
        for begin in range(0, len(order), step):
            members = order[begin:begin + step]
            chunk_names = [names[i] for i in members]
            embedded = embed_utterances(model, [located[name] for name in chunk_names], device, batch_size,
                                        bar=bar)
            write_part(folder, chunk_names, lengths[members], embedded)
            known.update(zip(chunk_names, embedded))
    return np.stack([known[name] for name in names]) if names else np.zeros((0, 0), np.float32)
