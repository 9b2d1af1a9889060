"""Scene families: one module each, looked up by name.

A family module defines ``NAME``, ``IMAGE_SHAPE`` ((H, W) or (H, W, C)), ``NUM_CLASSES``,
``LABEL_PARAM`` (the parameter that is the class label) and
``render(params: dict[str, ndarray], seeds: uint64 ndarray) -> (uint8 images, int64 labels)``.
``render`` is pure: it never draws its own parameters, and sample i's bytes depend only on
(params[...][i], seeds[i]). Its parameter space is ``configs/scene/<NAME>.yaml``.

Families outside this package are found through the ``otfgen.families`` entry point group (name:
the family's NAME, value: its module); such a module also declares its scene config as ``SCENE``,
a mapping with the keys of a scene YAML (``name``, ``params``, optionally ``render``, ``val_data``,
``input_blur``). A built-in family's name always wins over an entry point's. docs/extending.md.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

import yaml

from otfgen.blender_gen.space import ParamSpace

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
ENTRY_POINTS = "otfgen.families"
REQUIRED = ("NAME", "IMAGE_SHAPE", "NUM_CLASSES", "LABEL_PARAM", "render")


class UnknownFamily(LookupError):
    pass


def batch_labels(params, seeds, num_classes: int, label_param: str):
    """The checks every family's render starts with: (seeds uint64 [B], labels int64 [B])."""
    import numpy as np

    seeds = np.asarray(seeds, dtype=np.uint64).reshape(-1)
    n = seeds.shape[0]
    label = np.asarray(params[label_param], dtype=np.int64)
    if label.shape != (n,) or np.any((label < 0) | (label >= num_classes)):
        raise ValueError(f"{label_param} must be an int array of shape ({n},) in [0, {num_classes - 1}]")
    return seeds, label


def distract(images, params, seeds):
    """The distractors a new user's wide ranges include, applied to finished uint8 images [B,H,W]
    in place: ``occlude`` (side of a background-coloured square at a random place, as a fraction
    of the frame; 0 = none) and ``invert`` (choice index 1 = light background). Both off leave
    the bytes untouched."""
    import numpy as np

    from otfgen.blender_gen import rng

    occ = np.asarray(params["occlude"], np.float64)
    inv = np.asarray(params["invert"], np.int64) == 1
    B, H, W = images.shape[:3]
    hit = np.flatnonzero(occ > 0)
    if hit.size:
        u = rng.uniform(seeds[hit], "distract:occlude", 2).astype(np.float64)
        side = np.maximum(1, np.round(occ[hit] * H)).astype(np.int64)
        top = np.floor(u[:, 0] * (H - side + 1)).astype(np.int64)
        left = np.floor(u[:, 1] * (W - side + 1)).astype(np.int64)
        rows, cols = np.arange(H)[None, :], np.arange(W)[None, :]
        mask = (((rows >= top[:, None]) & (rows < (top + side)[:, None]))[:, :, None]
                & ((cols >= left[:, None]) & (cols < (left + side)[:, None]))[:, None, :])
        sub = images[hit]
        sub[mask] = 0
        images[hit] = sub
    if inv.any():
        images[inv] = 255 - images[inv]
    return images


def declared_space(name: str, module) -> ParamSpace:
    """What the family can render: its scene YAML's parameters, with the wider limits (and extra
    choices) its module declares in ``LIMITS`` — the tuned YAML is a prior inside them, and a
    scene config such as ``<name>_wide.yaml`` may range up to them."""
    params = scene_config(name)["params"]
    for pname, limit in getattr(module, "LIMITS", {}).items():
        entry = dict(params[pname])
        if entry["kind"] == "choice":
            entry["choices"] = list(limit)
        else:
            entry["low"], entry["high"] = limit
        params[pname] = entry
    return ParamSpace.from_mapping(params)


def code_digest() -> str:
    """A digest of the rendering code (families, Blender backend, RNG): replay of a run made
    with other code may legitimately differ, and says so."""
    import hashlib

    root = Path(__file__).resolve().parent
    h = hashlib.blake2b(digest_size=8)
    for f in sorted([*root.glob("*.py"), *(root.parent / "blender").glob("*.py"), root.parent / "rng.py"]):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def builtin() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


@functools.lru_cache(maxsize=None)
def external() -> dict:
    """Entry points of group ``otfgen.families`` by name (installed packages; not imported yet)."""
    from importlib.metadata import entry_points

    inside = set(builtin())
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINTS) if ep.name not in inside}


def available() -> list[str]:
    return sorted({*builtin(), *external()})


def load(name: str) -> ModuleType:
    if name in builtin():
        return importlib.import_module(f"{__name__}.{name}")
    ep = external().get(name)
    if ep is None:
        raise UnknownFamily(f"unknown scene family '{name}'; available: {available()}")
    try:
        module = ep.load()
    except Exception as e:  # the user's package: say which entry point, not a traceback from inside it
        raise UnknownFamily(f"scene family '{name}' (entry point {ep.value}) failed to import: {e}") from e
    missing = [a for a in REQUIRED if not hasattr(module, a)]
    if missing:
        raise UnknownFamily(f"scene family '{name}' ({ep.value}) lacks {missing}; a family module defines "
                            f"{list(REQUIRED)}")
    if module.NAME != name:
        raise UnknownFamily(f"scene family entry point '{name}' loads {ep.value}, whose NAME is '{module.NAME}'")
    return module


def scene_config(name: str) -> dict:
    """The family's scene config as a mapping: ``configs/scene/<name>.yaml`` for a built-in
    family, the module's ``SCENE`` for one from an entry point."""
    path = CONFIG_DIR / "scene" / f"{name}.yaml"
    if path.exists():
        with open(path) as f:
            return yaml.safe_load(f)
    module = load(name)
    scene = getattr(module, "SCENE", None)
    if not isinstance(scene, dict) or not isinstance(scene.get("params"), dict):
        raise UnknownFamily(f"scene family '{name}' declares no SCENE (a mapping with 'params', as in a "
                            "configs/scene/*.yaml file)")
    return {"name": name, **scene}


def external_scenes() -> dict[str, dict]:
    """Scene configs of the entry-point families, for Hydra's ``scene`` group (``scene=NAME``). A
    package that fails to import is skipped with a warning here: it must not stop built-in runs."""
    out = {}
    for name in external():
        try:
            out[name] = scene_config(name)
        except UnknownFamily as e:
            print(f"otfgen: warning: {e}", file=sys.stderr)
    return out


def default_space(name: str) -> ParamSpace:
    """The parameter space of the family's packaged scene config (the tuned prior; no overrides)."""
    return ParamSpace.from_mapping(scene_config(name)["params"])
