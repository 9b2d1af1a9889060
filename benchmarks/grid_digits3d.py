"""Writes docs/samples_digits3d.png: 8×8 digits3d samples (uniform parameters), rendered on the CPU.

    python benchmarks/grid_digits3d.py [--out docs/samples_digits3d.png] [--seed 0]
"""

import argparse

import numpy as np
from PIL import Image

from otfgen.blender_gen import families

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--out", default="docs/samples_digits3d.png")
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
fam, space = families.load("digits3d"), families.default_space("digits3d")
fam.configure({"device": "cpu", "samples": 16, "rows": 8, "cols": 7})
params, seeds = space.sample(None, args.seed, 64)
images, labels = fam.render(params, seeds)
order = np.argsort(labels, kind="stable")
tiles = np.pad(images[order], ((0, 0), (1, 1), (1, 1)), constant_values=128)
grid = tiles.reshape(8, 8, 30, 30).transpose(0, 2, 1, 3).reshape(240, 240)
Image.fromarray(grid).resize((480, 480), Image.NEAREST).save(args.out)
print(f"wrote {args.out}: labels row by row {labels[order].tolist()}")
