"""Writes docs/samples.png: generated samples of each 2D family above real images of the same classes.

    python benchmarks/readme_grid.py --mnist ../shared/data/mnist_dev.npz --fashion ../shared/data/fashion_dev.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

from otfgen.blender_gen import families  # noqa: E402
from otfgen.trainer.data import load_dataset  # noqa: E402

PER_CLASS = 4


def rows(family: str, data: str, seed: int) -> list[np.ndarray]:
    space, fam = families.default_space(family), families.load(family)
    params, seeds = space.sample(None, seed, 10 * PER_CLASS)
    params["label"] = np.repeat(np.arange(10), PER_CLASS)  # uniform draws, classes in order
    gen, _ = fam.render(params, seeds)
    x, y = load_dataset(data)
    real = np.concatenate([x[np.flatnonzero(y == c)[:PER_CLASS]] for c in range(10)])
    half = 5 * PER_CLASS
    strip = lambda a: np.concatenate(list(a), axis=1)  # noqa: E731
    return [strip(gen[:half]), strip(real[:half]), strip(gen[half:]), strip(real[half:])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", required=True)
    ap.add_argument("--fashion", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "docs" / "samples.png"))
    args = ap.parse_args()
    grid = np.concatenate(rows("mnist2d", args.mnist, args.seed) + rows("fashion2d", args.fashion, args.seed))
    img = Image.fromarray(grid)
    img.resize((img.width * 2, img.height * 2), Image.NEAREST).save(args.out)
    print(f"wrote {args.out} ({img.width * 2}×{img.height * 2})")


if __name__ == "__main__":
    main()
