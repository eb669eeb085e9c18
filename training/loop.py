"""The epoch loop: train, step the scheduler, validate, checkpoint and log after every epoch.

After every epoch rank 0 writes (atomically) ``checkpoint_{epoch:03d}.pth``, ``train_log.csv``,
``train_curves.png`` (and ``best.pth`` when validation finds a new best).
"""
import math
import sys
import time

from tqdm import tqdm

from common.errors import UserInputError
from evaluation.validation import is_new_best
from training.config import TrainConfig
from training.distributed import DistContext
from training.outputs import RunOutputs, epoch_log_line, epoch_row
from training.state import save_training_checkpoint
from training.step import train_step


def run_epoch(step, optimizer, loader, device, config: TrainConfig, epoch: int, ctx: DistContext,
              fast_step=None) -> dict:
    """Train one epoch; returns the mean of every loss/accuracy part over its episodes. ``fast_step``
    (training/fast_step.py, with --compile / --cuda_graphs) replaces ``train_step``."""
    step.train()
    sums, n_steps = {}, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", file=sys.stderr, disable=not ctx.is_main, leave=False,
               dynamic_ncols=True)
    for batch in bar:
        parts = fast_step(batch) if fast_step else train_step(step, optimizer, batch, device, config.amp)
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value
        n_steps += 1
        if n_steps % 10 == 1 or n_steps == len(loader):
            shown = {"loss": sums["loss"].item() / n_steps}
            for key in ("acc_e", "acc_g"):
                if key in sums:
                    shown[key] = f"{100 * sums[key].item() / n_steps:.1f}%"
            bar.set_postfix(shown)
    bar.close()
    means = {key: value.item() / max(n_steps, 1) for key, value in sums.items()}
    if not math.isfinite(means.get("loss", math.nan)):
        raise UserInputError(f"the training loss is {means.get('loss')} in epoch {epoch}: training "
                             f"diverged; try a lower --lr or resume from an earlier checkpoint")
    return means


def train_epochs(parts, config: TrainConfig, n_episodes: int, start_epoch: int, ctx: DistContext,
                 outputs: RunOutputs = None, validation=None, best=None) -> None:
    """Epochs ``start_epoch..config.max_epoch`` with ``parts`` (a ``TrainingParts``: encoder, step,
    optimizer, scheduler, loader, sampler, device); rank 0 passes its ``outputs``."""
    samples = config.nb_class_train * (config.n_shot + config.n_query) * n_episodes
    for epoch in range(start_epoch, config.max_epoch + 1):
        parts.sampler.set_epoch(epoch)
        started = time.perf_counter()
        means = run_epoch(parts.step, parts.optimizer, parts.loader, parts.device, config, epoch, ctx,
                          parts.fast_step)
        lr = parts.optimizer.param_groups[0]["lr"]
        parts.scheduler.step(means["loss"])
        if outputs is None:
            continue
        row = epoch_row(epoch, means, lr, time.perf_counter() - started, samples)
        if validation and validation.due(epoch, config.max_epoch):
            best = validate(validation, row, best, epoch, parts, config, outputs)
        save_training_checkpoint(outputs.checkpoint(epoch), epoch, parts.encoder, parts.optimizer,
                                 parts.scheduler, config)
        outputs.add_epoch(row)
        print(epoch_log_line(row), flush=True)


def validate(validation, row: dict, best, epoch: int, parts, config: TrainConfig, outputs: RunOutputs):
    """Add val_eer/val_mindcf to ``row``; a new best is saved as best.pth before the epoch's checkpoint
    (killed in between, the epoch is trained and validated again on resume). Returns the best so far."""
    row.update(validation(parts.encoder, parts.device))
    if not is_new_best(row, best):
        return best
    record = {"epoch": epoch, "val_eer": float(row["val_eer"]), "val_mindcf": float(row["val_mindcf"])}
    save_training_checkpoint(outputs.best, epoch, parts.encoder, parts.optimizer, parts.scheduler, config,
                             validation=record)
    return record["val_eer"], epoch
