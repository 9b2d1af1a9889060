"""stripes2d: horizontal (0) or vertical (1) stripes — an example scene family from outside otfgen.

The contract of every family (blender_gen/families/__init__.py): NAME, IMAGE_SHAPE, NUM_CLASSES,
LABEL_PARAM, SPACE (each parameter's kind, limits, default and doc) and a pure render(params,
seeds); a family from an entry point may also declare its scene config as SCENE (what
configs/scene/<name>.yaml holds for a built-in family: render options, val_data, narrowed ranges).
"""
import numpy as np

from otfgen.blender_gen import rng
from otfgen.blender_gen.families import batch_labels

NAME = "stripes2d"
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 2
LABEL_PARAM = "label"
SPACE = {
    "label": {"kind": "int", "low": 0, "high": 1, "default": 0, "doc": "0 horizontal, 1 vertical"},
    "period": {"kind": "float", "low": 3.0, "high": 9.0, "default": 6.0, "doc": "stripe period in pixels"},
    "noise": {"kind": "float", "low": 0.0, "high": 0.15, "default": 0.05, "doc": "pixel noise std"},
}
SCENE = {
    "val_data": "stream",  # no real images of stripes: validate on held-out generated ones
}


def render(params, seeds):
    seeds, label = batch_labels(params, seeds, NUM_CLASSES, LABEL_PARAM)
    n = len(seeds)
    period = np.asarray(params["period"], np.float64)[:, None, None]
    y, x = np.mgrid[0:28, 0:28]
    coord = np.where(label[:, None, None] == 1, x[None], y[None])
    phase = rng.uniform(seeds, "stripes:phase", 1).astype(np.float64)[:, :1, None] * period
    img = 0.5 + 0.5 * np.sin(2 * np.pi * (coord + phase) / period)
    noise = rng.uniform(seeds, "stripes:noise", 28 * 28).astype(np.float64).reshape(n, 28, 28) - 0.5
    img = img + np.asarray(params["noise"], np.float64)[:, None, None] * noise * 3.46
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), label
