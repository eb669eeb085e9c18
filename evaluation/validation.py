"""Validation while training (``--val_trials LIST --val_interval N``; not in the paper).

Every N epochs (and after the last one) rank 0 embeds the full utterances of a verification trial
list (``label enroll test``, the VoxCeleb1-O format) with the current encoder, scores the trials by
cosine as EER_full.py does, and adds ``val_eer`` (%) and ``val_mindcf`` (p_target 0.01) to the epoch's
row of ``train_log.csv``. The epoch with the lowest validation EER so far is kept as ``best.pth``: a
training checkpoint plus ``validation = {epoch, val_eer, val_mindcf}``, written atomically like every
checkpoint. Validation draws no random numbers and leaves the encoder's weights and BatchNorm
statistics untouched, so resumed runs stay exact; the best so far is read back from ``best.pth``.
"""
from pathlib import Path

import torch

from common.errors import UserInputError
from evaluation.full_utterance import cosine_trial_scores, embed_trial_utterances
from evaluation.metrics import compute_eer, compute_min_dcf
from evaluation.trials import locate_features, read_trials, voxceleb1_feature_roots

VAL_LOG_FIELDS = ("val_eer", "val_mindcf")
VAL_P_TARGET = 0.01
DEFAULT_VAL_INTERVAL = 1       # --val_interval: validate every epoch
BEST_NAME = "best.pth"


class Validation:
    """A trial list with its features located (bad input fails here, before training starts)."""

    def __init__(self, trials_path, feature_roots, interval: int, batch_size: int = 16):
        if interval < 1:
            raise UserInputError(f"--val_interval must be at least 1, got {interval}")
        self.trials = read_trials(trials_path)   # target and non-target trials (trials.check_both_kinds)
        self.located = locate_features(self.trials.utterances(), feature_roots)
        self.interval, self.batch_size = interval, batch_size

    def due(self, epoch: int, last_epoch: int) -> bool:
        return epoch % self.interval == 0 or epoch == last_epoch

    @torch.no_grad()
    def __call__(self, encoder, device) -> dict:
        """Validation EER (%) and minDCF of ``encoder``, formatted for the log; its mode is restored."""
        was_training = encoder.training
        try:
            names, embeddings = embed_trial_utterances(encoder, self.trials, self.located, device,
                                                       self.batch_size)
        finally:
            encoder.train(was_training)
        scores = cosine_trial_scores(self.trials, names, embeddings)
        eer, _ = compute_eer(self.trials.labels, scores)
        mindcf = compute_min_dcf(self.trials.labels, scores, VAL_P_TARGET)
        return {"val_eer": f"{eer:.4f}", "val_mindcf": f"{mindcf:.4f}"}


def validation_for(val_trials, val_features, save_path, interval: int = DEFAULT_VAL_INTERVAL):
    """The run's Validation, or None without ``val_trials``. Features: the ``val_features`` folders,
    or the VoxCeleb1 test/dev features under ``save_path`` as EER_full.py uses them."""
    if not val_trials:
        return None
    roots = [Path(root) for root in val_features] if val_features else voxceleb1_feature_roots(save_path)
    missing = [str(root) for root in roots if not root.is_dir()]
    if missing:
        raise UserInputError(f"--val_features: no such folder: {', '.join(missing)}")
    return Validation(val_trials, roots, 1 if interval is None else interval)


def best_so_far(folder, before_epoch: int):
    """(val_eer, epoch) recorded in ``folder/best.pth`` for an epoch before ``before_epoch``, else None
    (a fresh run, or a best from epochs this run is about to train again)."""
    path = Path(folder) / BEST_NAME
    if not path.is_file():
        return None
    from model.checkpoint import load_checkpoint
    record = load_checkpoint(path).get("validation")
    if not record or record["epoch"] >= before_epoch:
        return None
    return float(record["val_eer"]), int(record["epoch"])


def is_new_best(row: dict, best) -> bool:
    return row.get("val_eer", "") != "" and (best is None or float(row["val_eer"]) < best[0])
