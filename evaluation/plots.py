"""DET curves (miss vs false-alarm rate on normal-deviate axes) as PNG, with EER and minDCF marked."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import norm  # noqa: E402

from common.files import atomic_path  # noqa: E402
from evaluation.metrics import det_points, eer_point, min_dcf_point, roc  # noqa: E402

FIGSIZE = (6.4, 5.6)   # inches; at DPI this is 640 x 560 pixels
DPI = 100
TICKS_PERCENT = [0.02, 0.1, 0.5, 1, 2, 5, 10, 20, 40, 60, 80, 95, 99]
DCF_P_TARGET = 0.01


def draw_curve(ax, name: str, labels, scores) -> dict:
    """One DET curve with its EER (circle) and minDCF at p_target 0.01 (square); returns the points."""
    x, y = det_points(labels, scores)
    curve = roc(labels, scores)
    eer_index, dcf_index = eer_point(curve), min_dcf_point(curve, DCF_P_TARGET)
    eer = 100.0 * curve.false_alarm[eer_index]
    line, = ax.plot(x, y, label=f"{name} (EER {eer:.2f} %)", linewidth=1.5)
    markers = [ax.plot(x[eer_index], y[eer_index], "o", color=line.get_color(), markersize=7)[0],
               ax.plot(x[dcf_index], y[dcf_index], "s", color=line.get_color(), markersize=7,
                       fillstyle="none", clip_on=False)[0]]
    labels = np.asarray(labels)
    finest = 1.0 / max(int(labels.sum()), int((labels == 0).sum()))
    return {"name": name, "x": x, "y": y, "eer_index": eer_index, "dcf_index": dcf_index,
            "finest_rate": finest, "markers": markers}


def style_axes(ax, points: list) -> None:
    """Normal-deviate axes labelled in percent, from half the finest rate of the data (at least
    0.02 %, above the clipping floor of 0 rates) to 80 %, or further (up to 99.8 %) when a marked
    EER or minDCF point lies beyond 80 % (weak systems often have their minDCF at a miss rate near 1)."""
    finest = min(p["finest_rate"] for p in points)
    marked = [p[axis][p[index]] for p in points for axis in ("x", "y") for index in ("eer_index", "dcf_index")]
    low = norm.ppf(max(finest / 2, 2e-4))
    high = min(max(norm.ppf(0.8), max(marked) + 0.25), norm.ppf(0.998))
    for marker in (m for p in points for m in p["markers"]):  # a 0 % rate is drawn on the axis
        marker.set_data(np.clip(marker.get_xdata(), low, high), np.clip(marker.get_ydata(), low, high))
    ticks = [t for t in TICKS_PERCENT if low <= norm.ppf(t / 100) <= high]
    for set_ticks, set_labels, set_lim in ((ax.set_xticks, ax.set_xticklabels, ax.set_xlim),
                                           (ax.set_yticks, ax.set_yticklabels, ax.set_ylim)):
        set_ticks(norm.ppf(np.array(ticks) / 100))
        set_labels([f"{t:g}" for t in ticks])
        set_lim(low, high)
    ax.plot([low, high], [low, high], ":", color="grey", linewidth=0.8)  # EER diagonal: miss = false alarm
    ax.set_xlabel("false-alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.grid(True, linestyle="--", alpha=0.4)


def plot_det(curves, path, title: str = "DET curve") -> list:
    """Write a PNG with one DET curve per ``(name, labels, scores)``; returns the plotted points
    (normal deviates of the ROC's false-alarm and miss rates) for checking."""
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    points = [draw_curve(ax, name, labels, scores) for name, labels, scores in curves]
    style_axes(ax, points)
    ax.plot([], [], "ko", label="EER")
    ax.plot([], [], "ks", fillstyle="none", label=f"minDCF (p_target {DCF_P_TARGET:g})")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)
    return points
