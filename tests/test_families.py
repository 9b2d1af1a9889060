"""The scene-family contract, checked for every family in blender_gen/families/.

Each family: module constants match its YAML header; render returns uint8 images of IMAGE_SHAPE
and int64 labels equal to the label parameter; the same (params, seeds) give the same bytes, also
with another request rendered in between (no render history);
sample 17 is the same alone or inside any batch (Blender families, whose path-tracing noise
depends on the cell a sample lands in, declare PER_SAMPLE_PURE = False: there sample 17 alone must
differ from itself in a batch by render noise only); seeds matter; no global RNG is touched.
Family-specific checks (every parameter changes the image, what the images look like) stay in
tests/test_<family>.py.
"""

import numpy as np
import pytest
import yaml

from otfgen.blender_gen import families
from otfgen.blender_gen.families import CONFIG_DIR

NAMES = families.available()


def _param(name):
    mod = families.load(name)
    return pytest.param(name, marks=[pytest.mark.blender] if getattr(mod, "NEEDS_BLENDER", False) else [])


@pytest.fixture(params=[_param(n) for n in NAMES])
def fam(request):
    return families.load(request.param), families.default_space(request.param)


def sample(space, n, seed=0):
    return space.sample(None, seed, n)


def test_module_matches_its_scene_config(fam):
    mod, space = fam
    with open(CONFIG_DIR / "scene" / f"{mod.NAME}.yaml") as f:
        cfg = yaml.safe_load(f)
    assert mod.NAME == cfg["name"]
    label = space[mod.LABEL_PARAM]
    assert label.kind == "int" and (label.low, label.high) == (0, mod.NUM_CLASSES - 1)


def test_output_dtype_shape_and_labels(fam):
    mod, space = fam
    params, seeds = sample(space, 64)
    images, labels = mod.render(params, seeds)
    assert images.dtype == np.uint8 and images.shape == (64, *mod.IMAGE_SHAPE)
    assert labels.dtype == np.int64 and labels.shape == (64,)
    np.testing.assert_array_equal(labels, params[mod.LABEL_PARAM])


def test_same_params_and_seeds_give_identical_bytes(fam):
    mod, space = fam
    params, seeds = sample(space, 64, seed=3)
    a, _ = mod.render(params, seeds)
    other, other_seeds = sample(space, 9, seed=4)  # a different frame in between: no render history
    mod.render(other, other_seeds)
    b, _ = mod.render({k: v.copy() for k, v in params.items()}, seeds.copy())
    assert a.tobytes() == b.tobytes()


def test_sample_alone_equals_sample_in_batch(fam):
    mod, space = fam
    params, seeds = sample(space, 64, seed=5)
    batch, _ = mod.render(params, seeds)
    alone, _ = mod.render({k: v[17:18] for k, v in params.items()}, seeds[17:18])
    # and inside a different batch composition
    rev, _ = mod.render({k: v[::-1].copy() for k, v in params.items()}, seeds[::-1].copy())
    if getattr(mod, "PER_SAMPLE_PURE", True):
        assert alone[0].tobytes() == batch[17].tobytes()
        assert rev[64 - 1 - 17].tobytes() == batch[17].tobytes()
    else:
        other = batch[18].astype(float)
        for img in (alone[0], rev[64 - 1 - 17]):
            d_same = np.abs(img.astype(float) - batch[17]).mean()
            assert d_same < 6.0, d_same  # render noise only (grey levels, mean absolute)
            assert d_same < 0.5 * np.abs(img.astype(float) - other).mean()


def test_different_seeds_give_different_images(fam):
    mod, space = fam
    params, seeds = sample(space, 8)
    a, _ = mod.render(params, seeds)
    b, _ = mod.render(params, seeds + np.uint64(1))
    assert all(a[i].tobytes() != b[i].tobytes() for i in range(8))


def test_no_global_rng_use(fam):
    mod, space = fam
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    mod.render(*sample(space, 4))
    assert np.array_equal(np.random.get_state()[1], state)


@pytest.mark.parametrize("name", ["mnist2d", "fashion2d"])
def test_distractors_off_leave_the_bytes_and_on_do_what_they_say(name):
    mod = families.load(name)
    space = families.declared_space(mod)
    params, seeds = space.sample({"occlude": [1.0] + [0.0] * 7, "invert": [1.0, 0.0]}, 3, 64)
    params["occlude"][:] = 0.0
    plain, _ = mod.render(params, seeds)
    np.testing.assert_array_equal(plain, mod.render({**params, "occlude": np.zeros(64, np.float32)}, seeds)[0])
    inverted, _ = mod.render({**params, "invert": np.ones(64, np.int64)}, seeds)
    np.testing.assert_array_equal(inverted, 255 - plain)
    occluded, _ = mod.render({**params, "occlude": np.full(64, 0.5, np.float32)}, seeds)
    erased = (occluded == 0) & (plain > 0)
    assert erased.any(axis=(1, 2)).mean() > 0.9  # a 14-pixel square over the object erases ink in nearly all
    assert np.all(occluded <= plain)  # it only ever sets pixels to the background


def test_wide_scene_configs_stay_within_what_the_family_declares():
    from otfgen.controller.config import check, compose

    for scene in ("mnist2d_wide", "fashion2d_wide"):
        cfg = compose([f"scene={scene}"])
        check(cfg)
        wide = {k: v for k, v in cfg.scene.params.items()}
        assert wide["rotation" if "mnist" in scene else "tilt"]["high"] == 180.0
        assert wide["invert"]["choices"] == ["plain", "inverted"] and wide["occlude"]["high"] > 0


def test_every_builtin_family_declares_limits_for_every_parameter():
    from otfgen.blender_gen.space import KINDS

    for name in families.builtin():
        mod = families.load(name)
        assert mod.SPACE, name
        for pname, entry in mod.SPACE.items():
            where = f"{name}.SPACE[{pname!r}]"
            assert entry["kind"] in KINDS and entry.get("doc") and "default" in entry, where
            limits = ("choices",) if entry["kind"] == "choice" else ("low", "high")
            assert set(entry) == {"kind", "default", "doc", *limits}, where
        families.declared_space(mod)  # a valid space: defaults inside the limits


def test_scene_configs_narrow_ranges_and_repeat_no_fact_of_the_family():
    """A scene YAML holds ranges (and, at most, a default) per parameter it narrows; kind, limits
    and doc are its family's. Hydra's merge and ``scene_config``'s give the same parameters."""
    from otfgen.controller.config import compose

    docs = {p["doc"] for n in families.builtin() for p in families.load(n).SPACE.values()}
    for path in sorted((CONFIG_DIR / "scene").glob("*.yaml")):
        text = path.read_text()
        cfg = yaml.safe_load(text)
        assert cfg["defaults"] == [f"/schema/scene/{cfg['name']}@_here_", "_self_"], path.name
        for pname, entry in (cfg.get("params") or {}).items():
            assert set(entry) <= {"low", "high", "choices", "default"}, (path.name, pname)
        assert not [d for d in docs if d in text], path.name
        composed = compose([f"scene={path.stem}"])
        assert composed.scene.params == families.scene_config(path.stem)["params"], path.name
        assert list(composed.scene.params) == list(families.load(cfg["name"]).SPACE), path.name
