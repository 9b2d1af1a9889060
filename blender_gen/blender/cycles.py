"""Cycles set-up, device choice and in-memory read-back of the rendered frame.

Read-back: Blender does not expose a finished render's pixels to Python in background mode
(``Render Result`` has no pixel buffer there and the compositor's Viewer node is skipped
headless). The render engine itself does see them: ``RenderEngine.get_result()`` returns the
frame's RenderResult right after the engine has drawn it. ``install_capture`` wraps the Cycles
engine's ``render`` once per process so that, after each frame, the Combined pass is copied with
``foreach_get`` into a float32 numpy buffer. No file is written at any point.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from otfgen.blender_gen.blender import BlenderDeviceError, require_bpy

log = logging.getLogger("otfgen.blender")

DEVICES = ("auto", "optix", "cuda", "cpu")
_captured: dict[str, np.ndarray] = {}
_installed = False
STATS = {"readback_s": 0.0, "frames": 0}  # read-back time, for benchmarks/bench_blender.py


def install_capture() -> None:
    """Wrap the Cycles engine so every frame's Combined pass lands in ``_captured['rgba']``."""
    global _installed
    if _installed:
        return
    require_bpy()
    import cycles  # Blender's bundled add-on; registered when bpy is imported

    engine_cls = cycles.CyclesRender
    original = engine_cls.render

    def render_and_capture(self, depsgraph):
        original(self, depsgraph)
        result = self.get_result()
        if result is None or not result.layers:
            return
        combined = result.layers[0].passes.get("Combined")
        if combined is None:
            return
        t0 = time.perf_counter()
        buf = np.empty(len(combined.rect) * 4, np.float32)
        combined.rect.foreach_get(buf)
        _captured["rgba"] = buf
        STATS["readback_s"] += time.perf_counter() - t0
        STATS["frames"] += 1

    engine_cls.render = render_and_capture
    _installed = True


def render_frame(scene) -> np.ndarray:
    """Render ``scene`` with its engine; float32 [H, W, 4] linear RGBA, row 0 at the top."""
    bpy = require_bpy()
    _captured.pop("rgba", None)
    with bpy.context.temp_override(scene=scene):  # each family renders its own scene
        bpy.ops.render.render(write_still=False, scene=scene.name)
    buf = _captured.pop("rgba", None)
    h, w = scene.render.resolution_y, scene.render.resolution_x
    if buf is None or buf.size != h * w * 4:
        raise RuntimeError(f"Cycles produced no frame of {w}x{h} (got {None if buf is None else buf.size} values)")
    return buf.reshape(h, w, 4)[::-1]


def use_device(scene, device: str = "auto") -> str:
    """Point Cycles at ``device`` (auto: OptiX, then CUDA, then CPU); returns what it got.

    An explicit GPU that is not there is an error, never a silent fallback to the CPU.
    """
    bpy = require_bpy()
    device = device.lower()
    if device not in DEVICES:
        raise BlenderDeviceError(f"render device must be one of {DEVICES}, got '{device}'")
    scene.render.engine = "CYCLES"
    if device == "cpu":
        scene.cycles.device = "CPU"
        return "cpu"
    prefs = bpy.context.preferences.addons["cycles"].preferences
    wanted = ["OPTIX", "CUDA"] if device == "auto" else [device.upper()]
    for kind in wanted:
        try:
            prefs.compute_device_type = kind
        except TypeError:  # this Blender build has no such backend
            continue
        prefs.refresh_devices()
        gpus = [d for d in prefs.devices if d.type == kind]
        if gpus:
            for d in prefs.devices:
                d.use = d.type == kind
            scene.cycles.device = "GPU"
            names = ", ".join(d.name for d in gpus)
            return f"{kind.lower()} ({names})"
    if device != "auto":
        raise BlenderDeviceError(f"render device '{device}' requested but Cycles finds no {device.upper()} "
                                 "device on this machine; use device=auto or device=cpu")
    scene.cycles.device = "CPU"
    return "cpu"


def configure(scene, *, samples: int, width: int, height: int, threads: int = 0, seed: int = 0,
              max_bounces: int = 2, denoise: bool = False) -> None:
    """Cycles settings for many tiny independent images in one frame: few bounces, no adaptivity."""
    r, c = scene.render, scene.cycles
    r.resolution_x, r.resolution_y, r.resolution_percentage = width, height, 100
    r.film_transparent = False
    # Every frame is synced from scratch. Persistent data (re-sync only what changed, refit the
    # BVH) saves ~4% on digits3d frames and nothing measurable on shapes3d, but makes a frame's
    # bytes depend on the frames before it: a full test run once saw the same request render one
    # pixel one grey level apart (tests/test_families.py renders it after another request).
    r.use_persistent_data = False
    r.threads_mode = "FIXED" if threads else "AUTO"
    if threads:
        r.threads = threads
    r.use_compositing = False
    r.use_sequencer = False
    r.dither_intensity = 0.0
    c.samples = samples
    c.use_adaptive_sampling = False
    c.use_denoising = denoise
    c.seed = seed
    c.use_animated_seed = False
    c.max_bounces = max_bounces
    c.diffuse_bounces = min(1, max_bounces)
    c.glossy_bounces = min(1, max_bounces)
    c.transmission_bounces = 0
    c.volume_bounces = 0
    c.transparent_max_bounces = 0
    c.caustics_reflective = c.caustics_refractive = False
    c.pixel_filter_type = "BOX"  # a sample's pixels never see a neighbouring cell
    c.filter_width = 1.0
    scene.view_settings.view_transform = "Standard"
