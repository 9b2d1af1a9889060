"""digits3d: the ten digits as 3D tubes rendered with Blender Cycles, 28×28 grayscale.

Each digit is a stroke skeleton of mnist2d (same classes and style variants) jittered, slanted
and swept into a tube (a bevelled curve), posed in 3D, with a physically based material,
standing over a procedural background (4D noise between two grey levels), lit by one sun of
chosen direction, strength and colour. The camera looks straight down.

Real MNIST digits were made by a fixed procedure (LeCun et al. 1998), and a reader trained on
anything else reads them worse; so does this family, as mnist2d does:

- size and place: the posed digit is scaled and moved so that the camera sees its ink box
  fitted into ``box``×``box`` pixels keeping its aspect, and its ink's centre of mass on the
  frame's centre (mnist2d's ``fit_scale`` and ``centre_of_mass_offset`` on the projected pen
  path, before rendering, so no render noise moves a digit); the tube's width is given in output
  pixels, as mnist2d's pen is;
- levels: MNIST's scans are light ink on an exactly black ground with the stroke's core at full
  level, so each render's background level (its median) goes to black and its ink level (the
  95th percentile) to white, clipped, before blur and sensor noise.

Many samples per render: the frame is a grid of cells (``blender_gen.blender.grid``), one
digit per cell, each lit only by its own sun, rendered with direct light only so that cells do
not see each other. The scene is built once per process; a request only writes parameters
into existing data-blocks (curve points, transforms, custom properties) and renders.

Determinism: the same (params, seeds) arrays give the same bytes on the same render device
(Cycles' noise pattern is seeded per pixel, so a sample's path-tracing noise depends on the cell
it lands in; its geometry, materials, lights, blur and sensor noise depend only on its own
parameters and seed). ``otfgen replay`` re-renders whole requests, so runs replay exactly.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from otfgen.blender_gen import rng
from otfgen.blender_gen.space import floats, ints
from otfgen.blender_gen.families import batch_labels
from otfgen.blender_gen.families.mnist2d import (_C, _COUNT, _FIRST, SKELETONS, _catmull_rom_rows,
                                                 centre_of_mass_offset, fit_scale)

NAME = "digits3d"
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
LABEL_PARAM = "label"
PER_SAMPLE_PURE = False  # see "Determinism" above
NEEDS_BLENDER = True

# Each parameter: its kind, the widest range it may take (or every choice), default and doc. These
# are the ranges the renderer is known to draw well; nothing wider has been checked. A scene config
# may narrow them.
SPACE = {
    "label": ints(0, 9, 0, "the digit class"),
    "variant": floats(0.0, 1.0, 0.0, "style variant of the class's stroke skeleton (as in mnist2d)"),
    "jitter": floats(0.0, 0.06, 0.02, "std of control-point displacement, in digit heights"),
    "aspect": floats(0.6, 1.4, 1.0, "width multiplier of the skeleton"),
    "slant": floats(-0.3, 0.5, 0.15, "shear: horizontal lean per unit height"),
    "thickness": floats(1.0, 5.0, 2.8, "tube diameter, in output pixels"),
    "yaw": floats(-25.0, 25.0, 0.0, "in-plane rotation in degrees, positive clockwise on screen"),
    "pitch": floats(-45.0, 45.0, 0.0, "tilt about the horizontal axis, degrees (foreshortens vertically)"),
    "roll": floats(-45.0, 45.0, 0.0, "tilt about the vertical axis, degrees (foreshortens horizontally)"),
    "box": floats(12.0, 28.0, 20.0, "side of the square, in pixels, the posed digit's ink box is fitted into (MNIST: "
                  "20)"),
    "brightness": floats(0.3, 1.0, 0.9, "albedo value (HSV V) of the digit material"),
    "hue": floats(0.0, 1.0, 0.0, "hue of the digit material"),
    "saturation": floats(0.0, 0.8, 0.0, "saturation of the digit material"),
    "roughness": floats(0.1, 1.0, 0.6, "material roughness (low = glossy highlights)"),
    "bg_level": floats(0.0, 0.35, 0.02, "albedo of the background's light parts"),
    "bg_contrast": floats(0.0, 1.0, 0.5, "how much darker the background's dark parts are (0 = flat)"),
    "bg_scale": floats(1.0, 20.0, 5.0, "scale of the background noise texture (higher = finer)"),
    "light_elevation": floats(25.0, 90.0, 70.0, "sun elevation above the ground in degrees (azimuth is drawn from "
                              "the seed)"),
    "light_strength": floats(1.5, 6.0, 3.5, "sun irradiance (W/m²)"),
    "light_warmth": floats(-1.0, 1.0, 0.0, "light colour: -1 cool blue, 0 white, +1 warm orange"),
    "blur": floats(0.0, 1.2, 0.3, "Gaussian camera blur std, pixels"),
    "noise": floats(0.0, 0.06, 0.01, "sensor noise std, full scale"),
}

log = logging.getLogger("otfgen.digits3d")

# render options (the scene YAML's `render:` block, sent by the controller in the welcome)
OPTIONS = {"device": "auto", "samples": 4, "rows": 7, "cols": 9, "cell_px": IMAGE_SHAPE[0], "threads": 0}

_PER_SEG = 6  # curve points per skeleton segment (Catmull-Rom)
# the least ink-over-background step (display values) that levels stretch to full scale: a digit
# barely distinguishable from its ground stays faint instead of turning render noise into ink
_MIN_CONTRAST = 0.1
_ENTRIES = [(d, sk) for d in range(NUM_CLASSES) for sk in SKELETONS[d]]  # mnist2d's template order


def strokes(params: dict, seeds: np.ndarray) -> list[list[np.ndarray]]:
    """Per sample: a list of strokes, each [M, 2] in the digit's plane (x right, y up), digit
    height 1 centred at 0, after style variant, jitter, slant and aspect."""
    B = len(seeds)
    label = np.asarray(params[LABEL_PARAM], np.int64)
    variant = np.clip(np.asarray(params["variant"], np.float64), 0.0, 1.0 - 1e-9)
    tpl = _FIRST[label] + np.minimum((variant * _COUNT[label]).astype(np.int64), _COUNT[label] - 1)
    jit = rng.normal(seeds, "jitter", 2 * _C).reshape(B, _C, 2).astype(np.float64)
    out = []
    for b in range(B):
        cps, strokes_ = _ENTRIES[tpl[b]][1]
        c = np.asarray(cps, np.float64) + float(params["jitter"][b]) * jit[b, : len(cps)]
        c[:, 1] = -c[:, 1]  # skeletons are y-down
        c -= (c.min(0) + c.max(0)) / 2
        c /= max(np.ptp(c[:, 1]), 1e-3)
        c[:, 0] *= float(params["aspect"][b])
        c[:, 0] += float(params["slant"][b]) * c[:, 1]
        out.append([_catmull_rom_rows(idx, closed, len(c), _PER_SEG) @ c for idx, closed in strokes_])
    return out


def _rotation(pitch: float, roll: float, yaw: float) -> np.ndarray:
    """The object's rotation matrix as ``_Scene`` sets it: Blender's XYZ Euler (pitch, roll, -yaw)."""
    ax, ay, az = math.radians(pitch), math.radians(roll), math.radians(-yaw)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def mnist_pose(paths: list[list[np.ndarray]], f: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNIST normalisation of the posed digits, as the camera (orthographic, straight down) sees
    them: per sample the scale in output pixels per digit-plane unit, the tube's radius in
    digit-plane units and the offset [n, 2] in pixels (x right, y up) of the object's origin from
    the cell's centre that puts the ink's centre of mass there."""
    n = len(paths)
    scale, radius, offset = np.empty(n), np.empty(n), np.empty((n, 2))
    for b, strokes_ in enumerate(paths):
        rot = _rotation(f["pitch"][b], f["roll"][b], f["yaw"][b])[:2, :2]  # the skeleton lies at z = 0
        proj = [s @ rot.T for s in strokes_]
        pts = np.concatenate(proj)
        extent = max(float(np.ptp(pts[:, 0])), float(np.ptp(pts[:, 1])), 1e-3)
        half = f["thickness"][b] / 2.0
        k = float(fit_scale(extent, f["box"][b], half))
        # ink per point: the projected path length it stands for (a tube's silhouette is about as
        # wide, its diameter, however its axis is turned)
        mass = []
        for q in proj:
            seg = np.r_[np.hypot(*np.diff(q, axis=0).T), 0.0]
            mass.append(0.5 * (seg + np.r_[0.0, seg[:-1]]))
        dx, dy = centre_of_mass_offset(k * pts[None, :, 0], k * pts[None, :, 1], np.concatenate(mass)[None], 0.0, 0.0)
        scale[b], radius[b], offset[b] = k, half / k, (float(dx[0, 0]), float(dy[0, 0]))
    return scale, radius, offset


class _Scene:
    """The Blender scene of one process: a grid of cells, each a tube over a background plane."""

    def __init__(self, options: dict):
        from otfgen.blender_gen.blender import cycles, grid

        self.opts = dict(options)
        rows, cols = int(self.opts["rows"]), int(self.opts["cols"])
        self.grid = grid.Grid(rows, cols, int(self.opts["cell_px"]), name=NAME)
        bpy, scene = self.grid.bpy, self.grid.scene
        self.device = cycles.use_device(scene, str(self.opts["device"]))
        cycles.configure(scene, samples=int(self.opts["samples"]), width=cols * self.grid.px, height=rows * self.grid.px,
                         threads=int(self.opts["threads"]), max_bounces=0)
        cycles.install_capture()
        log.info("digits3d: Cycles on %s, %dx%d cells of %d px, %d samples/px", self.device, rows, cols,
                 self.grid.px, int(self.opts["samples"]))
        self.digit_mat = self._digit_material(bpy)
        self.bg_mat = self._background_material(bpy)
        plane = bpy.data.meshes.new("cell-plane")
        plane.from_pydata([(-.5, -.5, 0), (.5, -.5, 0), (.5, .5, 0), (-.5, .5, 0)], [], [(0, 1, 2, 3)])
        plane.materials.append(self.bg_mat)
        self.digits, self.planes = [], []
        for i, cell in enumerate(self.grid.cells):
            x, y = self.grid.centre(i)
            bg = bpy.data.objects.new(f"bg{i:04d}", plane)
            bg.location = (x, y, 0.0)
            cell["collection"].objects.link(bg)
            cu = bpy.data.curves.new(f"digit{i:04d}", "CURVE")
            cu.dimensions = "3D"
            cu.bevel_mode = "ROUND"
            cu.bevel_resolution = 2
            cu.resolution_u = 1
            cu.use_fill_caps = True
            cu.materials.append(self.digit_mat)
            ob = bpy.data.objects.new(f"digit{i:04d}", cu)
            ob.location = (x, y, 0.3)
            cell["collection"].objects.link(ob)
            self.digits.append(ob)
            self.planes.append(bg)

    @staticmethod
    def _digit_material(bpy):
        m = bpy.data.materials.new("digit")
        m.use_nodes = True
        nt = m.node_tree
        bsdf = nt.nodes["Principled BSDF"]
        info = nt.nodes.new("ShaderNodeObjectInfo")
        nt.links.new(info.outputs["Color"], bsdf.inputs["Base Color"])
        from otfgen.blender_gen.blender import grid

        nt.links.new(grid.object_attribute(nt, "roughness").outputs["Fac"], bsdf.inputs["Roughness"])
        return m

    @staticmethod
    def _background_material(bpy):
        m = bpy.data.materials.new("background")
        m.use_nodes = True
        nt = m.node_tree
        nt.nodes.remove(nt.nodes["Principled BSDF"])
        bsdf = nt.nodes.new("ShaderNodeBsdfDiffuse")  # matte ground: cheaper than a rough Principled BSDF
        nt.links.new(bsdf.outputs["BSDF"], nt.nodes["Material Output"].inputs["Surface"])
        from otfgen.blender_gen.blender import grid

        attr = {name: grid.object_attribute(nt, name) for name in ("bg_lo", "bg_hi", "bg_scale", "bg_w")}
        noise = nt.nodes.new("ShaderNodeTexNoise")
        noise.noise_dimensions = "4D"
        noise.inputs["Detail"].default_value = 3.0
        nt.links.new(attr["bg_scale"].outputs["Fac"], noise.inputs["Scale"])
        nt.links.new(attr["bg_w"].outputs["Fac"], noise.inputs["W"])
        mix = nt.nodes.new("ShaderNodeMix")
        mix.data_type = "FLOAT"
        nt.links.new(noise.outputs["Fac"], mix.inputs["Factor"])
        nt.links.new(attr["bg_lo"].outputs["Fac"], mix.inputs["A"])
        nt.links.new(attr["bg_hi"].outputs["Fac"], mix.inputs["B"])
        nt.links.new(mix.outputs["Result"], bsdf.inputs["Color"])
        return m

    def render(self, params: dict, seeds: np.ndarray) -> np.ndarray:
        from otfgen.blender_gen.blender import grid

        return grid.in_frames(self._render_chunk, params, seeds, self.grid.capacity, IMAGE_SHAPE)

    def _render_chunk(self, p: dict, seeds: np.ndarray) -> np.ndarray:
        from otfgen.blender_gen.blender import cycles, grid

        n = len(seeds)
        f = {k: np.asarray(v, np.float64) for k, v in p.items()}
        paths = strokes(p, seeds)
        px_scale, radius, offset = mnist_pose(paths, f)
        px = float(self.grid.px)  # output pixels per world unit (a cell is one unit wide)
        u = rng.uniform(seeds, "digits3d:scene", 4).astype(np.float64)
        sun_rot = grid.sun_rotation(360.0 * u[:, 0], f["light_elevation"])
        sun_rgb = grid.light_colour(f["light_warmth"])
        hsv_h = f["hue"]
        for i in range(self.grid.capacity):
            ob, bg, sun = self.digits[i], self.planes[i], self.grid.cells[i]["sun"]
            if i >= n:  # unused cell: a fixed empty state, so a short batch renders deterministically
                ob.scale = (0.0, 0.0, 0.0)
                bg["bg_lo"] = bg["bg_hi"] = 0.0
                sun.data.energy = 0.0
                bg.update_tag()
                continue
            cu = ob.data
            cu.splines.clear()
            for pts in paths[i]:
                sp = cu.splines.new("POLY")
                sp.points.add(len(pts) - 1)
                co = np.zeros((len(pts), 4), np.float64)
                co[:, :2], co[:, 3] = pts, 1.0
                sp.points.foreach_set("co", co.ravel())
                sp.use_cyclic_u = False
            size = px_scale[i] / px
            cu.bevel_depth = radius[i]
            ob.scale = (size, size, size)
            x, y = self.grid.centre(i)
            ob.location = (x + offset[i, 0] / px, y + offset[i, 1] / px, 0.3)
            ob.rotation_euler = (math.radians(f["pitch"][i]), math.radians(f["roll"][i]), math.radians(-f["yaw"][i]))
            v = f["brightness"][i]
            sat = f["saturation"][i]
            ob.color = (*_hsv_to_rgb(hsv_h[i], sat, v), 1.0)
            ob["roughness"] = f["roughness"][i]
            lo = f["bg_level"][i]
            bg["bg_lo"], bg["bg_hi"] = lo * (1 - f["bg_contrast"][i]), lo
            bg["bg_scale"] = f["bg_scale"][i]
            bg["bg_w"] = 100.0 * u[i, 1]
            sun.rotation_euler = tuple(sun_rot[i])
            sun.data.energy = f["light_strength"][i]
            sun.data.color = tuple(sun_rgb[i])
            ob.update_tag()  # custom properties are not seen by the depsgraph (and Cycles) otherwise
            bg.update_tag()
        frame = cycles.render_frame(self.grid.scene)
        cells = self.grid.crop(frame, n)[..., :3].astype(np.float64)
        gray = cells @ np.array([0.2126, 0.7152, 0.0722])  # linear luminance
        return _post(gray, f, seeds)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(h % 1.0, s, v)


def _post(gray: np.ndarray, f: dict, seeds: np.ndarray) -> np.ndarray:
    """Linear luminance [n, H, W] -> display values, MNIST's levels, camera blur and sensor noise
    -> uint8."""
    from otfgen.blender_gen.blender import grid

    n = len(gray)
    img = np.clip(gray, 0.0, 1.0) ** (1 / 2.2)
    # levels: the ink box covers well under half the frame, so the median is the background; the
    # 95th percentile lies inside the ink, so the brighter part of the tube becomes the scan's
    # saturated core and its shaded side keeps its grey
    lo, hi = np.percentile(img.reshape(n, -1), [50.0, 95.0], axis=1)[:, :, None, None]
    img = np.clip((img - lo) / np.maximum(hi - lo, _MIN_CONTRAST), 0.0, 1.0)
    return grid.blur_and_noise(img, f["blur"][:n], f["noise"][:n], seeds, "digits3d:sensor")


_scene: _Scene | None = None


def configure(options: dict) -> None:
    """Set render options (device, samples, rows, cols, cell_px, threads) and build the scene now,
    so that a missing bpy or GPU is reported at start-up."""
    global _scene
    from otfgen.blender_gen.blender import grid

    opts = grid.check_options(options, OPTIONS, IMAGE_SHAPE[0])
    if _scene is None or _scene.opts != opts:
        _scene = None
        _scene = _build(opts)  # a failure leaves OPTIONS as they were
    OPTIONS.update(opts)


def _build(opts: dict) -> "_Scene":
    t0 = time.perf_counter()
    scene = _Scene(opts)
    log.info("digits3d: scene built in %.2f s", time.perf_counter() - t0)
    return scene


def render(params: dict[str, np.ndarray], seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    global _scene
    seeds, label = batch_labels(params, seeds, NUM_CLASSES, LABEL_PARAM)
    if len(seeds) == 0:
        return np.zeros((0,) + IMAGE_SHAPE, np.uint8), label.copy()
    if _scene is None:
        _scene = _build(OPTIONS)
    return _scene.render(params, seeds), label.copy()
