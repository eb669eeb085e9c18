"""A simulated VoxCeleb2-dev feature store: 1,092,009 tiny float16 ``.npy`` files of 5,994 speakers.

The real layout (``id<5 digits>/<11-character video id>/<5-digit utterance>.npy``), the real counts
(about 182 utterances in about 24 videos per speaker), but 8-24 frames per file instead of ~800, so
the whole store is a few GB. Written once into a folder and reused (a ``.complete`` marker records
the sizes it was written with). Each file is a valid ``.npy`` written with one ``os.write`` of a
pre-computed header plus its rows; row ``r`` of utterance ``u`` holds ``(u + r) % 997`` so a crop
tells which file it came from.
"""
import io
import os
import string
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from common.files import write_text  # noqa: E402
from feat_extract.fbank import N_MELS  # noqa: E402

VOX2_UTTERANCES = 1_092_009
VOX2_SPEAKERS = 5_994
UTTERANCES_PER_VIDEO = 7.5   # VoxCeleb2 dev: 1,092,009 utterances in 145,569 videos
FRAMES = (8, 25)
MARKER = ".complete"


def npy_header(n_frames: int) -> bytes:
    """The exact header ``np.save`` writes for a (n_frames, 40) little-endian float16 array."""
    header = {"descr": "<f2", "fortran_order": False, "shape": (n_frames, N_MELS)}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def speaker_sizes(n_utterances: int, n_speakers: int, seed: int) -> np.ndarray:
    """Utterances per speaker: uneven (as VoxCeleb2), at least 20 each, summing to ``n_utterances``."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 0.5, n_speakers)
    extra = n_utterances - 20 * n_speakers
    sizes = 20 + np.floor(weights / weights.sum() * extra).astype(np.int64)
    sizes[: n_utterances - int(sizes.sum())] += 1
    return sizes


def video_id(rng: np.random.Generator) -> str:
    alphabet = np.array(list(string.ascii_letters + string.digits + "-_"))
    return "".join(rng.choice(alphabet, 11))


def write_speaker(root: Path, speaker: int, n_utterances: int, rng, headers: dict, first: int) -> None:
    n_videos = max(1, int(round(n_utterances / UTTERANCES_PER_VIDEO)))
    videos = [video_id(rng) for _ in range(n_videos)]
    frames = rng.integers(FRAMES[0], FRAMES[1], size=n_utterances)
    owner = rng.integers(0, n_videos, size=n_utterances)
    counters = [0] * n_videos
    for utt in range(n_utterances):
        folder = root / f"id{speaker:05d}" / videos[owner[utt]]
        if counters[owner[utt]] == 0:
            folder.mkdir(parents=True, exist_ok=True)
        counters[owner[utt]] += 1
        value = (first + utt + np.arange(frames[utt])) % 997
        rows = np.repeat(value.astype(np.float16)[:, None], N_MELS, axis=1)
        descriptor = os.open(folder / f"{counters[owner[utt]]:05d}.npy", os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                             0o644)
        try:
            os.write(descriptor, headers[int(frames[utt])] + rows.tobytes())
        finally:
            os.close(descriptor)


def write_vox2_store(root, n_utterances: int = VOX2_UTTERANCES, n_speakers: int = VOX2_SPEAKERS,
                     seed: int = 0) -> Path:
    """Write the store under ``root`` unless a complete one with these sizes is already there."""
    root = Path(root)
    stamp = f"{n_utterances} {n_speakers} {seed}\n"
    marker = root / MARKER
    if marker.is_file() and marker.read_text() == stamp:
        return root
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} holds an incomplete or different store; remove it first")
    headers = {n: npy_header(n) for n in range(*FRAMES)}
    sizes = speaker_sizes(n_utterances, n_speakers, seed)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rng = np.random.default_rng(seed + 1)
    for speaker in tqdm(range(n_speakers), desc="writing the VoxCeleb2-size store", unit="spk"):
        write_speaker(root, speaker, int(sizes[speaker]), rng, headers, int(first[speaker]))
    write_text(marker, stamp)  # last: a store without its marker is an interrupted one
    return root


if __name__ == "__main__":
    write_vox2_store(sys.argv[1], *(int(value) for value in sys.argv[2:]))
