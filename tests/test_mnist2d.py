"""mnist2d: determinism, contract, every parameter matters, MNIST-style normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from conftest import assert_renders_sampled_params_exactly
from otfgen.blender_gen import rng
from otfgen.blender_gen.families import CONFIG_DIR, declared_space, default_space, load
from otfgen.blender_gen.space import SpaceError

fam = load("mnist2d")
space = default_space("mnist2d")
declared = declared_space(fam)  # what the renderer takes: the tuned space's ranges and beyond


def sample(n: int, seed: int = 0):
    return space.sample(None, seed, n)


def test_module_matches_its_scene_config():
    with open(CONFIG_DIR / "scene" / "mnist2d.yaml") as f:
        cfg = yaml.safe_load(f)
    assert fam.NAME == cfg["name"] == "mnist2d"
    assert fam.IMAGE_SHAPE == (28, 28) and fam.NUM_CLASSES == 10 and fam.LABEL_PARAM == "label"
    assert space["label"].kind == "int" and (space["label"].low, space["label"].high) == (0, 9)


def test_output_dtype_shape_and_labels():
    params, seeds = sample(64)
    images, labels = fam.render(params, seeds)
    assert images.dtype == np.uint8 and images.shape == (64, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (64,)
    np.testing.assert_array_equal(labels, params["label"])
    # white ink on black: dark border, bright strokes
    assert images[:, 0, :].mean() < 40 and images.max(axis=(1, 2)).min() > 100


@pytest.mark.parametrize("name", [p.name for p in declared if p.name != "label"])
def test_every_parameter_changes_the_image(name):
    p = declared[name]
    n = 10
    base = space.defaults(n)
    base["label"] = np.arange(n, dtype=np.int64)
    seeds = rng.derive_seeds(11, n)
    lo, hi = dict(base), dict(base)
    if p.kind == "choice":
        lo[name], hi[name] = np.zeros(n, np.int64), np.full(n, len(p.choices) - 1, np.int64)
    else:
        lo[name] = np.full(n, p.low, p.dtype)
        # a full turn is no change: a periodic parameter is compared with its range's middle
        hi[name] = np.full(n, (p.low + p.high) / 2 if name == "rotation" else p.high, p.dtype)
    a, _ = fam.render(lo, seeds)
    b, _ = fam.render(hi, seeds)
    # every digit class responds (variant: classes with one style would not, but all have >= 2)
    changed = [a[i].tobytes() != b[i].tobytes() for i in range(n)]
    assert all(changed), f"'{name}' low->high leaves classes {np.flatnonzero(~np.array(changed))} unchanged"


def test_label_param_picks_the_digit():
    n = 10
    params = space.defaults(n)
    params["label"] = np.arange(n, dtype=np.int64)
    images, labels = fam.render(params, rng.derive_seeds(0, n))
    np.testing.assert_array_equal(labels, np.arange(n))
    # different classes draw different shapes from the same seeds and style settings
    assert len({im.tobytes() for im in images}) == n


def test_every_variant_of_every_class_renders():
    params = space.defaults(40)
    params["label"] = np.repeat(np.arange(10), 4).astype(np.int64)
    params["variant"] = np.tile(np.array([0.0, 0.3, 0.6, 0.99], np.float32), 10)
    images, _ = fam.render(params, rng.derive_seeds(1, 40))
    ink = (images > 127).sum(axis=(1, 2))
    assert ink.min() > 20


def _centre_of_mass(images: np.ndarray) -> np.ndarray:
    w = images.astype(np.float64)
    yy, xx = np.mgrid[0:28, 0:28]
    m = w.sum(axis=(1, 2))
    return np.stack([(w * yy).sum(axis=(1, 2)) / m, (w * xx).sum(axis=(1, 2)) / m], 1)


def _bbox(images: np.ndarray, level: int = 40) -> np.ndarray:
    out = []
    for im in images:
        ys, xs = np.nonzero(im > level)
        out.append((ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))
    return np.array(out)


def test_mnist_normalisation_at_defaults():
    params = space.defaults(40)
    params["label"] = np.repeat(np.arange(10), 4).astype(np.int64)
    params["variant"] = np.tile(np.array([0.0, 0.3, 0.6, 0.99], np.float32), 10)
    images, _ = fam.render(params, rng.derive_seeds(2, 40))
    com = _centre_of_mass(images)
    assert np.abs(com - 13.5).max() < 1.0, com
    box = _bbox(images)
    assert box.max() <= 22 and np.all(box.max(axis=1) >= 17), box


def test_mnist_normalisation_over_uniform_samples():
    params, seeds = sample(256, seed=9)
    params["shift"][:] = 0.0  # shift moves the centre of mass on purpose
    params["noise"][:] = 0.0  # noise puts faint grey everywhere, which a bounding box would count
    images, _ = fam.render(params, seeds)
    com = _centre_of_mass(images)
    assert np.median(np.abs(com - 13.5)) < 0.5 and np.abs(com - 13.5).max() < 1.5
    box = _bbox(images).max(axis=1)
    assert np.percentile(box, 95) <= 23 and box.max() <= 26


@pytest.mark.parametrize(
    "name, value, dtype",
    [("label", 10, np.int64), ("thickness", 99.0, np.float32), ("variant", -0.5, np.float32),
     ("noise", np.nan, np.float32)],
)
def test_out_of_range_params_rejected_naming_the_parameter(name, value, dtype):
    params, _ = sample(4)
    params[name] = params[name].copy()
    params[name][2] = np.asarray(value, dtype)
    with pytest.raises(SpaceError, match=f"'{name}'"):
        space.check_params(params, 4)


def test_missing_or_unknown_params_rejected():
    params, _ = sample(4)
    del params["slant"]
    with pytest.raises(SpaceError, match="'slant'"):
        space.check_params(params, 4)
    params, _ = sample(4)
    params["not_a_param"] = np.zeros(4, np.float32)
    with pytest.raises(SpaceError, match="not_a_param"):
        space.check_params(params, 4)


def test_render_accepts_sampled_params_exactly():
    assert_renders_sampled_params_exactly(space, fam, *sample(16))


def test_empty_batch():
    params, seeds = sample(0)
    images, labels = fam.render(params, seeds)
    assert images.shape == (0, 28, 28) and labels.shape == (0,)
