"""What a run writes for people to read (rank 0 only): train_log.csv, train_curves.png, config.json,
the per-epoch log line, and optional TensorBoard scalars (``--tensorboard``: ``<run>/tensorboard/``).

Every file is written atomically; a training process killed while writing leaves only a hidden
temporary, removed when the run folder is opened again.
"""
import csv
import io
import json
import math
from pathlib import Path

import configure
from common.files import atomic_path, write_text
from evaluation.validation import BEST_NAME, VAL_LOG_FIELDS
from training.config import TrainConfig

TRAIN_LOG_FIELDS = ("epoch", "loss", "loss_e", "loss_g", "acc_e", "acc_g", "lr", "seconds", "samples_per_s")
OWN_TEMPORARIES = (f".{configure.CHECKPOINT_GLOB}.*.tmp", ".train_log.csv.*.tmp", ".train_curves.png.*.tmp.png",
                   ".config.json.*.tmp", f".{BEST_NAME}.*.tmp")
TENSORBOARD_FOLDER = "tensorboard"
# train_log.csv column -> TensorBoard tag
SCALAR_TAGS = {"loss": "loss/total", "loss_e": "loss/episodic", "loss_g": "loss/global",
               "acc_e": "accuracy/episodic", "acc_g": "accuracy/global", "lr": "lr",
               "samples_per_s": "throughput/samples_per_s", "val_eer": "validation/eer",
               "val_mindcf": "validation/mindcf"}


def run_folder(config: TrainConfig) -> Path:
    """``<model_dir>/baseline_{n_folder:03d}``: where a run's checkpoints and logs go."""
    return configure.run_folder(config.n_folder, config.model_dir)


def read_train_log(path, before_epoch: int) -> list:
    """Rows of an existing ``train_log.csv`` for epochs < ``before_epoch`` (a resumed run rewrites the rest)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [row for row in csv.DictReader(handle) if int(row["epoch"]) < before_epoch]


def write_train_log(path, rows: list) -> None:
    buffer = io.StringIO()
    validated = tuple(key for key in VAL_LOG_FIELDS if any(key in row for row in rows))  # only with --val_trials
    writer = csv.DictWriter(buffer, fieldnames=TRAIN_LOG_FIELDS + validated, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def plot_training_curves(rows: list, path) -> None:
    """Loss, accuracy, learning rate and throughput per epoch, as a PNG (matplotlib Agg)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    def column(name):
        return [float(row[name]) if row.get(name) not in (None, "") else math.nan for row in rows]
    epochs = column("epoch")
    panels = [("loss", ("loss", "loss_e", "loss_g"), ("total", "episodic", "global"), "linear"),
              ("accuracy (%)", ("acc_e", "acc_g"), ("episodic", "global"), "linear"),
              ("learning rate", ("lr",), ("lr",), "log"),
              ("throughput (samples/s)", ("samples_per_s",), ("samples/s",), "linear")]
    if any(row.get("val_eer") for row in rows):  # --val_trials: two more panels
        panels[2:2] = [("validation EER (%)", ("val_eer",), ("EER",), "linear"),
                       ("validation minDCF (0.01)", ("val_mindcf",), ("minDCF",), "linear")]
    figure, axes = plt.subplots(2, len(panels) // 2, figsize=(5 * len(panels) // 2, 7))
    for axis, (title, names, labels, scale) in zip(axes.flat, panels):
        for name, label in zip(names, labels):
            values = column(name)
            if not all(math.isnan(v) for v in values):
                axis.plot(epochs, values, marker="o", label=label)
        axis.set(title=title, xlabel="epoch", yscale=scale)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if len(names) > 1:
            axis.legend()
    figure.tight_layout()
    with atomic_path(path, ".png") as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def epoch_row(epoch: int, means: dict, lr: float, seconds: float, n_samples: int) -> dict:
    """One train_log.csv row: the epoch's mean losses, accuracies (%), lr, time and throughput."""
    row = {"epoch": epoch, "lr": f"{lr:.6g}", "seconds": f"{seconds:.3f}",
           "samples_per_s": f"{n_samples / max(seconds, 1e-9):.2f}"}
    for key in ("loss", "loss_e", "loss_g"):
        row[key] = f"{means[key]:.6f}" if key in means else ""
    for key in ("acc_e", "acc_g"):
        row[key] = f"{100 * means[key]:.3f}" if key in means else ""
    return row


def epoch_log_line(row: dict) -> str:
    losses = " / ".join(f"{name} {row[key]}" for name, key in (("episodic", "loss_e"), ("global", "loss_g"))
                        if row[key])
    accs = " / ".join(f"{name} {row[key]}%" for name, key in (("episodic", "acc_e"), ("global", "acc_g"))
                      if row[key])
    validated = f", val EER {row['val_eer']}%, minDCF {row['val_mindcf']}" if row.get("val_eer") else ""
    return (f"Epoch {row['epoch']}: loss {row['loss']} ({losses}), acc {accs}, lr {row['lr']}, "
            f"{row['seconds']} s, {row['samples_per_s']} samples/s{validated}")


class TensorBoardLog:
    """The train_log.csv rows as TensorBoard scalars (the tensorboard package's event files)."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter  # only with --tensorboard
        self.writer = SummaryWriter(log_dir=str(folder))

    def add_row(self, row: dict) -> None:
        for key, tag in SCALAR_TAGS.items():
            if row.get(key) not in (None, ""):
                self.writer.add_scalar(tag, float(row[key]), int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class RunOutputs:
    """Rank 0's files in ``<model_dir>/baseline_XXX``: checkpoints, config.json, train_log.csv, curves
    (and TensorBoard scalars with ``--tensorboard``)."""

    def __init__(self, config: TrainConfig, start_epoch: int):
        self.folder = run_folder(config)
        self.folder.mkdir(parents=True, exist_ok=True)
        for pattern in OWN_TEMPORARIES:  # left by a training process killed while writing
            for stale in self.folder.glob(pattern):
                stale.unlink(missing_ok=True)
        self.rows = read_train_log(self.folder / "train_log.csv", start_epoch)
        write_text(self.folder / "config.json", json.dumps(config.as_dict(), indent=2) + "\n")
        self.tensorboard = TensorBoardLog(self.folder / TENSORBOARD_FOLDER) if config.tensorboard else None

    def checkpoint(self, epoch: int) -> Path:
        return self.folder / configure.checkpoint_name(epoch)

    @property
    def best(self) -> Path:
        return self.folder / BEST_NAME

    def add_epoch(self, row: dict) -> None:
        self.rows.append(row)
        write_train_log(self.folder / "train_log.csv", self.rows)
        plot_training_curves(self.rows, self.folder / "train_curves.png")
        if self.tensorboard:
            self.tensorboard.add_row(row)

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()
