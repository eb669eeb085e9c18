"""Faithful re-implementations of the ORIGINAL code's strategies, used only as benchmark baselines.

- features stored as pickled float64 ``{'feat': (frames, 40), 'label': speaker}`` dicts, one per
  utterance, loaded whole in the training loop's own thread, then cropped and stacked;
- EER_short re-embeds both sides of every trial from scratch, one crop at a time.

SECURITY NOTE: pickle is used here and ONLY here, and only on files that bench/synthetic.py wrote
moments earlier into the benchmark's own temporary folder. Never point this module at other files;
the project itself stores features as ``.npy`` and reads checkpoints with ``weights_only=True``.
"""
import pickle  # noqa: S403 - benchmark baseline only, on files this benchmark just wrote (see above)
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.files import atomic_path


def write_pickle(path, features: np.ndarray, label: str) -> None:
    with atomic_path(path, ".p") as tmp, open(tmp, "wb") as handle:
        pickle.dump({"feat": np.asarray(features, dtype=np.float64), "label": label}, handle)


def read_pickle(path) -> dict:
    """The original's reader: the whole utterance, every time (benchmark-written files only)."""
    with open(path, "rb") as handle:
        return pickle.load(handle)  # noqa: S301 - see the module docstring


def pickle_path(store, npy_path: Path) -> Path:
    """The pickled twin of one of the benchmark's own ``.npy`` files."""
    relative = Path(npy_path).relative_to(store.float32).with_suffix(".p")
    return store.pickle64 / relative


def crop_whole(features: np.ndarray, start: int, length: int) -> np.ndarray:
    if len(features) >= start + length:
        return features[start:start + length].astype(np.float32)
    repeats = -(-length // len(features))
    return np.tile(features.astype(np.float32), (repeats, 1))[:length]


def crops_from_pickles(paths, starts, length: int) -> torch.Tensor:
    """(n, 1, 40, length) mean-subtracted crops, each from a whole-file pickle load."""
    crops = np.stack([crop_whole(read_pickle(path)["feat"], start, length)
                      for path, start in zip(paths, starts)])
    frames_last = np.ascontiguousarray(crops.transpose(0, 2, 1))  # (n, 40, length), as the encoder wants
    frames_last -= frames_last.mean(axis=2, keepdims=True)  # same summation order as ours: equal bits
    return torch.from_numpy(frames_last[:, None])


def episode_from_pickles(pickle_paths, plan) -> dict:
    """The episode ``plan`` describes, assembled the original's way (main thread, whole files)."""
    n_support = plan.n_support
    paths = [pickle_paths[utt] for utt in plan.utterances]
    support = crops_from_pickles(paths[:n_support], plan.starts[:n_support], plan.support_frames)
    query = crops_from_pickles(paths[n_support:], plan.starts[n_support:], plan.query_frames)
    return {"support": support, "query": query, "label_g": torch.from_numpy(plan.label_g)}


def whole_utterance(path) -> torch.Tensor:
    features = read_pickle(path)["feat"].astype(np.float32)
    features -= features.mean(axis=0, keepdims=True)
    return torch.from_numpy(np.ascontiguousarray(features.T[None, None]))


def doubled_crop(path, start: int, length: int) -> torch.Tensor:
    """The original's short test crop: the utterance doubled until longer than the crop, then cut."""
    features = read_pickle(path)["feat"].astype(np.float32)
    crop = features[(start + np.arange(length)) % len(features)]
    crop -= crop.mean(axis=0, keepdims=True)
    return torch.from_numpy(np.ascontiguousarray(crop.T[None, None]))


@torch.no_grad()
def score_trials_per_trial(model, pickle_paths, trials, device) -> np.ndarray:
    """Original EER_short: for every trial, load and embed the full enrolment utterance and the
    short test crop from scratch, one at a time; cosine score."""
    from tqdm import tqdm
    model.eval()
    scores = np.empty(len(trials.label), dtype=np.float32)
    for index in tqdm(range(len(scores)), desc="baseline EER_short", unit="trial", leave=False):
        enroll = model(whole_utterance(pickle_paths[trials.enroll[index]]).to(device))
        test = model(doubled_crop(pickle_paths[trials.test[index]], int(trials.start[index]),
                                  trials.length).to(device))
        scores[index] = F.cosine_similarity(enroll, test).item()
    return scores
