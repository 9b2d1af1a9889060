"""shapes3d: procedural 3D objects on a turntable, rendered with Blender Cycles, 64×64 RGB.

Ten classes of procedural solids (``CLASSES``), each built once per process as a mesh: a 2D
outline (square, circle, star, cross) swept along a profile of (outline scale, height) points, so
that cube, pyramid, sphere, capsule, cone, cylinder, tube, torus, star prism and cross prism
share one generator. Per sample the object is modified by a bevel of its sharp edges, a twist
and a taper about its vertical axis (modifiers on the cell's object), stretched by an aspect
ratio, painted with a procedural material (two colours mixed by 3D noise, bump, roughness,
metallic), stood on a round floor disc with its own noise texture, lit by one sun of chosen
direction, strength and colour plus an ambient term, and seen from a camera pose (elevation,
azimuth, roll) in front of a procedural environment (a sky gradient from horizon to zenith over a
noise-textured ground, whose horizon moves with the camera's elevation and roll). Blur and
sensor noise are applied after the render.

How the pose works: the grid's camera (``blender_gen.blender.grid``) is orthographic and looks
straight down, so a camera pose is expressed by turning the cell's content — object and floor
disc, parented to one pivot at the object's centre — by the inverse of the camera rotation. The
object fits in a sphere of radius 0.42 around the pivot and the disc is shrunk as needed so its
projection stays inside the cell's 1×1 footprint: nothing ever reaches a neighbouring cell. The
environment is a per-cell backdrop plane below everything, unlit (emission only, not a light
source, casts no shadow), whose shader draws sky and ground from custom properties.

Many samples per render: one object per cell of a grid (≤ 63 cells, one light-linking set each),
each cell lit only by its own sun. Rendered with ``max_bounces=0`` (direct light only), so cells
never see each other; the ambient term is an emission added to the object and floor materials
(excluded from light sampling), not bounced light. The scene is built once per process; a request
only writes parameters into existing data-blocks: ``obj.data`` switches between the prebuilt
class meshes, modifier settings, transforms, ``obj.color`` and custom properties read by the
shared materials through OBJECT Attribute nodes.

Own scene: ``grid.Grid`` resets Blender to factory settings, which would delete the scene of
another Blender family rendered in the same process (the contract tests interleave them), so this
family lays the same grid out in a new scene of its own, renders it with a context override, and
rebuilds it if someone else's reset removed it.

Determinism: the same (params, seeds) arrays give the same bytes on the same render device
(Cycles' noise pattern is seeded per pixel, so a sample's path-tracing noise depends on the cell
it lands in; its geometry, materials, lights, blur and sensor noise depend only on its own
parameters and seed).
"""

from __future__ import annotations

import colorsys
import logging
import math
import time

import numpy as np

from otfgen.blender_gen import rng
from otfgen.blender_gen.space import floats, ints
from otfgen.blender_gen.blender import cycles, grid  # neither imports bpy until used
from otfgen.blender_gen.families import batch_labels

NAME = "shapes3d"
IMAGE_SHAPE = (64, 64, 3)
CLASSES = ("cube", "sphere", "cylinder", "cone", "torus", "capsule", "pyramid", "star_prism", "tube", "cross_prism")
NUM_CLASSES = len(CLASSES)
LABEL_PARAM = "label"
PER_SAMPLE_PURE = False  # see "Determinism" above
NEEDS_BLENDER = True

# Each parameter: its kind, the widest range it may take (or every choice), default and doc. These
# are the ranges the renderer is known to draw well; nothing wider has been checked. A scene config
# may narrow them.
#
# Classes (label): every mesh is a 2D outline swept along a profile, normalised to fit a unit
# sphere around its mid-height and standing on its base:
#   0 cube         square outline, straight walls
#   1 sphere       circle outline, half-circle profile
#   2 cylinder     circle outline, straight walls, flat caps
#   3 cone         circle outline narrowing to an apex
#   4 torus        circle outline, circular profile around a ring (a doughnut lying flat)
#   5 capsule      circle outline, straight walls with hemispherical ends
#   6 pyramid      square base narrowing to an apex
#   7 star_prism   five-pointed star outline, straight walls (a flat star)
#   8 tube         circle outline, hollow: outer and inner wall joined by flat rims (a pipe / ring)
#   9 cross_prism  plus-sign outline, straight walls (a flat cross)
SPACE = {
    "label": ints(0, 9, 0, "the object class (see the list above)"),
    "size": floats(0.6, 1.0, 0.85, "object size: radius of its bounding sphere as a fraction of 0.42 cell widths"),
    "aspect": floats(0.6, 1.6, 1.0, "height-to-width stretch (>1 taller and slimmer, <1 flatter)"),
    "bevel": floats(0.0, 0.12, 0.03, "rounding of sharp edges (bevel width, in bounding-sphere radii; no effect on "
                    "smooth classes)"),
    "twist": floats(-120.0, 120.0, 0.0, "twist about the vertical axis from base to top, degrees"),
    "taper": floats(0.0, 0.7, 0.0, "how much the object narrows towards its top (0 = none, 0.7 = top at 30% width)"),
    "azimuth": floats(0.0, 360.0, 30.0, "turn of the object about its vertical axis (the camera's azimuth), degrees"),
    "elevation": floats(5.0, 90.0, 25.0, "camera elevation above the floor, degrees (90 = straight down; below ~35 "
                        "the sky shows)"),
    "roll": floats(-25.0, 25.0, 0.0, "camera roll about its viewing axis, degrees (turns object, floor and horizon)"),
    "hue": floats(0.0, 1.0, 0.02, "hue of the object's main colour"),
    "saturation": floats(0.0, 1.0, 0.7, "saturation of the object's colours"),
    "value": floats(0.15, 0.95, 0.7, "albedo (HSV value) of the object's main colour"),
    "pattern_hue": floats(-0.5, 0.5, 0.1, "hue offset of the material's second (darker) colour"),
    "pattern_contrast": floats(0.0, 1.0, 0.5, "how much of the second colour the noise pattern mixes in (0 = plain)"),
    "pattern_scale": floats(1.0, 12.0, 4.0, "scale of the material's noise pattern (higher = finer)"),
    "roughness": floats(0.05, 1.0, 0.5, "material roughness (low = sharp glossy highlights)"),
    "metallic": floats(0.0, 1.0, 0.0, "material metalness (1 = coloured specular, no diffuse)"),
    "bump": floats(0.0, 1.0, 0.3, "strength of the surface bump from the noise pattern"),
    "floor_size": floats(0.5, 1.0, 0.9, "radius of the floor disc the object stands on, as a fraction of the largest "
                         "that stays in the cell"),
    "ground_hue": floats(0.0, 1.0, 0.1, "hue of the floor and of the distant ground"),
    "ground_saturation": floats(0.0, 0.7, 0.3, "saturation of the floor and ground"),
    "ground_value": floats(0.05, 0.6, 0.35, "albedo of the floor and ground's light parts"),
    "ground_contrast": floats(0.0, 0.9, 0.5, "how much darker the ground's dark noise parts are (0 = flat)"),
    "ground_scale": floats(1.0, 15.0, 4.0, "scale of the floor and ground noise texture (higher = finer)"),
    "sky_hue": floats(0.0, 1.0, 0.6, "hue of the sky's zenith (the horizon is paler and slightly shifted)"),
    "sky_saturation": floats(0.0, 0.9, 0.5, "saturation of the sky"),
    "sky_brightness": floats(0.1, 1.0, 0.7, "radiance of the sky"),
    "light_azimuth": floats(0.0, 360.0, 210.0, "sun direction around the scene's vertical axis, degrees"),
    "light_elevation": floats(20.0, 90.0, 50.0, "sun elevation above the floor, degrees"),
    "light_strength": floats(1.5, 5.0, 3.0, "sun irradiance (W/m²)"),
    "light_warmth": floats(-1.0, 1.0, 0.0, "sun colour: -1 cool blue, 0 white, +1 warm orange"),
    "ambient": floats(0.0, 0.6, 0.25, "sky-coloured ambient light on object and floor (fill for the shadowed sides)"),
    "blur": floats(0.0, 1.2, 0.5, "Gaussian camera blur std, pixels"),
    "noise": floats(0.0, 0.05, 0.01, "sensor noise std per channel, full scale"),
}

log = logging.getLogger("otfgen.shapes3d")

# render options (the scene YAML's `render:` block, sent by the controller in the welcome)
OPTIONS = {"device": "auto", "samples": 4, "rows": 7, "cols": 9, "cell_px": IMAGE_SHAPE[0], "threads": 0}

RADIUS = 0.42  # the object (any pose, any modification) stays inside this sphere around its pivot
_HALF_FOV = math.radians(35.0)  # the virtual camera's half field of view: where the horizon appears


# ----------------------------------------------------------------------------- class meshes

def _densify(pts: np.ndarray, step: float, closed: bool) -> np.ndarray:
    """Insert points along a polyline [m, 2] so that no segment is longer than ``step``."""
    out = []
    n = len(pts) if closed else len(pts) - 1
    for i in range(n):
        a, b = pts[i], pts[(i + 1) % len(pts)]
        k = max(1, int(math.ceil(np.linalg.norm(b - a) / step)))
        out.append(a + (b - a) * np.linspace(0.0, 1.0, k, endpoint=False)[:, None])
    if not closed:
        out.append(pts[-1:])
    return np.concatenate(out)


def _polygon(k: int, r_in: float = 1.0, phase: float = 0.0) -> np.ndarray:
    """Regular polygon (r_in == 1) or star (alternating radius 1 / r_in) outline [k or 2k, 2]."""
    if r_in == 1.0:
        a = phase + 2 * np.pi * np.arange(k) / k
        return np.stack([np.cos(a), np.sin(a)], -1)
    a = phase + np.pi * np.arange(2 * k) / k
    r = np.where(np.arange(2 * k) % 2 == 0, 1.0, r_in)
    return np.stack([r * np.cos(a), r * np.sin(a)], -1)


def _arc(c: tuple, r: float, a0: float, a1: float, n: int) -> np.ndarray:
    a = np.linspace(a0, a1, n)
    return np.stack([c[0] + r * np.cos(a), c[1] + r * np.sin(a)], -1)


def _class_geometry(name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """(outline [k, 2], profile [m, 2] of (outline scale, z), profile closed?) of a class."""
    square = _densify(_polygon(4, phase=np.pi / 4) / math.sqrt(0.5) * 0.5, 0.25, True)  # side 1
    circle = _polygon(40)
    col = lambda *p: np.array(p, np.float64)  # noqa: E731
    if name == "cube":
        return square, col((0, 0), (1, 0), (1, 1), (0, 1)), False
    if name == "pyramid":
        return _polygon(4, phase=np.pi / 4), col((0, 0), (1, 0), (0, 1.5)), False
    if name == "sphere":
        return circle, _arc((0, 1), 1, -np.pi / 2, np.pi / 2, 20), False
    if name == "capsule":
        return circle, np.concatenate([_arc((0, 1), 1, -np.pi / 2, 0, 8), _arc((0, 2.4), 1, 0, np.pi / 2, 8)]), False
    if name == "cylinder":
        return circle, col((0, 0), (1, 0), (1, 1.9), (0, 1.9)), False
    if name == "cone":
        return circle, col((0, 0), (1, 0), (0, 2.2)), False
    if name == "tube":
        return circle, col((1, 0), (1, 1.0), (0.62, 1.0), (0.62, 0)), True
    if name == "torus":
        a = np.linspace(-np.pi, np.pi, 20, endpoint=False)
        return circle, np.stack([1 + 0.4 * np.cos(a), 0.4 + 0.4 * np.sin(a)], -1) / [1.4, 1], True
    if name == "star_prism":
        return _densify(_polygon(5, 0.45, np.pi / 2), 0.3, True), col((0, 0), (1, 0), (1, 0.6), (0, 0.6)), False
    if name == "cross_prism":
        w = 0.32
        cross = np.array([(w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1), (-w, -w), (-1, -w), (-1, w),
                          (-w, w), (-w, 1), (w, 1)])
        return _densify(cross, 0.3, True), col((0, 0), (1, 0), (1, 0.6), (0, 0.6)), False
    raise KeyError(name)


def _sweep(outline: np.ndarray, profile: np.ndarray, closed: bool) -> tuple[np.ndarray, list]:
    """Vertices and quads of an outline swept along a profile (outline scale r, height z).

    The profile is densified along z so twist and taper bend the walls smoothly. Rings with
    r == 0 are poles; the caller merges their coincident vertices."""
    prof = _densify(profile, 0.12, closed)
    k, m = len(outline), len(prof)
    verts = (prof[:, None, 0, None] * outline[None]).reshape(-1, 2)
    verts = np.concatenate([verts, np.repeat(prof[:, 1], k)[:, None]], 1)
    faces = []
    for j in range(m if closed else m - 1):
        j2 = (j + 1) % m
        for i in range(k):
            i2 = (i + 1) % k
            faces.append((j * k + i, j * k + i2, j2 * k + i2, j2 * k + i))
    return verts, faces


def _build_mesh(bpy, name: str):
    import bmesh

    outline, profile, closed = _class_geometry(name)
    verts, faces = _sweep(outline, profile, closed)
    # normalise: base at z = 0, centred in x/y, inside a unit sphere around the mid-height point
    verts[:, 2] -= verts[:, 2].min()
    h = verts[:, 2].max()
    centre = np.array([0.0, 0.0, h / 2])
    verts /= np.linalg.norm(verts - centre, axis=1).max()
    me = bpy.data.meshes.new(f"{NAME}-{name}")
    me.from_pydata(verts.tolist(), [], faces)
    bm = bmesh.new()
    bm.from_mesh(me)
    bmesh.ops.remove_doubles(bm, verts=bm.verts, dist=1e-6)
    bmesh.ops.dissolve_degenerate(bm, edges=bm.edges, dist=1e-6)
    bmesh.ops.recalc_face_normals(bm, faces=bm.faces)
    bm.to_mesh(me)
    bm.free()
    me.shade_smooth()
    me.set_sharp_from_angle(angle=math.radians(35.0))
    me["height"] = float(verts[:, 2].max())
    return me


# ----------------------------------------------------------------------------- materials

def _math(nt, op: str, a, b=None):
    n = nt.nodes.new("ShaderNodeMath")
    n.operation = op
    for i, v in enumerate((a, b)):
        if v is None:
            continue
        if isinstance(v, (int, float)):
            n.inputs[i].default_value = float(v)
        else:
            nt.links.new(v, n.inputs[i])
    return n.outputs[0]


def _mix_rgb(nt, fac, a, b):
    n = nt.nodes.new("ShaderNodeMix")
    n.data_type = "RGBA"
    nt.links.new(fac, n.inputs["Factor"])
    nt.links.new(a, n.inputs["A"])
    nt.links.new(b, n.inputs["B"])
    return n.outputs["Result"]


def _noise(nt, vector, scale, offset, detail: float = 3.0):
    """3D noise at (vector + offset): the per-sample offset moves the pattern (cheaper than 4D noise)."""
    add = nt.nodes.new("ShaderNodeVectorMath")
    add.operation = "ADD"
    nt.links.new(vector, add.inputs[0])
    nt.links.new(offset, add.inputs[1])
    n = nt.nodes.new("ShaderNodeTexNoise")
    n.noise_dimensions = "3D"
    n.inputs["Detail"].default_value = detail
    nt.links.new(add.outputs[0], n.inputs["Vector"])
    nt.links.new(scale, n.inputs["Scale"])
    return n.outputs["Fac"]


def _no_light_sampling(m) -> None:
    try:  # emission used as ambient / environment, never as a light other cells could see
        m.cycles.emission_sampling = "NONE"
    except AttributeError:
        pass


def _object_material(bpy):
    """Principled BSDF: obj.color and col_b mixed by 3D noise, bump, roughness, metallic, ambient."""
    m = bpy.data.materials.new(f"{NAME}-object")
    if m.node_tree is None:  # Blender < 5 (in 5.x every material has nodes; use_nodes is deprecated)
        m.use_nodes = True
    nt = m.node_tree
    bsdf = nt.nodes["Principled BSDF"]
    tc = nt.nodes.new("ShaderNodeTexCoord")
    info = nt.nodes.new("ShaderNodeObjectInfo")
    a = {n: grid.object_attribute(nt, n)
         for n in ("col_b", "contrast", "pat_scale", "pat_w", "roughness", "metallic", "bump", "ambient")}
    fac = _noise(nt, tc.outputs["Object"], a["pat_scale"].outputs["Fac"], a["pat_w"].outputs["Vector"], 3.0)
    mr = nt.nodes.new("ShaderNodeMapRange")
    mr.interpolation_type = "SMOOTHSTEP"
    mr.inputs["From Min"].default_value, mr.inputs["From Max"].default_value = 0.3, 0.7
    nt.links.new(fac, mr.inputs["Value"])
    t = _math(nt, "MULTIPLY", mr.outputs["Result"], a["contrast"].outputs["Fac"])
    base = _mix_rgb(nt, t, info.outputs["Color"], a["col_b"].outputs["Color"])
    nt.links.new(base, bsdf.inputs["Base Color"])
    nt.links.new(a["roughness"].outputs["Fac"], bsdf.inputs["Roughness"])
    nt.links.new(a["metallic"].outputs["Fac"], bsdf.inputs["Metallic"])
    bump = nt.nodes.new("ShaderNodeBump")
    bump.inputs["Distance"].default_value = 0.05
    nt.links.new(a["bump"].outputs["Fac"], bump.inputs["Strength"])
    nt.links.new(fac, bump.inputs["Height"])
    nt.links.new(bump.outputs["Normal"], bsdf.inputs["Normal"])
    _ambient(nt, bsdf, base, a["ambient"].outputs["Color"])
    _no_light_sampling(m)
    return m


def _ambient(nt, bsdf, base, ambient) -> None:
    """Ambient light as emission: the base colour times the cell's ambient colour (no light sampling)."""
    amb = nt.nodes.new("ShaderNodeMix")
    amb.data_type, amb.blend_type = "RGBA", "MULTIPLY"
    amb.inputs["Factor"].default_value = 1.0
    nt.links.new(base, amb.inputs["A"])
    nt.links.new(ambient, amb.inputs["B"])
    nt.links.new(amb.outputs["Result"], bsdf.inputs["Emission Color"])
    bsdf.inputs["Emission Strength"].default_value = 1.0


def _floor_material(bpy):
    """The floor disc: diffuse, two ground colours mixed by noise, plus the ambient term."""
    m = bpy.data.materials.new(f"{NAME}-floor")
    if m.node_tree is None:  # Blender < 5 (in 5.x every material has nodes; use_nodes is deprecated)
        m.use_nodes = True
    nt = m.node_tree
    bsdf = nt.nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = 1.0
    tc = nt.nodes.new("ShaderNodeTexCoord")
    a = {n: grid.object_attribute(nt, n) for n in ("ground_a", "ground_b", "ground_scale", "ground_w", "ambient")}
    fac = _noise(nt, tc.outputs["Object"], a["ground_scale"].outputs["Fac"], a["ground_w"].outputs["Vector"])
    base = _mix_rgb(nt, fac, a["ground_a"].outputs["Color"], a["ground_b"].outputs["Color"])
    nt.links.new(base, bsdf.inputs["Base Color"])
    _ambient(nt, bsdf, base, a["ambient"].outputs["Color"])
    _no_light_sampling(m)
    return m


def _environment_material(bpy):
    """The backdrop: sky (horizon → zenith gradient) above a horizon line that moves and turns with
    the camera, noise-textured ground below it receding towards the horizon and fading into haze."""
    m = bpy.data.materials.new(f"{NAME}-environment")
    if m.node_tree is None:  # Blender < 5 (in 5.x every material has nodes; use_nodes is deprecated)
        m.use_nodes = True
    nt = m.node_tree
    out = nt.nodes["Material Output"]
    nt.nodes.remove(nt.nodes["Principled BSDF"])
    tc = nt.nodes.new("ShaderNodeTexCoord")
    sep = nt.nodes.new("ShaderNodeSeparateXYZ")
    nt.links.new(tc.outputs["Object"], sep.inputs[0])
    a = {n: grid.object_attribute(nt, n) for n in ("roll_c", "roll_s", "elev", "zenith", "horizon_col", "ground_a",
                                                   "ground_b", "ground_scale", "ground_w", "ground_light")}
    x, y = sep.outputs["X"], sep.outputs["Y"]
    c, s = a["roll_c"].outputs["Fac"], a["roll_s"].outputs["Fac"]
    k = 2.0 * math.tan(_HALF_FOV)  # the cell spans this many units of the virtual image plane at distance 1
    u = _math(nt, "MULTIPLY", _math(nt, "ADD", _math(nt, "MULTIPLY", x, c), _math(nt, "MULTIPLY", y, s)), k)
    v = _math(nt, "MULTIPLY", _math(nt, "SUBTRACT", _math(nt, "MULTIPLY", y, c), _math(nt, "MULTIPLY", x, s)), k)
    # phi: angle of this pixel's ray below the horizontal for a camera pitched down by elev
    phi = _math(nt, "SUBTRACT", a["elev"].outputs["Fac"], _math(nt, "ARCTANGENT", v))
    sky_t = _math(nt, "MULTIPLY", phi, -2.5)
    sky_t.node.use_clamp = True
    sky = _mix_rgb(nt, sky_t, a["horizon_col"].outputs["Color"], a["zenith"].outputs["Color"])
    # ground plane one unit below the camera: where the ray meets it (x across, y away)
    sin_phi = _math(nt, "MAXIMUM", _math(nt, "SINE", phi), 0.02)
    gvec = nt.nodes.new("ShaderNodeCombineXYZ")
    nt.links.new(_math(nt, "DIVIDE", u, sin_phi), gvec.inputs["X"])
    nt.links.new(_math(nt, "DIVIDE", _math(nt, "COSINE", phi), sin_phi), gvec.inputs["Y"])
    fac = _noise(nt, gvec.outputs[0], a["ground_scale"].outputs["Fac"], a["ground_w"].outputs["Vector"])
    ground = _mix_rgb(nt, fac, a["ground_a"].outputs["Color"], a["ground_b"].outputs["Color"])
    g_scaled = nt.nodes.new("ShaderNodeVectorMath")
    g_scaled.operation = "SCALE"
    nt.links.new(ground, g_scaled.inputs[0])
    nt.links.new(a["ground_light"].outputs["Fac"], g_scaled.inputs["Scale"])
    haze = _math(nt, "EXPONENT", _math(nt, "MULTIPLY", phi, -10.0))  # 1 at the horizon, → 0 below
    ground_hazy = _mix_rgb(nt, haze, g_scaled.outputs["Vector"], a["horizon_col"].outputs["Color"])
    col = _mix_rgb(nt, _math(nt, "LESS_THAN", phi, 0.0), ground_hazy, sky)
    em = nt.nodes.new("ShaderNodeEmission")
    em.inputs["Strength"].default_value = 1.0
    nt.links.new(col, em.inputs["Color"])
    nt.links.new(em.outputs[0], out.inputs["Surface"])
    _no_light_sampling(m)
    return m


# ----------------------------------------------------------------------------- the scene

class _Scene:
    """The Blender scene of one process: a grid of cells, each a pivot holding an object and its
    floor disc, over an environment backdrop."""

    def __init__(self, options: dict):
        self.opts = dict(options)
        rows, cols = int(self.opts["rows"]), int(self.opts["cols"])
        self.grid = grid.Grid(rows, cols, int(self.opts["cell_px"]), name=NAME)
        bpy, scene = self.grid.bpy, self.grid.scene
        try:
            self.device = cycles.use_device(scene, str(self.opts["device"]))
        except Exception:
            grid.free_scene(scene)
            raise
        cycles.configure(scene, samples=int(self.opts["samples"]), width=cols * self.grid.px,
                         height=rows * self.grid.px, threads=int(self.opts["threads"]), max_bounces=0)
        cycles.install_capture()
        log.info("shapes3d: Cycles on %s, %dx%d cells of %d px, %d samples/px", self.device, rows, cols,
                 self.grid.px, int(self.opts["samples"]))
        self.meshes = [_build_mesh(bpy, c) for c in CLASSES]
        obj_mat, floor_mat, env_mat = _object_material(bpy), _floor_material(bpy), _environment_material(bpy)
        for me in self.meshes:
            me.materials.append(obj_mat)
        self.empty_mesh = bpy.data.meshes.new(f"{NAME}-empty")
        disc = bpy.data.meshes.new(f"{NAME}-disc")
        a = 2 * np.pi * np.arange(48) / 48
        disc.from_pydata([(math.cos(t), math.sin(t), 0.0) for t in a], [], [tuple(range(48))])
        disc.materials.append(floor_mat)
        plane = bpy.data.meshes.new(f"{NAME}-backdrop")
        plane.from_pydata([(-.5, -.5, 0), (.5, -.5, 0), (.5, .5, 0), (-.5, .5, 0)], [], [(0, 1, 2, 3)])
        plane.materials.append(env_mat)
        self.pivots, self.objects, self.discs, self.backdrops = [], [], [], []
        for i, cell in enumerate(self.grid.cells):
            x, y = self.grid.centre(i)
            coll = cell["collection"]
            bd = bpy.data.objects.new(f"env{i:04d}", plane)
            bd.location = (x, y, -2.0)
            bd.visible_shadow = False
            coll.objects.link(bd)
            pv = bpy.data.objects.new(f"pivot{i:04d}", None)
            pv.location = (x, y, 0.0)
            pv.rotation_mode = "QUATERNION"
            coll.objects.link(pv)
            ob = bpy.data.objects.new(f"object{i:04d}", self.meshes[0])
            ob.parent = pv
            for kind in ("BEVEL", "TWIST", "TAPER"):
                if kind == "BEVEL":
                    md = ob.modifiers.new("bevel", "BEVEL")
                    md.limit_method, md.angle_limit, md.segments = "ANGLE", math.radians(35.0), 2
                else:
                    md = ob.modifiers.new(kind.lower(), "SIMPLE_DEFORM")
                    md.deform_method, md.deform_axis = kind, "Z"
            coll.objects.link(ob)
            fl = bpy.data.objects.new(f"floor{i:04d}", disc)
            fl.parent = pv
            coll.objects.link(fl)
            self.pivots.append(pv)
            self.objects.append(ob)
            self.discs.append(fl)
            self.backdrops.append(bd)

    def remove(self) -> None:
        """Free every data-block of this scene (a rebuild with other options must not leak)."""
        grid.free_scene(self.grid.scene, [self.empty_mesh, *self.meshes])

    def alive(self) -> bool:
        try:
            self.grid.scene.name
            self.objects[0].name
        except ReferenceError:  # another family reset Blender to factory settings
            return False
        return True

    def render(self, params: dict, seeds: np.ndarray) -> np.ndarray:
        return grid.in_frames(self._render_chunk, params, seeds, self.grid.capacity, IMAGE_SHAPE)

    def _render_chunk(self, p: dict, seeds: np.ndarray) -> np.ndarray:
        from mathutils import Euler, Matrix

        n = len(seeds)
        f = {k: np.asarray(v, np.float64) for k, v in p.items()}
        label = np.asarray(p[LABEL_PARAM], np.int64)
        u = rng.uniform(seeds, "shapes3d:scene", 9).astype(np.float64)
        sun_rot = grid.sun_rotation(f["light_azimuth"], f["light_elevation"])
        sun_rgb = grid.light_colour(f["light_warmth"])
        for i in range(self.grid.capacity):
            pv, ob, fl, bd = self.pivots[i], self.objects[i], self.discs[i], self.backdrops[i]
            sun = self.grid.cells[i]["sun"]
            if i >= n:  # unused cell: a fixed empty state, so a short batch renders deterministically
                ob.data = self.empty_mesh
                fl.scale = (0.0, 0.0, 0.0)
                sun.data.energy = 0.0
                for k in ("zenith", "horizon_col", "ground_a", "ground_b"):
                    bd[k] = (0.0, 0.0, 0.0)
                bd["ground_light"] = 0.0
                bd.update_tag()
                continue
            me = self.meshes[label[i]]
            if ob.data != me:
                ob.data = me
            height = float(me["height"])
            # shape: aspect stretches height (or width), both ≤ 1 so the unit bounding sphere holds
            asp = f["aspect"][i]
            sxy, sz = (1.0 / asp, 1.0) if asp >= 1 else (1.0, asp)
            size = RADIUS * f["size"][i]
            ob.scale = (size * sxy, size * sxy, size * sz)
            ob.location = (0.0, 0.0, -size * sz * height / 2)  # pivot at the object's mid-height
            ob.rotation_euler = (0.0, 0.0, math.radians(f["azimuth"][i]))
            ob.modifiers["bevel"].width = f["bevel"][i]
            ob.modifiers["twist"].angle = math.radians(f["twist"][i])
            ob.modifiers["taper"].factor = -f["taper"][i]
            # camera pose as the inverse turn of the cell content: tilt about x, then roll on screen
            tilt = math.radians(90.0 - f["elevation"][i])
            roll = math.radians(f["roll"][i])
            rot = Matrix.Rotation(roll, 3, "Z") @ Matrix.Rotation(-tilt, 3, "X")
            pv.rotation_quaternion = rot.to_quaternion()
            # floor disc under the object, shrunk so its tilted, rolled ellipse stays in the cell
            d = size * sz * height / 2 * math.sin(tilt)  # disc centre's offset on screen
            cr, sr, ct = abs(math.cos(roll)), abs(math.sin(roll)), math.cos(tilt)
            ext_x = math.hypot(cr, ct * sr)
            ext_y = math.hypot(sr, ct * cr)
            r_disc = min(0.49 * f["floor_size"][i], (0.49 - d * sr) / ext_x, (0.49 - d * cr) / ext_y)
            fl.scale = (max(r_disc, 0.0),) * 3
            fl.location = (0.0, 0.0, -size * sz * height / 2 - 1e-3)
            # colours
            rgb_a = np.array(colorsys.hsv_to_rgb(f["hue"][i] % 1.0, f["saturation"][i], f["value"][i]))
            rgb_b = np.array(colorsys.hsv_to_rgb((f["hue"][i] + f["pattern_hue"][i]) % 1.0, f["saturation"][i],
                                                 f["value"][i] * 0.55))
            ob.color = (*rgb_a, 1.0)
            ob["col_b"] = tuple(rgb_b)
            ob["contrast"] = f["pattern_contrast"][i]
            ob["pat_scale"] = f["pattern_scale"][i]
            ob["pat_w"] = tuple(100.0 * u[i, 0:3])
            ob["roughness"] = f["roughness"][i]
            ob["metallic"] = f["metallic"][i]
            ob["bump"] = f["bump"][i]
            zen = np.array(colorsys.hsv_to_rgb(f["sky_hue"][i] % 1.0, f["sky_saturation"][i], 1.0))
            hor = np.array(colorsys.hsv_to_rgb((f["sky_hue"][i] - 0.05) % 1.0, 0.25 * f["sky_saturation"][i], 1.0))
            amb = f["ambient"][i] * (0.5 * (zen + hor))
            ob["ambient"] = tuple(amb)
            g_a = np.array(colorsys.hsv_to_rgb(f["ground_hue"][i] % 1.0, f["ground_saturation"][i],
                                               f["ground_value"][i]))
            g_b = g_a * (1.0 - f["ground_contrast"][i])
            for o in (fl, bd):
                o["ground_a"], o["ground_b"] = tuple(g_a), tuple(g_b)
                o["ground_scale"] = f["ground_scale"][i]
            fl["ground_w"] = tuple(100.0 * u[i, 3:6])
            bd["ground_w"] = tuple(100.0 * u[i, 6:9])
            fl["ambient"] = tuple(amb)
            # environment: what a camera of this elevation, roll and a 70° field of view sees behind
            bd["elev"] = math.radians(f["elevation"][i])
            bd["roll_c"], bd["roll_s"] = math.cos(roll), math.sin(roll)
            sky = f["sky_brightness"][i]
            bd["zenith"], bd["horizon_col"] = tuple(zen * sky), tuple(hor * sky)
            # distant ground: as bright as the lit floor without shadows (Lambert: E·sinθ/π + ambient)
            bd["ground_light"] = (f["light_strength"][i] * math.sin(math.radians(f["light_elevation"][i])) / math.pi
                                  + float(amb.mean()))
            # the sun belongs to the scene, so it turns with the cell content
            sun.rotation_euler = (rot @ Euler(tuple(sun_rot[i]), "XYZ").to_matrix()).to_euler("XYZ")
            sun.data.energy = f["light_strength"][i]
            sun.data.color = tuple(sun_rgb[i])
            for o in (ob, fl, bd):
                o.update_tag()  # custom properties are not seen by the depsgraph (and Cycles) otherwise
        frame = cycles.render_frame(self.grid.scene)
        cells = self.grid.crop(frame, n)[..., :3].astype(np.float64)
        return _post(cells, f, seeds)


def _srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def _post(lin: np.ndarray, f: dict, seeds: np.ndarray) -> np.ndarray:
    """Linear RGB [n, H, W, 3] -> sRGB with camera blur and sensor noise -> uint8."""
    n = len(lin)
    return grid.blur_and_noise(_srgb(lin), f["blur"][:n], f["noise"][:n], seeds, "shapes3d:sensor")


_scene: _Scene | None = None


def configure(options: dict) -> None:
    """Set render options (device, samples, rows, cols, cell_px, threads) and build the scene now,
    so that a missing bpy or GPU is reported at start-up."""
    global _scene
    opts = grid.check_options(options, OPTIONS, IMAGE_SHAPE[0])
    if _scene is None or not _scene.alive() or _scene.opts != opts:
        _scene = _build(opts)
    OPTIONS.update(opts)


def _build(opts: dict) -> "_Scene":
    global _scene
    t0 = time.perf_counter()
    if _scene is not None and _scene.alive():  # free the old scene's data-blocks before building anew
        _scene.remove()
    _scene = None
    scene = _Scene(opts)
    log.info("shapes3d: scene built in %.2f s", time.perf_counter() - t0)
    return scene


def render(params: dict[str, np.ndarray], seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    global _scene
    seeds, label = batch_labels(params, seeds, NUM_CLASSES, LABEL_PARAM)
    if len(seeds) == 0:
        return np.zeros((0,) + IMAGE_SHAPE, np.uint8), label.copy()
    if _scene is None or not _scene.alive():
        _scene = _build(dict(OPTIONS))
    return _scene.render(params, seeds), label.copy()
