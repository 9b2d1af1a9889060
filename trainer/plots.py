"""PNG outputs of a run: validation accuracy (with its standard error), loss and per-class
accuracy curves, and labelled sample grids from the start and the end of the stream."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def si(x: float, _pos=None) -> str:
    """Tick labels that stay short: 950, 25k, 100k, 1.5M."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            v = x / div
            return f"{v:.0f}{suffix}" if v == round(v) else f"{v:.1f}{suffix}"
    return f"{x:.0f}" if x == round(x) else f"{x:g}"


def _samples_axis(ax) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(si))
    ax.set_xlabel("generated samples seen")


def standard_error(acc: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on n images."""
    return math.sqrt(max(acc * (1 - acc), 0.0) / n) if n else float("nan")


def tile(images: np.ndarray, cols: int = 8) -> np.ndarray:
    """uint8 [N,H,W(,C)] -> one array, ``cols`` per row, a 1-pixel black border round each image."""
    n = len(images)
    rows = max(1, -(-n // cols))
    h, w = images.shape[1:3]
    chans = images.shape[3:] if images.ndim == 4 else ()
    grid = np.zeros((rows * (h + 2), cols * (w + 2), *chans), dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + 2) + 1: r * (h + 2) + 1 + h, c * (w + 2) + 1: c * (w + 2) + 1 + w] = im
    return grid


def sample_grid(images: np.ndarray, path: str | Path, cols: int = 8, scale: int = 3) -> None:
    """uint8 [N,H,W(,C)] -> one PNG, ``cols`` per row, nearest-neighbour upscaled."""
    img = Image.fromarray(tile(images, cols))
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def labelled_grids(panels: list[tuple[str, np.ndarray, np.ndarray]], path: str | Path, cols: int = 8,
                   class_names: list[str] | None = None) -> None:
    """Side-by-side grids, each (title, images uint8 [N,H,W(,C)], labels [N]), every image with
    its label in its corner."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), dpi=120, squeeze=False)
    for ax, (title, images, labels) in zip(axes[0], panels):
        grid = tile(images, cols)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        h, w = images.shape[1:3]
        for i, y in enumerate(labels):
            r, c = divmod(i, cols)
            name = class_names[int(y)] if class_names else str(int(y))
            ax.text(c * (w + 2) + 2, r * (h + 2) + 2, name, color="yellow", fontsize=6, va="top", ha="left",
                    bbox={"facecolor": "black", "alpha": 0.6, "pad": 0.5, "linewidth": 0})
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def accuracy_curve(history: list[dict], path: str | Path, title: str = "", measures: str = "") -> None:
    """Validation accuracy against samples seen, with a ±1 standard-error band (from n and the
    accuracy); ``measures`` says under the title what the validation set is."""
    plt = _plt()
    xs = np.array([m["train/samples"] for m in history])
    ys = np.array([100 * m["val/acc"] for m in history])
    se = np.array([100 * standard_error(m["val/acc"], m.get("val/n", 0)) for m in history])
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    ax.plot(xs, ys, marker="o", label="validation accuracy")
    ax.fill_between(xs, ys - se, ys + se, alpha=0.25, label="±1 standard error")
    _samples_axis(ax)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title + (f"\n{measures}" if measures else ""), fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curves(history: list[dict], path: str | Path, title: str = "", class_names: list[str] | None = None) -> None:
    """Two panels: training and validation loss; per-class validation accuracy."""
    plt = _plt()
    xs = [m["train/samples"] for m in history]
    fig, (ax_l, ax_c) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    train = [m.get("train/loss") for m in history]
    if any(v is not None for v in train):
        ax_l.plot(xs, [np.nan if v is None else v for v in train], marker=".", label="training (moving average)")
    ax_l.plot(xs, [m["val/loss"] for m in history], marker="o", label="validation")
    ax_l.set_ylabel("cross-entropy loss")
    ax_l.set_title("loss", fontsize=9)
    ax_l.legend(fontsize=8)
    per = np.array([[np.nan if a is None else 100 * a for a in m["val/acc_class"]] for m in history])
    cmap = plt.get_cmap("tab10" if per.shape[1] <= 10 else "tab20")
    for c in range(per.shape[1]):
        name = class_names[c] if class_names else str(c)
        ax_c.plot(xs, per[:, c], marker=".", color=cmap(c % cmap.N), label=name)
    ax_c.set_ylabel("validation accuracy (%)")
    ax_c.set_title("per-class validation accuracy", fontsize=9)
    ax_c.legend(fontsize=7, title="class", title_fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    for ax in (ax_l, ax_c):
        _samples_axis(ax)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
