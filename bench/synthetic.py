"""Synthetic benchmark data written once into a temporary folder.

The same random (frames, 40) features are stored three ways: float32 ``.npy`` and float16 ``.npy``
(our feature store, ``<spk>/<session>/<utt>.npy``) and float64 pickled ``{'feat', 'label'}`` dicts
(the original's store, read only by bench/baseline.py). Lengths are uniform in
[mean/2, 3*mean/2] frames, so they average ``mean_frames`` (800 frames = 8 s).
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench import baseline
from common.files import atomic_path, save_npy
from feat_extract.fbank import N_MELS, SAMPLE_RATE

FRAMES_PER_SECOND = 100


@dataclass
class SyntheticStore:
    float32: Path
    float16: Path
    pickle64: Path
    n_speakers: int
    n_utterances: int
    total_frames: int

    def root(self, dtype: str) -> Path:
        return {"float32": self.float32, "float16": self.float16}[dtype]

    @property
    def audio_seconds(self) -> float:
        return self.total_frames / FRAMES_PER_SECOND


def utterance_name(speaker: int, utterance: int) -> str:
    return f"id{speaker:05d}/session{utterance % 3}/{utterance:05d}"


def write_feature_store(root, n_speakers=200, n_utterances=10, mean_frames=800, seed=0):
    """Write the three stores under ``root``; returns a SyntheticStore."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    store = SyntheticStore(root / "npy_float32", root / "npy_float16", root / "pickle_float64",
                           n_speakers, n_utterances, 0)
    for speaker in tqdm(range(n_speakers), desc="writing synthetic features", unit="spk", leave=False):
        for utterance in range(n_utterances):
            n_frames = int(rng.integers(mean_frames // 2, 3 * mean_frames // 2 + 1))
            features = rng.standard_normal((n_frames, N_MELS))
            name = utterance_name(speaker, utterance)
            save_npy(store.float32 / f"{name}.npy", features.astype(np.float32))
            save_npy(store.float16 / f"{name}.npy", features.astype(np.float16))
            baseline.write_pickle(store.pickle64 / f"{name}.p", features, f"id{speaker:05d}")
            store.total_frames += n_frames
    return store


def tree_bytes(root: Path, pattern: str) -> int:
    return sum(path.stat().st_size for path in Path(root).glob(pattern))


def write_wavs(root, n_files=8, seconds=8.0, seed=0, spread=0.0) -> list:
    """``n_files`` int16 16 kHz mono wavs of noisy tones under ``root/<spk>/<session>/<utt>.wav``,
    each ``seconds`` long, or uniform in ``seconds * [1 - spread, 1 + spread]``."""
    import soundfile as sf
    rng = np.random.default_rng(seed)
    paths = []
    piece = 600 * SAMPLE_RATE          # written 10 min at a time: a 2 h file needs no GBs to write
    for index in range(n_files):
        n_samples = int(seconds * rng.uniform(1 - spread, 1 + spread) * SAMPLE_RATE)
        frequency = rng.uniform(100, 400)
        path = Path(root) / f"id{index:05d}" / "session0" / "00000.wav"
        with atomic_path(path, ".wav") as tmp, sf.SoundFile(str(tmp), "w", SAMPLE_RATE, 1, "PCM_16") as out:
            for start in range(0, n_samples, piece):
                time = np.arange(start, min(start + piece, n_samples)) / SAMPLE_RATE
                signal = 0.3 * np.sin(2 * np.pi * frequency * time) + 0.05 * rng.standard_normal(time.size)
                out.write((signal * 32767).astype(np.int16))
        paths.append(path)
    return paths
