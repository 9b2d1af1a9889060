"""Writes docs/samples_shapes3d.png (8 rows of 8 shapes3d samples drawn from the default space) and
prints the render rate: images/s over a few full frames of 63 cells after a warm-up.

    python benchmarks/grid_shapes3d.py [--device cpu] [--samples 4] [--frames 3] [--seed 7]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

from otfgen.blender_gen import families  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--samples", type=int, default=4, help="Cycles samples per pixel")
    ap.add_argument("--frames", type=int, default=3, help="timed frames of 63 images (0: grid only)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "docs" / "samples_shapes3d.png"))
    args = ap.parse_args()
    fam, space = families.load("shapes3d"), families.default_space("shapes3d")
    fam.configure({"device": args.device, "samples": args.samples})
    params, seeds = space.sample(None, args.seed, 64)
    params["label"] = np.arange(64) % fam.NUM_CLASSES  # every class, in order, row-major
    imgs, _ = fam.render(params, seeds)
    grid = imgs.reshape(8, 8, 64, 64, 3).transpose(0, 2, 1, 3, 4).reshape(8 * 64, 8 * 64, 3)
    Image.fromarray(grid).save(args.out)
    print(f"wrote {args.out} (8×8 samples, classes {', '.join(fam.CLASSES)} in row-major order, repeating)")
    if args.frames:
        n = 63
        best = float("inf")
        for k in range(args.frames):
            p, s = space.sample(None, args.seed + 1 + k, n)
            t = time.perf_counter()
            fam.render(p, s)
            best = min(best, time.perf_counter() - t)
        print(f"shapes3d on {fam._scene.device}: {n / best:.1f} images/s (best of {args.frames} frames of {n} "
              f"images at 64×64, {args.samples} samples/px)")


if __name__ == "__main__":
    main()
