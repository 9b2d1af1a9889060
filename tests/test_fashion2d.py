"""fashion2d: determinism, contract, every parameter matters, Fashion-MNIST-style framing."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from conftest import assert_renders_sampled_params_exactly
from otfgen.blender_gen import rng
from otfgen.blender_gen.families import CONFIG_DIR, declared_space, default_space, load
from otfgen.blender_gen.space import SpaceError

fam = load("fashion2d")
space = default_space("fashion2d")
declared = declared_space(fam)  # what the renderer takes: the tuned space's ranges and beyond


def sample(n: int, seed: int = 0):
    return space.sample(None, seed, n)


def by_class(n_per: int = 1, **overrides):
    """Defaults with every class in turn (n_per each), optionally some parameters fixed."""
    n = 10 * n_per
    params = space.defaults(n)
    params["label"] = np.repeat(np.arange(10), n_per).astype(np.int64)
    for k, v in overrides.items():
        v = space[k].choices.index(v) if space[k].kind == "choice" else v
        params[k] = np.full(n, v, space[k].dtype)
    return params, rng.derive_seeds(11, n)


def test_module_matches_its_scene_config():
    with open(CONFIG_DIR / "scene" / "fashion2d.yaml") as f:
        cfg = yaml.safe_load(f)
    assert fam.NAME == cfg["name"] == "fashion2d"
    assert fam.IMAGE_SHAPE == (28, 28) and fam.NUM_CLASSES == 10 and fam.LABEL_PARAM == "label"
    assert space["label"].kind == "int" and (space["label"].low, space["label"].high) == (0, 9)
    assert tuple(space["fill"].choices) == fam.FILLS


def test_output_dtype_shape_and_labels():
    params, seeds = sample(64)
    images, labels = fam.render(params, seeds)
    assert images.dtype == np.uint8 and images.shape == (64, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (64,)
    np.testing.assert_array_equal(labels, params["label"])


@pytest.mark.parametrize("name", [p.name for p in declared if p.name != "label"])
def test_every_parameter_changes_the_image(name):
    p = declared[name]
    params, seeds = by_class(fill="stripes", contrast=0.4, noise=0.03, folds=0.2, blur=0.3)
    lo, hi = dict(params), dict(params)
    if p.kind == "choice":
        lo[name] = np.full(10, 0, np.int64)
        hi[name] = np.full(10, len(p.choices) - 1, np.int64)
    else:
        lo[name] = np.full(10, p.low, p.dtype)
        # a full turn is no change: a periodic parameter is compared with its range's middle
        hi[name] = np.full(10, (p.low + p.high) / 2 if name == "tilt" else p.high, p.dtype)
    a, _ = fam.render(lo, seeds)
    b, _ = fam.render(hi, seeds)
    changed = np.array([a[i].tobytes() != b[i].tobytes() for i in range(10)])
    assert changed.all(), f"'{name}' low->high leaves classes {np.flatnonzero(~changed)} unchanged"


def test_shape_parameters_change_the_silhouette():
    """Shape parameters move the outline itself, not just the shading, in every class."""
    for name in ("width", "length", "sleeve", "neckline", "heel"):
        params, seeds = by_class(fill="flat", noise=0.0, folds=0.0, blur=0.0)
        lo, hi = dict(params), dict(params)
        lo[name], hi[name] = np.zeros(10, np.float32), np.ones(10, np.float32)
        a, _ = fam.render(lo, seeds)
        b, _ = fam.render(hi, seeds)
        diff = ((a > 20) != (b > 20)).sum(axis=(1, 2))
        assert diff.min() >= 3, f"'{name}': silhouette change per class {diff}"


def test_every_fill_of_every_class_renders():
    params, seeds = by_class(n_per=len(fam.FILLS))
    params["fill"] = np.tile(np.arange(len(fam.FILLS)), 10).astype(np.int64)
    images, _ = fam.render(params, seeds)
    assert (images > 60).sum(axis=(1, 2)).min() > 30
    # classes look different from each other with the same seeds and settings
    params, seeds = by_class()
    images, _ = fam.render(params, rng.derive_seeds(0, 10))
    assert len({im.tobytes() for im in images}) == 10


def test_product_centred_on_dark_background():
    params, seeds = sample(256, seed=9)
    images, _ = fam.render(params, seeds)
    w = images.astype(np.float64)
    # black background: the frame's corners are empty, the product is bright somewhere
    corners = np.concatenate([w[:, :2, :2], w[:, :2, -2:], w[:, -2:, :2], w[:, -2:, -2:]], 1)
    assert np.median(corners.mean(axis=(1, 2))) < 5 and images.max(axis=(1, 2)).min() > 15
    # the bounding box's centre is near the frame centre, its long side fills the frame
    box_c, long_side = [], []
    for im in images:
        ys, xs = np.nonzero(im > 15)
        box_c.append(((ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2))
        long_side.append(max(ys.max() - ys.min(), xs.max() - xs.min()) + 1)
    box_c = np.array(box_c)
    assert np.abs(box_c - 13.5).max() < 4.0 and np.median(np.abs(box_c - 13.5)) < 1.0
    assert np.median(long_side) >= 26


def test_garments_fill_the_frame_top_to_bottom_alike_in_every_class():
    """Fashion-MNIST fits each product's box to the frame, so a garment's top row holds its
    highest point (a collar, a hood, a waistband) at full strength, whatever the class: a model
    trained on tops whose top row is fuller in one class than another reads the class from it."""
    params, seeds = sample(6000, seed=21)
    params["tilt"][:] = 0.0
    images, labels = fam.render(params, seeds)
    for c in (0, 1, 2, 3, 4, 6):
        ims = images[labels == c]
        first = (ims.max(axis=2) > 40).argmax(axis=1)
        last = 27 - (ims.max(axis=2) > 40)[:, ::-1].argmax(axis=1)
        assert (first == 0).mean() > 0.75 and (last == 27).mean() > 0.75, (c, (first == 0).mean(), (last == 27).mean())
        assert np.median(ims[:, 0].max(axis=1)) > 80, (c, np.median(ims[:, 0].max(axis=1)))


def test_top_half_shortcuts_are_exact():
    """Details that lie in the top half (neck patch, collar) are only worked out there; at the
    extreme tilts the image equals one worked out over the whole frame (the flat-row slice)."""
    params, seeds = by_class(n_per=20)
    for t in (-8.0, 8.0):
        params["tilt"] = np.full(200, t, np.float32)
        images, _ = fam.render(params, seeds)
        old = fam._TOP
        try:
            fam._TOP = 28 * 28
            full, _ = fam.render(params, seeds)
        finally:
            fam._TOP = old
        np.testing.assert_array_equal(images, full)


def test_every_image_peaks_at_full_brightness():
    """Every Fashion-MNIST image peaks at 255, so every generated one does (up to float rounding)."""
    params, seeds = sample(512, seed=4)
    images, _ = fam.render(params, seeds)
    assert images.max(axis=(1, 2)).min() >= 254
    # a dim body inside a bright rim keeps its dimness after the stretch (in the broad classes:
    # thin straps and trouser legs are mostly rim)
    params, seeds = by_class(fill="flat", noise=0.0, folds=0.0, blur=0.0, brightness=0.2, rim=1.0)
    images, _ = fam.render(params, seeds)
    body = np.array([np.median(images[c][images[c] > 20]) for c in (0, 2, 3, 4, 6, 8, 9)])
    assert np.all(body < 100), body


def test_shoes_point_left_and_are_wider_than_tall():
    params, seeds = by_class(n_per=8)
    images, _ = fam.render(params, seeds)
    ink = (images > 15).astype(np.float64)
    for c in (5, 7, 9):
        im = ink[params["label"] == c]
        cols = im.any(axis=1).sum(1)
        rows = im.any(axis=2).sum(1)
        assert np.all(cols >= rows), (c, cols, rows)
    # trousers and dresses are taller than wide
    for c in (1, 3):
        im = ink[params["label"] == c]
        assert np.all(im.any(axis=2).sum(1) > im.any(axis=1).sum(1) + 5)


@pytest.mark.parametrize(
    "name, value, dtype",
    [("label", 10, np.int64), ("width", 1.5, np.float32), ("tilt", -30.0, np.float32),
     ("fill", 7, np.int64), ("noise", np.nan, np.float32)],
)
def test_out_of_range_params_rejected_naming_the_parameter(name, value, dtype):
    params, _ = sample(4)
    params[name] = params[name].copy()
    params[name][2] = np.asarray(value, dtype)
    with pytest.raises(SpaceError, match=f"'{name}'"):
        space.check_params(params, 4)


def test_missing_or_unknown_params_rejected():
    params, _ = sample(4)
    del params["heel"]
    with pytest.raises(SpaceError, match="'heel'"):
        space.check_params(params, 4)
    params, _ = sample(4)
    params["sparkle"] = np.zeros(4, np.float32)
    with pytest.raises(SpaceError, match="sparkle"):
        space.check_params(params, 4)


def test_render_accepts_sampled_params_exactly():
    assert_renders_sampled_params_exactly(space, fam, *sample(16))


def test_bad_label_rejected_by_render():
    params, seeds = sample(4)
    params["label"] = params["label"].copy()
    params["label"][0] = 10
    with pytest.raises(ValueError, match="label"):
        fam.render(params, seeds)


def test_empty_batch():
    params, seeds = sample(0)
    images, labels = fam.render(params, seeds)
    assert images.shape == (0, 28, 28) and labels.shape == (0,)
