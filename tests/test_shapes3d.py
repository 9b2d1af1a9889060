"""shapes3d: what the images show (the generic contract is in test_families.py).

Renders on the CPU with tiny grids and few samples so the file stays well under a minute on 2
cores. A 1×1 grid renders every sample in the same cell, so the path-tracing noise pattern is the
same for every render and any byte difference comes from the parameters.
"""

import numpy as np
import pytest

pytest.importorskip("bpy")

from conftest import cycles_gpus  # noqa: E402
from otfgen.blender_gen.blender import BlenderDeviceError  # noqa: E402
from otfgen.blender_gen.families import default_space, load  # noqa: E402

pytestmark = pytest.mark.blender

fam = load("shapes3d")
SPACE = default_space("shapes3d")


def _render_one_by_one(params: dict, seeds: np.ndarray) -> np.ndarray:
    out = []
    for i in range(len(seeds)):
        img, _ = fam.render({k: v[i:i + 1] for k, v in params.items()}, seeds[i:i + 1])
        out.append(img[0])
    return np.stack(out)


def test_every_parameter_changes_the_image():
    fam.configure({"device": "cpu", "rows": 1, "cols": 1, "samples": 2})
    names = [p.name for p in SPACE if p.name != "label"]
    base = SPACE.defaults(1)
    batch = {k: np.repeat(v, 1 + 2 * len(names)) for k, v in base.items()}
    for j, name in enumerate(names):
        lo, hi = SPACE[name].low, SPACE[name].high
        batch[name][1 + 2 * j] = lo
        batch[name][2 + 2 * j] = hi
    seeds = np.full(len(batch["label"]), 7, np.uint64)
    imgs = _render_one_by_one(batch, seeds)
    ref = imgs[0].astype(float)
    weak = []
    for j, name in enumerate(names):
        for k, end in ((1 + 2 * j, "low"), (2 + 2 * j, "high")):
            if batch[name][k] == base[name][0]:
                continue  # the default sits at this end of the range
            d = np.abs(imgs[k].astype(float) - ref).mean()
            if d < 0.15:  # same cell, same seed: the noise floor is exactly 0
                weak.append(f"{name}={end}: mean |diff| {d:.3f}")
    assert not weak, weak


def _class_masks(elevation: float) -> np.ndarray:
    """One sample per class, a plain saturated red object over a plain grey world."""
    fam.configure({"device": "cpu", "rows": 2, "cols": 5, "samples": 2})
    p = SPACE.defaults(10)
    p["label"] = np.arange(10)
    flat = dict(hue=0.0, saturation=1.0, value=0.9, pattern_contrast=0.0, bump=0.0, metallic=0.0, roughness=1.0,
                ground_saturation=0.0, ground_contrast=0.0, sky_saturation=0.0, elevation=elevation, blur=0.0,
                noise=0.0, ambient=0.6, twist=0.0, taper=0.0, azimuth=20.0)
    for k, v in flat.items():
        p[k] = np.full(10, v, SPACE[k].dtype)
    img, labels = fam.render(p, np.arange(10, dtype=np.uint64))
    np.testing.assert_array_equal(labels, np.arange(10))
    rgb = img.astype(int)
    return (rgb[..., 0] - rgb[..., 1]) > 40  # red object against grey floor, ground and sky


@pytest.mark.parametrize("elevation", [30.0, 90.0])
def test_each_class_has_its_own_silhouette(elevation):
    masks = _class_masks(elevation)
    area = masks.sum((1, 2))
    assert np.all(area > 150), area  # every class shows an object of some size
    if elevation == 90.0:
        # seen from straight above, solids of revolution with a full top look alike (disc):
        # sphere, cylinder, cone, capsule; compare only the classes whose outline differs
        classes = [0, 1, 4, 6, 7, 8, 9]  # cube, sphere (disc), torus, pyramid, star, tube, cross
    else:
        classes = list(range(10))
    for a in classes:
        for b in classes:
            if a < b:
                inter = (masks[a] & masks[b]).sum()
                union = (masks[a] | masks[b]).sum()
                assert inter / union < 0.9, (a, b, inter / union)


def test_labels_equal_the_label_parameter():
    fam.configure({"device": "cpu", "rows": 2, "cols": 2, "samples": 1})
    params, seeds = SPACE.sample(None, 11, 6)  # more samples than cells: two frames
    images, labels = fam.render(params, seeds)
    assert images.shape == (6, 64, 64, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, params["label"])


def test_a_cell_never_sees_its_neighbour():
    """Cell 0 looks the same whether cell 1 holds a small plain object or the largest, most tilted,
    brightest one. Not bit for bit: the frame's acceleration structure changes with the neighbour's
    geometry, which moves cell 0's path-tracing noise a little (scattered pixels, a fraction of a
    grey level on average); a neighbour reaching into the cell or shading it would change a region
    by many levels."""
    fam.configure({"device": "cpu", "rows": 1, "cols": 2, "samples": 2})
    p = SPACE.defaults(2)
    p["size"][1] = 0.6
    p["blur"][:] = p["noise"][:] = 0.0
    small, _ = fam.render(p, np.array([3, 4], np.uint64))
    big = {k: v.copy() for k, v in p.items()}
    big["label"][1] = 5  # capsule: the tallest class
    for k, v in dict(size=1.0, aspect=1.6, elevation=5.0, roll=25.0, floor_size=1.0, light_elevation=20.0,
                     light_strength=5.0, value=0.95, metallic=1.0, roughness=0.05).items():
        big[k][1] = v
    pair, _ = fam.render(big, np.array([3, 4], np.uint64))
    assert np.abs(small[1].astype(int) - pair[1]).mean() > 5  # the neighbour did change
    d = np.abs(small[0].astype(int) - pair[0]).max(-1)
    assert d.mean() < 0.3 and (d > 8).mean() < 0.01, (d.mean(), (d > 8).mean())


def test_unknown_option_and_device_are_clear_errors():
    with pytest.raises(ValueError, match="unknown render options.*'colour'"):
        fam.configure({"colour": 1})
    with pytest.raises(ValueError, match="cell_px must be 64"):
        fam.configure({"cell_px": 28})
    with pytest.raises(ValueError, match="at most|1..63"):
        fam.configure({"device": "cpu", "rows": 8, "cols": 8})
    with pytest.raises(BlenderDeviceError, match="must be one of"):
        fam.configure({"device": "tpu"})
    if cycles_gpus("OPTIX"):  # a machine with an OptiX GPU renders on it
        fam.configure({"device": "optix", "rows": 1, "cols": 1})
    else:
        with pytest.raises(BlenderDeviceError, match="no OPTIX device"):
            fam.configure({"device": "optix", "rows": 1, "cols": 1})
    # a failed configure leaves a working family behind
    fam.configure({"device": "cpu", "rows": 1, "cols": 1, "samples": 1})
    img, lab = fam.render(SPACE.defaults(1), np.zeros(1, np.uint64))
    assert img.shape == (1, 64, 64, 3) and lab[0] == 0
