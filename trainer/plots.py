"""PNG outputs of a run: the validation curve and a grid of generated samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def sample_grid(images: np.ndarray, path: str | Path, cols: int = 8, scale: int = 3) -> None:
    """uint8 [N,H,W(,C)] -> one PNG, ``cols`` per row, nearest-neighbour upscaled."""
    n = len(images)
    rows = max(1, -(-n // cols))
    h, w = images.shape[1:3]
    chans = images.shape[3:] if images.ndim == 4 else ()
    grid = np.zeros((rows * (h + 2), cols * (w + 2), *chans), dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + 2) + 1: r * (h + 2) + 1 + h, c * (w + 2) + 1: c * (w + 2) + 1 + w] = im
    img = Image.fromarray(grid)
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def accuracy_curve(history: list[dict], path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [m["train/samples"] for m in history]
    ys = [100 * m["val/acc"] for m in history]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(xs, ys, marker="o")
    ax.set_xlabel("generated samples seen")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
