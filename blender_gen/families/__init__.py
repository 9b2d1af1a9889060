"""Scene families: one module each, looked up by name.

A family module defines ``NAME``, ``IMAGE_SHAPE`` ((H, W) or (H, W, C)), ``NUM_CLASSES``,
``LABEL_PARAM`` (the parameter that is the class label), ``SPACE`` and
``render(params: dict[str, ndarray], seeds: uint64 ndarray) -> (uint8 images, int64 labels)``.
``render`` is pure: it never draws its own parameters, and sample i's bytes depend only on
(params[...][i], seeds[i]).

``SPACE`` is the family's parameter space, declared once: per parameter its kind (float, int or
choice), its limits (the widest range ``render`` takes, or every choice), its default and a
one-line doc. A scene config (``configs/scene/<scene>.yaml``: its family's ``name``, render
options, ``val_data``, ``input_blur``) narrows ranges and choices and may move a default, never
more: ``scene_space`` checks it against ``SPACE``.

Families outside this package are found through the ``otfgen.families`` entry point group (name:
the family's NAME, value: its module); such a module may also declare its scene config as
``SCENE``, a mapping with the keys of a scene YAML. A built-in family's name always wins over an
entry point's. docs/extending.md.
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
from otfgen.configs import plugins
from otfgen.configs.schema import PARAM_KEYS, ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
ENTRY_POINTS = "otfgen.families"
REQUIRED = ("NAME", "IMAGE_SHAPE", "NUM_CLASSES", "LABEL_PARAM", "SPACE", "render")


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


def declared_space(module) -> ParamSpace:
    """What the family can render: its ``SPACE``, the limits every scene config stays within."""
    return ParamSpace.from_mapping(module.SPACE)


def narrow(space: dict, params: dict | None) -> dict:
    """A scene config's ``params`` (per parameter: low, high, choices or default) laid over a
    family's ``SPACE``, key by key as Hydra merges a scene YAML over ``schema/scene/<family>``."""
    out = {name: dict(entry) for name, entry in space.items()}
    for name, entry in (params or {}).items():
        out[name] = {**out.get(name, {}), **entry}
    return out


def scene_schema(name: str) -> dict:
    """The base every scene config of the family is merged over (Hydra's ``schema/scene/<name>``):
    its name and its declared space, so ``scene.params.NAME.*`` overrides every parameter."""
    return {"name": name, "params": narrow(load(name).SPACE, None)}


def scene_space(cfg) -> ParamSpace:
    """The run's parameter space: the family's declared space as the scene config (YAML plus
    overrides) narrows it; anything past the family's declaration is a ``ConfigError``."""
    scene = cfg.scene
    fam = load(scene.name)  # raises UnknownFamily with the list of families
    for k, v in scene.params.items():
        extra = set(v) - set(PARAM_KEYS)
        if extra:
            raise ConfigError(f"scene.params.{k}: unknown keys {sorted(extra)}; allowed: {list(PARAM_KEYS)}")
    space = ParamSpace.from_mapping({k: {kk: vv for kk, vv in v.items() if vv is not None}
                                     for k, v in scene.params.items()})
    declared = declared_space(fam)
    unknown = set(space.params) - set(declared.params)
    missing = set(declared.params) - set(space.params)
    if unknown or missing:
        raise ConfigError(f"scene.params for '{scene.name}': unknown {sorted(unknown)}, "
                          f"missing {sorted(missing)}; declared: {sorted(declared.params)}")
    for p in space:
        d = declared[p.name]
        for key in ("kind", "doc"):  # the family's facts, not the scene's
            if getattr(p, key) != getattr(d, key):
                raise ConfigError(f"scene.params.{p.name}.{key}: {getattr(p, key)!r}, the family declares "
                                  f"{getattr(d, key)!r}")
        if p.kind == "choice":
            extra = set(p.choices) - set(d.choices)
            if extra:
                raise ConfigError(f"scene.params.{p.name}.choices: {sorted(extra)} not among {list(d.choices)}")
        elif p.low < d.low or p.high > d.high:
            # overrides may narrow a range, not widen it past what the family was built for
            raise ConfigError(f"scene.params.{p.name}: [{p.low}, {p.high}] outside the family's "
                              f"declared range [{d.low}, {d.high}]")
    if fam.LABEL_PARAM not in space.params:
        raise ConfigError(f"scene '{scene.name}' has no label parameter '{fam.LABEL_PARAM}'")
    return space


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


@functools.lru_cache(maxsize=None)
def builtin() -> tuple[str, ...]:
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def external() -> dict:
    """Entry points of group ``otfgen.families`` by name (installed packages; not imported yet)."""
    return plugins.installed(ENTRY_POINTS, frozenset(builtin()))


def available() -> list[str]:
    return sorted({*builtin(), *external()})


def load(name: str) -> ModuleType:
    if name in builtin():
        return importlib.import_module(f"{__name__}.{name}")
    ep = external().get(name)
    if ep is None:
        raise UnknownFamily(f"unknown scene family '{name}'; available: {available()}")
    module = plugins.load(ep, "scene family", UnknownFamily)
    missing = [a for a in REQUIRED if not hasattr(module, a)]
    if missing:
        raise UnknownFamily(f"scene family '{name}' ({ep.value}) lacks {missing}; a family module defines "
                            f"{list(REQUIRED)}")
    if module.NAME != name:
        raise UnknownFamily(f"scene family entry point '{name}' loads {ep.value}, whose NAME is '{module.NAME}'")
    return module


def scene_config(name: str) -> dict:
    """A scene config as a mapping, its params the family's declared space narrowed by the scene:
    ``configs/scene/<name>.yaml`` for a packaged scene, the module's ``SCENE`` (or none) for a
    family from an entry point."""
    path = CONFIG_DIR / "scene" / f"{name}.yaml"
    if path.exists():
        with open(path) as f:
            scene = yaml.safe_load(f)
        scene.pop("defaults", None)  # Hydra's: the family's schema/scene node, which SPACE gives here
    else:
        scene = {**(getattr(load(name), "SCENE", None) or {}), "name": name}
    if not isinstance(scene.get("params", {}), dict):
        raise UnknownFamily(f"scene '{name}': params must be a mapping of parameter name to low/high/choices/default")
    return {**scene, "params": narrow(load(scene["name"]).SPACE, scene.get("params"))}


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
    """The parameter space of a packaged scene config (for a family, its tuned prior; no overrides)."""
    return ParamSpace.from_mapping(scene_config(name)["params"])
