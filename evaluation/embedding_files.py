"""Embeddings on disk in three layouts, written atomically and read back by key.

- ``npy``: one ``<key>.npy`` (256 float32) per recording under a folder, plus ``index.tsv``
  (embedding, source, duration_s) and ``model.json`` (the checkpoint and its digest: a rerun with
  another model is refused, never mixed in); what ``embed.py`` always writes, so it can resume.
- ``matrix``: ``embeddings.npy`` (n, 256) float32 and ``keys.txt`` (row i's key on line i).
- ``ark``: Kaldi ``embeddings.ark`` + ``embeddings.scp`` (float32 vectors) through ``kaldiio``, as
  Kaldi, WeSpeaker and ESPnet read and write them; the scp names the ark by its absolute path, so it
  resolves from any working directory.

A key is the recording's relative path without its suffix (``spk1/a.wav`` -> ``spk1/a``).
"""
import json
import os
from pathlib import Path, PurePosixPath

import numpy as np

from common.errors import UserInputError
from common.files import atomic_path, save_npy, write_text

OUT_FORMATS = ("npy", "matrix", "ark")
INDEX_NAME = "index.tsv"
MATRIX_NAME, KEYS_NAME = "embeddings.npy", "keys.txt"
ARK_NAME, SCP_NAME = "embeddings.ark", "embeddings.scp"
MODEL_NAME = "model.json"
FOLDER_NAMES = (INDEX_NAME, MATRIX_NAME, KEYS_NAME, ARK_NAME, SCP_NAME, MODEL_NAME)   # no recording's .npy may take these


def key_of(name) -> str:
    """``spk1/a.wav`` or ``spk1/a.npy`` -> ``spk1/a``."""
    return PurePosixPath(str(name)).with_suffix("").as_posix()


def write_matrix(out_dir: Path, keys: list, embeddings: np.ndarray) -> list:
    save_npy(out_dir / MATRIX_NAME, np.asarray(embeddings, np.float32))
    write_text(out_dir / KEYS_NAME, "".join(f"{key}\n" for key in keys))
    return [out_dir / MATRIX_NAME, out_dir / KEYS_NAME]


def write_ark(out_dir: Path, keys: list, embeddings: np.ndarray) -> list:
    """Kaldi ark + scp; the scp names the final ark path (both are renamed into place at the end)."""
    import kaldiio
    spaced = [key for key in keys if any(c.isspace() for c in key)]
    if spaced:
        raise UserInputError(f"Kaldi keys cannot contain spaces: {spaced[0]!r} (rename the file or use "
                             f"--out_format npy/matrix)")
    ark, scp = out_dir.resolve() / ARK_NAME, out_dir / SCP_NAME
    with atomic_path(ark) as tmp_ark, atomic_path(scp) as tmp_scp:
        kaldiio.save_ark(str(tmp_ark), {key: np.asarray(e, np.float32) for key, e in zip(keys, embeddings)},
                         scp=str(tmp_scp))
        lines = []
        for line in tmp_scp.read_text().splitlines():
            key, location = line.split(" ", 1)
            lines.append(f"{key} {ark}:{location.rsplit(':', 1)[1]}\n")
        tmp_scp.write_text("".join(lines))
    return [ark, scp]


def write_collection(out_dir, keys: list, embeddings: np.ndarray, out_format: str) -> list:
    """Write the combined ``matrix`` or ``ark`` files (nothing more for ``npy``); returns the paths."""
    if out_format == "matrix":
        return write_matrix(Path(out_dir), keys, embeddings)
    if out_format == "ark":
        return write_ark(Path(out_dir), keys, embeddings)
    return []


def read_model_record(out_dir) -> dict:
    """``model.json`` of an embedding folder ({"checkpoint": path, "checkpoint_digest": hex}); {} if none."""
    path = Path(out_dir) / MODEL_NAME
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserInputError(f"{path}: unreadable ({error}); remove it or embed into another --out") from None
    if not isinstance(record, dict) or not isinstance(record.get("checkpoint_digest"), str):
        raise UserInputError(f"{path}: not the model record embed.py writes; remove it or embed into another --out")
    return record


def write_model_record(out_dir, checkpoint, digest: str) -> None:
    write_text(Path(out_dir) / MODEL_NAME, json.dumps({"checkpoint": str(checkpoint), "checkpoint_digest": digest},
                                                      indent=1) + "\n")


def read_index(out_dir: Path) -> dict:
    """{embedding relative path: (source, duration_s)} of an existing ``index.tsv`` (empty if none)."""
    path = Path(out_dir) / INDEX_NAME
    if not path.is_file():
        return {}
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return {row[0]: (row[1], float(row[2])) for row in rows if len(row) == 3}


# ---------------------------------------------------------------- reading any layout back by key
def load_embeddings(location) -> dict:
    """{key: (256,) float32} from an embedding folder (index.tsv + .npy), a matrix (.npy with
    keys.txt beside it), or a Kaldi .scp / .ark; a clear error for anything else."""
    location = Path(location)
    try:
        if location.is_dir():
            return load_npy_folder(location)
        if not location.is_file():
            raise UserInputError(f"{location}: no such embedding file or folder")
        if location.suffix in (".scp", ".ark"):
            import kaldiio
            table = kaldiio.load_scp(str(location)) if location.suffix == ".scp" else kaldiio.load_ark(str(location))
            return {key: check_vector(np.asarray(table[key]), f"{location} ({key})") for key in table}
        if location.suffix == ".npy":
            return load_matrix(location)
    except UserInputError:
        raise
    except Exception as error:   # kaldiio / numpy parse errors on corrupt files
        raise UserInputError(f"{location}: not a readable embedding file ({type(error).__name__}: {error})") from None
    raise UserInputError(f"{location}: embeddings must be a folder written by embed.py, a matrix .npy "
                         f"with {KEYS_NAME}, or a Kaldi .scp/.ark")


def check_vector(vector: np.ndarray, where: str) -> np.ndarray:
    if vector.ndim != 1 or vector.size == 0 or not np.isfinite(vector).all():
        raise UserInputError(f"{where}: expected a finite 1-d embedding, found shape {vector.shape}")
    return vector.astype(np.float32)


def load_npy_folder(folder: Path) -> dict:
    index = read_index(folder)
    if not index:
        raise UserInputError(f"{folder}: no {INDEX_NAME} (write it with embed.py --out {folder})")
    return {key_of(rel): check_vector(np.load(folder / rel, allow_pickle=False), str(folder / rel))
            for rel in index}


def load_matrix(path: Path) -> dict:
    keys_path = path.parent / KEYS_NAME
    if not keys_path.is_file():
        raise UserInputError(f"{path}: a matrix needs its {KEYS_NAME} beside it ({keys_path} not found)")
    matrix = np.load(path, allow_pickle=False)
    keys = [line.strip() for line in keys_path.read_text().splitlines() if line.strip()]
    if matrix.ndim != 2 or len(keys) != len(matrix):
        raise UserInputError(f"{path}: {matrix.shape} matrix but {len(keys)} keys in {keys_path}")
    return {key: check_vector(row, f"{path} ({key})") for key, row in zip(keys, matrix)}


def existing_outputs(out_dir: Path, relatives: list) -> set:
    """Relative ``.npy`` names already written (complete: every write is atomic)."""
    return {rel for rel in relatives if os.path.isfile(Path(out_dir) / rel)}
