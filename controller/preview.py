"""``otfgen preview``: look at a scene before training on it — a labelled PNG grid, rendered here.

    otfgen preview scene=NAME [n=64] [sweep=PARAM] [steps=8] [out=PATH] [seed=S] [KEY=VALUE ...]

No controller, worker processes, sockets or trainer: the scene config is composed as for a run
(``scene=mnist2d_wide``, ``scene.params.slant.high=0.3`` and ``scene.render.samples=2`` work),
parameters are drawn with ``ParamSpace.sample`` (uniform over the scene's ranges) and the family
renders them in this process, as a worker would (Blender families on whatever device
``scene.render.device`` picks, the CPU where there is no GPU). Each cell is labelled with its class.

With ``sweep=PARAM`` there is one row per value of PARAM — each choice, each value of an int
parameter with at most 16 of them, else ``steps`` values evenly spaced from its low to its high
end — and every row holds the same ``n / rows`` samples (same parameters, same seeds) with only
PARAM changed, so what differs between rows is what the parameter does. Prints the PNG's path.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("otfgen.preview")

OWN_KEYS = ("n", "sweep", "steps", "out")
MAX_N = 4096
HEADER_W = 150  # left column with the swept value
TOP = 22  # title band


class PreviewError(ValueError):
    pass


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    own, overrides = {}, []
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep:
            raise PreviewError(f"expected KEY=VALUE, got '{a}' (`otfgen preview --help`)")
        if key in OWN_KEYS:
            own[key] = value
        else:
            overrides.append(a)
    return own, overrides


def scene_config(overrides: list[str]) -> str:
    """The scene config a preview composes: the last ``scene=NAME`` override, else the default's."""
    chosen = [a.split("=", 1)[1] for a in overrides if a.startswith("scene=")]
    if chosen:
        return chosen[-1]
    import yaml

    defaults = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "config.yaml").read_text())["defaults"]
    return next(d["scene"] for d in defaults if isinstance(d, dict) and "scene" in d)


def sweep_values(p, steps: int) -> tuple[np.ndarray, list[str]]:
    """The values of one row each: (values in the parameter's dtype, their labels)."""
    if p.kind == "choice":
        return np.arange(len(p.choices), dtype=np.int64), [f"{p.name}={c}" for c in p.choices]
    if p.kind == "int":
        if p.n_options <= 16:
            v = np.arange(p.low, p.high + 1, dtype=np.int64)
        else:
            v = np.unique(np.round(np.linspace(p.low, p.high, steps)).astype(np.int64))
        return v, [f"{p.name}={x}" for x in v]
    v = np.linspace(p.low, p.high, steps).astype(np.float32)
    return v, [f"{p.name}={x:.4g}" for x in v]


def draw(space, n: int, seed: int, sweep: str | None, steps: int):
    """(params, seeds, row labels or None, cols): the samples to render, row-major."""
    if not sweep:
        params, seeds = space.sample(None, seed, n)
        return params, seeds, None, math.ceil(math.sqrt(n))
    p = space[sweep]  # SpaceError names the known parameters
    values, labels = sweep_values(p, steps)
    cols = max(1, round(n / len(values)))
    base, base_seeds = space.sample(None, seed, cols)
    params = {k: np.tile(v, len(values)) for k, v in base.items()}
    params[sweep] = np.repeat(values, cols).astype(p.dtype)
    return params, np.tile(base_seeds, len(values)), labels, cols


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def grid_png(images: np.ndarray, labels: np.ndarray, class_names, cols: int, title: str,
             row_labels: list[str] | None):
    """A PIL image: a title, then cells of ``cols`` per row, each with its class under it."""
    from PIL import Image, ImageDraw

    n, h, w = images.shape[:3]
    scale = max(1, 64 // max(h, w))
    ch, cw, band = h * scale, w * scale, 14
    rows = math.ceil(n / cols)
    left = HEADER_W if row_labels else 0
    top = TOP
    small, big = _font(11), _font(13)
    width = max(left + cols * (cw + 2) + 2, int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, big)) + 8)
    canvas = Image.new("RGB", (width, top + rows * (ch + band + 2) + 2), (40, 40, 40))
    d = ImageDraw.Draw(canvas)
    d.text((4, 4), title, fill=(255, 255, 255), font=big)
    for i in range(n):
        r, c = divmod(i, cols)
        x, y = left + 2 + c * (cw + 2), top + r * (ch + band + 2)
        cell = images[i]
        img = Image.fromarray(cell if cell.ndim == 3 else np.repeat(cell[:, :, None], 3, axis=2), "RGB")
        canvas.paste(img.resize((cw, ch), Image.NEAREST), (x, y))
        k = int(labels[i])
        name = class_names[k] if class_names and k < len(class_names) else str(k)
        d.text((x + 1, y + ch + 1), name[: max(2, cw // 6)], fill=(230, 230, 120), font=small)
    for r, text in enumerate(row_labels or []):
        d.text((4, top + r * (ch + band + 2) + ch // 2 - 6), text[:24], fill=(150, 220, 255), font=small)
    return canvas


def preview(argv: list[str]) -> Path:
    from otfgen.blender_gen import families
    from otfgen.blender_gen.families import scene_space
    from otfgen.blender_gen.worker import Renderer, _configure
    from otfgen.controller import config as config_mod

    own, overrides = parse(argv)
    try:
        n = int(own.get("n", 64))
        steps = int(own.get("steps", 8))
    except ValueError:
        raise PreviewError("n= and steps= take whole numbers") from None
    if not 1 <= n <= MAX_N or steps < 2:
        raise PreviewError(f"need 1 <= n <= {MAX_N} and steps >= 2")
    cfg = config_mod.compose(overrides)
    space = scene_space(cfg)
    family = families.load(cfg.scene.name)
    params, seeds, row_labels, cols = draw(space, n, cfg.seed, own.get("sweep"), steps)
    t0 = time.perf_counter()
    _configure(family, dict(cfg.scene.render))  # Blender families build their scene here
    images, labels = Renderer(family, space).render(params, seeds)
    secs = time.perf_counter() - t0
    sweep = own.get("sweep")
    what = f"sweep {sweep}, {cols} samples per row" if sweep else "uniform over the scene's ranges"
    scene = scene_config(overrides)
    shown = scene if scene == cfg.scene.name else f"{scene} (family {cfg.scene.name})"
    title = f"{shown}: {len(labels)} samples, {what}, seed {cfg.seed}"
    png = grid_png(images, labels, getattr(family, "CLASSES", None), cols, title, row_labels)
    # named by the scene config, not the family: fashion2d_wide's grid must not overwrite fashion2d's
    name = f"{scene}-{sweep}.png" if sweep else f"{scene}.png"
    out = Path(own.get("out") or Path("outputs") / "preview" / name)
    out.parent.mkdir(parents=True, exist_ok=True)
    png.save(out)
    log.info("rendered %d samples in %.2f s", len(labels), secs)
    return out


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return 0
    from otfgen.blender_gen.families import UnknownFamily
    from otfgen.blender_gen.space import SpaceError
    from otfgen.blender_gen.worker import RenderSetupError
    from otfgen.configs import cli
    from otfgen.configs.schema import ConfigError

    cli.setup_logging()
    try:
        print(preview(argv))
    except (PreviewError, ConfigError, UnknownFamily, SpaceError, RenderSetupError) as e:
        log.error("otfgen preview: %s", e)
        return cli.CANNOT_RUN
    return 0
