"""A frame of independent cells: one sample per cell, one Cycles render per batch.

Tiny frames are dominated by per-render overhead (scene sync, kernel launch, read-back), so a
Blender family lays ``rows × cols`` sub-scenes out on a plane, looks at them with one
orthographic camera from above, renders once and crops. Cells are one unit apart and each
cell's content stays inside its unit square as seen from the camera. Each cell has its own sun
whose light and shadow linking are restricted to the cell's collection, so a cell is lit only by
its own light and shadowed only by its own objects; families render with no indirect bounces
between cells unless they say otherwise. Cycles allows 64 light-linking sets per scene, so a
frame holds at most 63 cells. Blender rows run bottom-up; ``cycles.render_frame``
returns row 0 at the top, and cell (r, c) covers pixel rows r*px … (r+1)*px − 1.
"""

from __future__ import annotations

import numpy as np

from otfgen.blender_gen.blender import require_bpy


MAX_CELLS = 63  # Cycles allows 64 light-linking sets per scene, one of them the default set


class Grid:
    def __init__(self, rows: int, cols: int, cell_px: int, name: str = "otfgen"):
        if not (1 <= rows * cols <= MAX_CELLS) or cell_px < 4:
            raise ValueError(f"a render grid holds 1..{MAX_CELLS} cells (one light-linking set each) of >= 4 px; "
                             f"got {rows}x{cols} cells of {cell_px} px")
        bpy = require_bpy()
        self.bpy = bpy
        old = bpy.data.scenes.get(name)
        if old is not None:  # a rebuild (other render options): free the previous one first
            free_scene(old)
        # a scene of its own, no factory reset: other families' scenes in this process survive
        self.scene = bpy.data.scenes.new(name)
        self.rows, self.cols, self.px = rows, cols, cell_px
        cam_data = bpy.data.cameras.new(f"{name}-camera")
        cam_data.type = "ORTHO"
        cam_data.ortho_scale = float(max(rows, cols))
        cam_data.sensor_fit = "AUTO"
        cam_data.clip_start, cam_data.clip_end = 0.1, 100.0
        cam = bpy.data.objects.new(f"{name}-camera", cam_data)
        cam.location = (cols / 2.0, -rows / 2.0, 20.0)  # looking straight down (-z)
        self.scene.collection.objects.link(cam)
        self.scene.camera = cam
        world = bpy.data.worlds.new(f"{name}-world")
        if world.node_tree is None:  # Blender < 5 (5.x worlds always have nodes)
            world.use_nodes = True
        world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.0
        self.scene.world = world
        self.cells = [self._new_cell(i) for i in range(rows * cols)]

    @property
    def capacity(self) -> int:
        return self.rows * self.cols

    def centre(self, i: int) -> tuple[float, float]:
        r, c = divmod(i, self.cols)
        return c + 0.5, -(r + 0.5)

    def _new_cell(self, i: int) -> dict:
        bpy = self.bpy
        coll = bpy.data.collections.new(f"cell{i:04d}")
        self.scene.collection.children.link(coll)
        sun = bpy.data.lights.new(f"sun{i:04d}", "SUN")
        sun.angle = 0.0  # hard shadows: a quarter less tracing time than a 5° disc at 4 samples/px
        sun_obj = bpy.data.objects.new(f"sun{i:04d}", sun)
        self.scene.collection.objects.link(sun_obj)  # the light itself lives outside the cell
        sun_obj.light_linking.receiver_collection = coll
        sun_obj.light_linking.blocker_collection = coll
        return {"collection": coll, "sun": sun_obj}

    def alive(self) -> bool:
        """False once someone removed this scene (e.g. a factory reset in the same process)."""
        try:
            self.scene.name
        except ReferenceError:
            return False
        return True

    def crop(self, frame: np.ndarray, n: int) -> np.ndarray:
        """[H, W, C] frame -> [n, px, px, C] cells in row-major order."""
        p = self.px
        cells = frame.reshape(self.rows, p, self.cols, p, -1).transpose(0, 2, 1, 3, 4)
        return cells.reshape(self.rows * self.cols, p, p, -1)[:n]


def in_frames(render_chunk, params: dict, seeds: np.ndarray, capacity: int, image_shape: tuple) -> np.ndarray:
    """Render a batch of any size as consecutive frames of at most ``capacity`` cells, in order."""
    out = np.empty((len(seeds),) + tuple(image_shape), np.uint8)
    for s in range(0, len(seeds), capacity):
        sl = slice(s, min(s + capacity, len(seeds)))
        out[sl] = render_chunk({k: np.asarray(v)[sl] for k, v in params.items()}, seeds[sl])
    return out


def free_scene(scene, extra=()) -> None:
    """Remove a scene with its objects, their data and materials, collections and world."""
    bpy = require_bpy()
    ids = {scene, *extra}
    if scene.world is not None:
        ids.add(scene.world)
    for ob in scene.objects:
        ids.add(ob)
        if ob.data is not None:
            ids.add(ob.data)
    ids.update(scene.collection.children)
    for block in list(ids):
        for m in getattr(block, "materials", ()):
            if m is not None:
                ids.add(m)
    bpy.data.batch_remove(ids)


def sun_rotation(azimuth_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
    """Euler XYZ (radians) pointing a sun from (azimuth, elevation) at the cell: [B, 3]."""
    # a sun shines along its local -z; tilt it away from vertical by (90° - elevation), then turn
    tilt = np.deg2rad(90.0 - np.asarray(elevation_deg, np.float64))
    az = np.deg2rad(np.asarray(azimuth_deg, np.float64))
    return np.stack([tilt, np.zeros_like(tilt), az], -1)


def light_colour(warmth: np.ndarray) -> np.ndarray:
    """-1 cool blue … 0 white … +1 warm orange, as linear RGB [B, 3]."""
    w = np.asarray(warmth, np.float64)[:, None]
    warm = np.array([1.0, 0.72, 0.42])
    cool = np.array([0.62, 0.78, 1.0])
    return np.where(w >= 0, 1 + w * (warm - 1), 1 - w * (cool - 1))


def object_attribute(node_tree, name: str):
    """An Attribute node reading the object's custom property ``name``: one material shared by all
    cells, each cell's values set on its objects."""
    a = node_tree.nodes.new("ShaderNodeAttribute")
    a.attribute_type, a.attribute_name = "OBJECT", name
    return a


def check_options(options: dict, defaults: dict, cell_px: int) -> dict:
    """A Blender family's render options merged over its defaults, or a ValueError saying which."""
    from otfgen.blender_gen.blender import BlenderDeviceError
    from otfgen.blender_gen.blender.cycles import DEVICES

    unknown = set(options) - set(defaults)
    if unknown:
        raise ValueError(f"unknown render options {sorted(unknown)}; known: {sorted(defaults)}")
    opts = {**defaults, **options}
    if str(opts["device"]).lower() not in DEVICES:
        raise BlenderDeviceError(f"render option device must be one of {DEVICES}, got {opts['device']!r}")
    for key in ("samples", "rows", "cols", "cell_px", "threads"):
        if not isinstance(opts[key], int) or opts[key] < (0 if key == "threads" else 1):
            raise ValueError(f"render option {key} must be a positive integer, got {opts[key]!r}")
    if opts["cell_px"] != cell_px:
        raise ValueError(f"render option cell_px must be {cell_px} (the family's image size)")
    if opts["rows"] * opts["cols"] > MAX_CELLS:
        raise ValueError(f"render options rows × cols must be at most {MAX_CELLS} cells (one Cycles light-linking "
                         f"set each), got {opts['rows']}×{opts['cols']}")
    return opts


def blur_and_noise(img: np.ndarray, blur: np.ndarray, noise: np.ndarray, seeds: np.ndarray, stream: str) -> np.ndarray:
    """Display values [n, H, W(, C)] in [0, 1] -> per-sample Gaussian camera blur (std ``blur``
    pixels, 7 taps, separable) and Gaussian sensor noise (std ``noise``, drawn from each sample's
    seed) -> uint8."""
    from otfgen.blender_gen import rng

    n, H, W = img.shape[:3]
    tail = (1,) * (img.ndim - 1)
    if np.any(blur > 0):
        x = np.arange(-3, 4, dtype=np.float64)
        k = np.exp(-0.5 * (x[None] / np.maximum(blur[:, None], 1e-6)) ** 2)
        k[blur <= 0] = (x == 0)
        k /= k.sum(1, keepdims=True)
        pad = np.pad(img, ((0, 0), (3, 3), (3, 3)) + ((0, 0),) * (img.ndim - 3), mode="edge")
        rows = sum(k[:, j].reshape(n, *tail) * pad[:, j: j + H] for j in range(7))
        img = sum(k[:, j].reshape(n, *tail) * rows[:, :, j: j + W] for j in range(7))
    z = rng.normal(seeds, stream, img[0].size).reshape(img.shape).astype(np.float64)
    img = img + noise.reshape(n, *tail) * z
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
