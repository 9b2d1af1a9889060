"""mnist2d: procedural handwritten digits, 28×28 white ink on black, normalised the MNIST way.

Each digit class has a few *stroke skeletons* (style variants: a 1 with or without flag and
base, an open or closed 4, a 7 with or without bar …), each a handful of control points in a
unit box joined by Catmull-Rom strokes. Because a Catmull-Rom curve is linear in its control
points, every template is precomputed once as a fixed weight matrix ``W [P, C]`` that maps its
control points to ``P`` pen positions spaced evenly along its strokes; a batch then only needs
``points = W[template] @ jittered_controls`` followed by array-wide geometry:

1. a vertical proportion warp, control-point jitter and a smooth elastic displacement field
   (a few random low-frequency sinusoids) on the control points; aspect, slant (shear) and
   rotation on the pen points;
2. MNIST normalisation (LeCun et al. 1998): fit the ink's bounding box in a ``box``×``box``
   square keeping the aspect ratio, then put the ink's centre of mass at the frame centre;
3. rasterisation by separable Gaussian splatting, one batched matmul
   ``density = gyᵀ·diag(w)·gx``, saturated as ``1 - exp(-ink·density)`` so strokes have a solid
   core and soft edges like anti-aliased scans; blur widens the splats at constant stroke
   width; the core is mapped to the ``intensity`` level, crossings clipped there and faint
   tails cut (binary scans add no ink where strokes cross); per-pixel noise.

There are no per-image Python loops and no global RNG: every random number comes from
``blender_gen.rng`` keyed by the sample's own seed, so sample i's bytes depend only on
(its parameters, its seed), alone or inside any batch.
"""

from __future__ import annotations

import numpy as np

from otfgen.blender_gen import rng
from otfgen.blender_gen.space import choices, floats, ints
from otfgen.blender_gen.families import batch_labels, distract

NAME = "mnist2d"
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
LABEL_PARAM = "label"
# Each parameter: its kind, the widest range it may take (or every choice), default and doc. A
# scene config narrows the ranges (configs/scene/mnist2d.yaml to a tuned prior); these are about
# 3× the tuned width, rotation all the way round, and the distractors a new user would switch on.
# Past them the renderer breaks (strokes leave the frame, NaNs), not merely looks wrong.
SPACE = {
    "label": ints(0, 9, 0, "the digit class"),
    "variant": floats(0.0, 1.0, 0.0, "style variant of the class's stroke skeleton (0..1 spans the class's 2-5 "
                      "variants)"),
    "jitter": floats(0.0, 0.24, 0.02, "std of independent control-point displacement, in units of digit height"),
    "tails": floats(0.0, 1.2, 0.1, "free stroke ends run on (up to +tails) or stop short (down to -tails/2) along "
                    "their last segment, at random per end"),
    "elastic": floats(0.0, 0.45, 0.03, "amplitude of the smooth random displacement field, in units of digit height"),
    "proportion": floats(-1.5, 1.5, 0.0, "vertical warp y -> y^(2^p) of the skeleton (y down): > 0 moves the middle "
                         "up (smaller top part), < 0 down"),
    "aspect": floats(0.3, 2.5, 1.0, "width multiplier before normalisation"),
    "slant": floats(-1.0, 1.2, 0.15, "shear: horizontal lean per unit height, positive leans right"),
    "rotation": floats(-180.0, 180.0, 0.0, "rotation in degrees, positive clockwise on screen"),
    "thickness": floats(0.5, 10.0, 2.8, "stroke width at half ink, in output pixels"),
    "pressure": floats(0.0, 0.9, 0.15, "relative pen-width variation along the stroke"),
    "ink": floats(1.0, 80.0, 15.0, "edge hardness (saturation gain of the splats): high = hard one-pixel edges, low "
                  "= soft wide edges; the core stays at intensity"),
    "blur": floats(0.0, 2.0, 0.2, "extra splat std in pixels at constant stroke width: softer, greyer edges"),
    "intensity": floats(0.2, 1.0, 1.0, "level of the stroke core (1 = 255); crossings add no ink, as in binary scans"),
    "noise": floats(0.0, 0.3, 0.0, "per-pixel noise std on the ink, relative to its level (the background stays "
                    "black)"),
    "box": floats(8.0, 28.0, 20.0, "side of the square the ink's bounding box is fitted into (MNIST: 20)"),
    "shift": floats(0.0, 6.0, 0.0, "offset of the centre of mass from the frame centre, in pixels (random direction)"),
    "occlude": floats(0.0, 0.6, 0.0, "side of a background-coloured square hiding part of the image, as a fraction "
                      "of the frame (0 = none)"),
    "invert": choices(['plain', 'inverted'], 'plain', "plain, or inverted (dark on light: real digits never are)"),
}

P = 64  # pen positions per digit, shared by all templates (fixed cost per sample)
_SIZE = IMAGE_SHAPE[0]
_CENTRE = (_SIZE - 1) / 2.0  # 13.5 in pixel-centre coordinates, MNIST's centre-of-mass target
_N_ELASTIC = 3  # sinusoids per displacement axis
_FLOOR = 0.1  # ink below this fraction of the stroke core's level goes to black (see _raster)
_F32 = np.float32

# --------------------------------------------------------------------------------------------
# Skeletons: (control points [(x, y)], strokes [(indices, closed)]) in a unit box, y down.
# Strokes sharing an index meet at a corner that jitter moves as one point.
# --------------------------------------------------------------------------------------------


def _ellipse(cx, cy, rx, ry, n, start_deg=-90.0, sweep=360.0):
    a = np.deg2rad(start_deg + sweep * np.arange(n) / (n if sweep == 360.0 else n - 1))
    return [(cx + rx * np.cos(t), cy + ry * np.sin(t)) for t in a]


SKELETONS: dict[int, list[tuple[list, list]]] = {
    0: [
        # started at the top, drawn anticlockwise, overlapping the start a little (a longer
        # overshoot sticks out like a 6's stem)
        (_ellipse(0.35, 0.5, 0.3, 0.48, 10, start_deg=-80.0, sweep=-375.0), [(list(range(10)), False)]),
        (_ellipse(0.35, 0.5, 0.3, 0.48, 8), [(list(range(8)), True)]),
        (_ellipse(0.35, 0.5, 0.22, 0.48, 8), [(list(range(8)), True)]),
    ],
    1: [
        ([(0.32, 0.0), (0.3, 0.5), (0.28, 1.0)], [([0, 1, 2], False)]),
        ([(0.25, 0.0), (0.33, 0.45), (0.3, 1.0)], [([0, 1, 2], False)]),
        # a short flag (a long one, rotated and jittered, draws 7s)
        ([(0.16, 0.15), (0.32, 0.0), (0.31, 0.5), (0.3, 1.0)], [([0, 1], False), ([1, 2, 3], False)]),
        ([(0.08, 0.22), (0.32, 0.0), (0.31, 0.5), (0.3, 1.0), (0.05, 1.0), (0.55, 1.0)],
         [([0, 1], False), ([1, 2, 3], False), ([4, 3, 5], False)]),
    ],
    2: [
        ([(0.05, 0.25), (0.3, 0.02), (0.6, 0.15), (0.55, 0.45), (0.3, 0.72), (0.03, 1.0), (0.4, 0.97), (0.72, 1.0)],
         [([0, 1, 2, 3, 4, 5], False), ([5, 6, 7], False)]),
        # looped 2: the diagonal curls into a loop at the bottom left before the base
        ([(0.06, 0.22), (0.32, 0.0), (0.62, 0.16), (0.55, 0.45), (0.32, 0.75), (0.16, 0.96), (0.0, 0.9),
          (0.02, 0.7), (0.2, 0.68), (0.3, 0.85), (0.42, 0.98), (0.75, 0.95)],
         [(list(range(12)), False)]),
        # angular: small top hook, steep straight diagonal, flat base
        ([(0.04, 0.22), (0.28, 0.0), (0.55, 0.1), (0.5, 0.36), (0.05, 0.97), (0.68, 0.96)],
         [([0, 1, 2, 3, 4], False), ([4, 5], False)]),
        # curved, z-like base
        ([(0.08, 0.2), (0.35, 0.0), (0.62, 0.2), (0.45, 0.55), (0.05, 0.95), (0.35, 0.9), (0.7, 0.98)],
         [(list(range(7)), False)]),
        # big round hook starting low on the left, plain diagonal and base (the common MNIST 2)
        ([(0.04, 0.38), (0.1, 0.1), (0.38, 0.0), (0.64, 0.14), (0.6, 0.4), (0.34, 0.7), (0.04, 0.98), (0.4, 0.94),
          (0.78, 0.98)],
         [(list(range(7)), False), ([6, 7, 8], False)]),
        # big round hook, the diagonal curls into a large open loop whose far side runs on as the base
        ([(0.04, 0.34), (0.14, 0.08), (0.4, 0.0), (0.64, 0.16), (0.58, 0.42), (0.38, 0.62), (0.28, 0.8), (0.18, 0.98),
          (0.02, 0.88), (0.06, 0.66), (0.26, 0.64), (0.38, 0.84), (0.52, 0.98), (0.8, 0.94)],
         [(list(range(14)), False)]),
        # "ɑ" 2: big hook, the diagonal runs into a large round loop low on the left, base tail
        ([(0.12, 0.28), (0.3, 0.02), (0.55, 0.02), (0.66, 0.22), (0.55, 0.45), (0.3, 0.55), (0.08, 0.7), (0.1, 0.92),
          (0.3, 0.98), (0.45, 0.82), (0.42, 0.62), (0.55, 0.92), (0.8, 0.96)],
         [(list(range(13)), False)]),
        # small curl at the start, then a plain diagonal and base
        ([(0.18, 0.3), (0.1, 0.16), (0.3, 0.0), (0.58, 0.1), (0.55, 0.4), (0.08, 0.98), (0.45, 0.95), (0.74, 1.0)],
         [(list(range(6)), False), ([5, 6, 7], False)]),
    ],
    3: [
        ([(0.05, 0.15), (0.35, 0.0), (0.6, 0.15), (0.55, 0.35), (0.28, 0.48), (0.58, 0.6), (0.64, 0.82),
          (0.38, 1.0), (0.03, 0.88)],
         [([0, 1, 2, 3, 4], False), ([4, 5, 6, 7, 8], False)]),
        # flat-topped 3
        ([(0.05, 0.02), (0.62, 0.0), (0.3, 0.4), (0.6, 0.55), (0.65, 0.8), (0.38, 1.0), (0.03, 0.88)],
         [([0, 1], False), ([1, 2], False), ([2, 3, 4, 5, 6], False)]),
        # smooth middle, no cusp
        ([(0.08, 0.12), (0.38, 0.0), (0.6, 0.2), (0.3, 0.47), (0.62, 0.7), (0.42, 0.98), (0.05, 0.9)],
         [(list(range(7)), False)]),
    ],
    4: [
        # open 4: two strokes
        ([(0.35, 0.0), (0.03, 0.62), (0.72, 0.62), (0.55, 0.25), (0.52, 1.0)],
         [([0, 1, 2], False), ([3, 4], False)]),
        # closed 4: the diagonal meets the stem's top
        ([(0.55, 0.0), (0.03, 0.65), (0.72, 0.65), (0.53, 1.0)],
         [([0, 1], False), ([1, 2], False), ([0, 3], False)]),
        # "Ч" 4: vertical left, crossbar, long right stem
        ([(0.05, 0.0), (0.08, 0.55), (0.66, 0.52), (0.62, 0.0), (0.6, 1.0)],
         [([0, 1], False), ([1, 2], False), ([3, 2, 4], False)]),
    ],
    5: [
        ([(0.66, 0.0), (0.12, 0.02), (0.06, 0.45), (0.35, 0.37), (0.63, 0.55), (0.6, 0.82), (0.33, 1.0), (0.02, 0.9)],
         [([0, 1], False), ([1, 2], False), ([2, 3, 4, 5, 6, 7], False)]),
        # bar drawn as a separate stroke, stem-and-bowl first
        ([(0.14, 0.02), (0.08, 0.45), (0.38, 0.38), (0.64, 0.6), (0.55, 0.88), (0.3, 1.0), (0.03, 0.85),
          (0.68, 0.0)],
         [([0, 1], False), ([1, 2, 3, 4, 5, 6], False), ([0, 7], False)]),
        # one stroke: short bar drawn right to left, stem, round bowl curling back towards the stem
        ([(0.6, 0.02), (0.2, 0.0), (0.14, 0.42), (0.42, 0.36), (0.66, 0.58), (0.58, 0.9), (0.3, 1.0), (0.1, 0.86),
          (0.16, 0.74)],
         [(list(range(9)), False)]),
        # slanted stem, flag-like bar, shallow open bowl
        ([(0.2, 0.0), (0.1, 0.48), (0.42, 0.4), (0.62, 0.66), (0.48, 0.94), (0.16, 0.98), (0.22, 0.02),
          (0.7, 0.06)],
         [(list(range(6)), False), ([6, 7], False)]),
    ],
    6: [
        ([(0.58, 0.0), (0.25, 0.25), (0.05, 0.62), (0.14, 0.95), (0.44, 0.97), (0.58, 0.72), (0.35, 0.52), (0.08, 0.65)],
         [(list(range(8)), False)]),
        # straighter stem, small loop
        ([(0.45, 0.0), (0.2, 0.35), (0.1, 0.72), (0.25, 0.98), (0.5, 0.88), (0.45, 0.62), (0.2, 0.68)],
         [(list(range(7)), False)]),
        # long stem sweeping from the top right into a small low loop closed on the stem
        ([(0.7, 0.02), (0.35, 0.2), (0.12, 0.5), (0.1, 0.82), (0.3, 1.0), (0.55, 0.88), (0.5, 0.66),
          (0.28, 0.64), (0.12, 0.76)],
         [(list(range(9)), False)]),
        # big round loop, short stem hooking off to the top right
        ([(0.66, 0.0), (0.3, 0.06), (0.06, 0.35), (0.04, 0.72), (0.3, 1.0), (0.62, 0.88), (0.66, 0.55),
          (0.4, 0.32), (0.1, 0.45)],
         [(list(range(9)), False)]),
        # closed round loop with the stem as a separate stroke rising from its left side
        (_ellipse(0.36, 0.68, 0.3, 0.3, 8, start_deg=180.0) + [(0.14, 0.25), (0.5, 0.0)],
         [(list(range(8)), True), ([0, 8, 9], False)]),
        # "b"-like: near-straight stem down the left, round loop filling the lower half
        ([(0.28, 0.0), (0.14, 0.35), (0.06, 0.7), (0.16, 0.96), (0.42, 1.0), (0.6, 0.8), (0.5, 0.56),
          (0.26, 0.5), (0.08, 0.64)],
         [(list(range(9)), False)]),
    ],
    7: [
        ([(0.0, 0.05), (0.66, 0.05), (0.45, 0.45), (0.28, 1.0)], [([0, 1], False), ([1, 2, 3], False)]),
        # short bar, long near-vertical stem
        ([(0.12, 0.04), (0.5, 0.02), (0.42, 0.5), (0.36, 1.0)], [([0, 1], False), ([1, 2, 3], False)]),
        # crossed 7
        ([(0.0, 0.05), (0.66, 0.05), (0.45, 0.45), (0.28, 1.0), (0.22, 0.55), (0.65, 0.5)],
         [([0, 1], False), ([1, 2, 3], False), ([4, 5], False)]),
        # hooked start, curved stem
        ([(0.02, 0.22), (0.05, 0.04), (0.64, 0.02), (0.38, 0.5), (0.32, 1.0)],
         [([0, 1], False), ([1, 2], False), ([2, 3, 4], False)]),
        # rounded corner: the bar bends smoothly into a straight stem
        ([(0.0, 0.08), (0.35, 0.0), (0.6, 0.06), (0.5, 0.35), (0.36, 0.7), (0.3, 1.0)],
         [(list(range(6)), False)]),
        # bar rising to the right, stem nearly vertical
        ([(0.02, 0.12), (0.62, 0.0), (0.5, 0.5), (0.46, 1.0)], [([0, 1], False), ([1, 2, 3], False)]),
    ],
    8: [
        # one stroke, crossing in the middle
        ([(0.6, 0.1), (0.33, 0.0), (0.08, 0.16), (0.2, 0.38), (0.5, 0.6), (0.6, 0.85), (0.33, 1.0), (0.06, 0.84),
          (0.18, 0.6), (0.48, 0.38), (0.6, 0.15)],
         [(list(range(11)), False)]),
        # one stroke from a tail at the top right; the return stroke stops short of the start,
        # leaving the upper loop open on the right (common in fast writing)
        ([(0.7, 0.04), (0.42, 0.0), (0.14, 0.1), (0.16, 0.34), (0.46, 0.56), (0.6, 0.82), (0.36, 1.0), (0.08, 0.86),
          (0.16, 0.62), (0.42, 0.4), (0.52, 0.22)],
         [(list(range(11)), False)]),
        # "S" and a straight diagonal return to the top right (upper loop closed by the return,
        # big lower loop), a style of real 8 the other variants missed
        ([(0.62, 0.06), (0.35, 0.0), (0.14, 0.12), (0.2, 0.3), (0.45, 0.48), (0.66, 0.72), (0.5, 0.98), (0.2, 0.96),
          (0.12, 0.75), (0.3, 0.52), (0.5, 0.3), (0.68, 0.04)],
         [(list(range(12)), False)]),
        # narrow, tilted upper loop, round lower loop, crossing as a steep X
        ([(0.56, 0.12), (0.42, 0.0), (0.26, 0.08), (0.3, 0.3), (0.5, 0.56), (0.56, 0.84), (0.34, 1.0), (0.1, 0.88),
          (0.18, 0.62), (0.44, 0.36), (0.56, 0.12)],
         [(list(range(11)), False)]),
        # two stacked loops
        (_ellipse(0.35, 0.24, 0.22, 0.24, 7) + _ellipse(0.35, 0.73, 0.29, 0.27, 8),
         [(list(range(7)), True), (list(range(7, 15)), True)]),
        # started at the middle, lower loop first (anticlockwise), then the upper loop
        ([(0.35, 0.46), (0.08, 0.66), (0.12, 0.92), (0.38, 1.0), (0.62, 0.82), (0.5, 0.58), (0.2, 0.36), (0.14, 0.12),
          (0.38, 0.0), (0.58, 0.14), (0.5, 0.34), (0.35, 0.46)],
         [(list(range(12)), False)]),
        # narrow, slanted one-stroke 8 with a small upper loop
        ([(0.55, 0.14), (0.38, 0.0), (0.2, 0.1), (0.28, 0.32), (0.48, 0.55), (0.5, 0.86), (0.3, 1.0), (0.14, 0.85),
          (0.24, 0.58), (0.48, 0.34), (0.55, 0.14)],
         [(list(range(11)), False)]),
    ],
    9: [
        # loop and straight stem, one stroke
        ([(0.62, 0.3), (0.6, 0.1), (0.35, 0.0), (0.08, 0.14), (0.1, 0.38), (0.35, 0.48), (0.62, 0.3), (0.6, 0.65),
          (0.55, 1.0)],
         [([0, 1, 2, 3, 4, 5, 6], True), ([0, 7, 8], False)]),
        # curved tail
        ([(0.62, 0.3), (0.6, 0.1), (0.35, 0.0), (0.08, 0.14), (0.1, 0.38), (0.35, 0.48), (0.6, 0.65), (0.5, 0.95),
          (0.2, 1.0)],
         [([0, 1, 2, 3, 4, 5], True), ([0, 6, 7, 8], False)]),
        # loop drawn as a separate closed stroke, stem from its right side
        (_ellipse(0.33, 0.24, 0.27, 0.24, 8, start_deg=0.0) + [(0.58, 0.65), (0.5, 1.0)],
         [(list(range(8)), True), ([0, 8, 9], False)]),
        # angular, open-topped loop (the loop's top meets the stem in a corner), straight stem
        ([(0.6, 0.02), (0.22, 0.04), (0.05, 0.3), (0.25, 0.46), (0.6, 0.36), (0.6, 0.0), (0.58, 0.6), (0.54, 1.0)],
         [([0, 1, 2, 3, 4], False), ([5, 4, 6, 7], False)]),
        # small loop, long slanted stem
        ([(0.62, 0.22), (0.52, 0.04), (0.3, 0.02), (0.16, 0.2), (0.3, 0.36), (0.55, 0.3), (0.62, 0.22), (0.48, 0.6),
          (0.32, 1.0)],
         [([0, 1, 2, 3, 4, 5], True), ([0, 7, 8], False)]),
    ],
}


def _catmull_rom_rows(idx: list[int], closed: bool, n_ctrl: int, per_seg: int = 48) -> np.ndarray:
    """Dense samples of one uniform Catmull-Rom stroke as rows of weights over control points."""
    m = len(idx)
    eye = np.eye(n_ctrl)
    pts = [eye[i] for i in idx]
    if closed:
        ext = [pts[-1]] + pts + pts[:2]
        n_seg = m
    else:  # reflected phantom end points keep the ends straight and stay linear in the controls
        ext = [2 * pts[0] - pts[1]] + pts + [2 * pts[-1] - pts[-2]]
        n_seg = m - 1
    t = np.linspace(0.0, 1.0, per_seg, endpoint=False)[:, None]
    rows = []
    for s in range(n_seg):
        q0, q1, q2, q3 = ext[s], ext[s + 1], ext[s + 2], ext[s + 3]
        rows.append(0.5 * (2 * q1 + (-q0 + q2) * t + (2 * q0 - 5 * q1 + 4 * q2 - q3) * t**2
                           + (-q0 + 3 * q1 - 3 * q2 + q3) * t**3))
    rows.append((ext[1] if closed else ext[-2])[None, :])  # the end point (start again if closed)
    return np.concatenate(rows)


def _build_templates():
    """Stack every skeleton into fixed arrays: weights, controls, neighbours, arc position."""
    entries = [(d, sk) for d in range(NUM_CLASSES) for sk in SKELETONS[d]]
    c_max = max(len(sk[0]) for _, sk in entries)
    T = len(entries)
    W = np.zeros((T, P, c_max), np.float64)
    ctrl = np.zeros((T, c_max, 2), np.float64)
    prev = np.zeros((T, P), np.int64)
    nxt = np.zeros((T, P), np.int64)
    arc = np.zeros((T, P), np.float64)  # position along the whole pen path, in [0, 1]
    for t, (_, (cps, strokes)) in enumerate(entries):
        c = np.asarray(cps, np.float64)
        ctrl[t, : len(c)] = c
        dense = [_catmull_rom_rows(idx, closed, c_max) for idx, closed in strokes]
        lens = []
        for rows in dense:
            xy = rows[:, : len(c)] @ c
            lens.append(np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
        total = sum(l[-1] for l in lens)
        # points per stroke proportional to its length, at least 3, summing to P
        k = np.maximum(3, np.floor(np.array([l[-1] for l in lens]) / total * P)).astype(int)
        k[np.argmax(k)] += P - k.sum()
        o, run = 0, 0.0
        for rows, l, (idx, closed), kk in zip(dense, lens, strokes, k):
            # closed strokes: kk distinct points round the loop; open: both ends included
            s = np.linspace(0.0, l[-1], kk, endpoint=not closed)
            j = np.clip(np.searchsorted(l, s, side="right") - 1, 0, len(l) - 2)
            f = ((s - l[j]) / np.maximum(l[j + 1] - l[j], 1e-12))[:, None]
            W[t, o : o + kk] = (1 - f) * rows[j] + f * rows[j + 1]
            r = np.arange(kk)
            if closed:
                prev[t, o : o + kk], nxt[t, o : o + kk] = o + (r - 1) % kk, o + (r + 1) % kk
            else:
                prev[t, o : o + kk], nxt[t, o : o + kk] = o + np.maximum(r - 1, 0), o + np.minimum(r + 1, kk - 1)
            arc[t, o : o + kk] = (run + s) / total
            o, run = o + kk, run + l[-1]
    # free pen ends (end points of open strokes that no other stroke shares), for the tails
    ends = np.zeros((T, 2, 2), np.int64)  # [template, first/last, (end, its neighbour)]
    has_end = np.zeros((T, 2), np.float64)
    for t, (_, (cps, strokes)) in enumerate(entries):
        uses = np.bincount([i for idx, _ in strokes for i in idx], minlength=len(cps))
        free = []
        for idx, closed in strokes:
            if not closed:
                free += [(e, nb) for e, nb in ((idx[0], idx[1]), (idx[-1], idx[-2])) if uses[e] == 1]
        for k, pick in enumerate((free[:1], free[1:][-1:])):
            if pick:
                ends[t, k], has_end[t, k] = pick[0], 1.0
    digit = np.array([d for d, _ in entries], np.int64)
    first = np.searchsorted(digit, np.arange(NUM_CLASSES))
    count = np.bincount(digit, minlength=NUM_CLASSES)
    return (W.astype(_F32), ctrl.astype(_F32), prev, nxt, arc.astype(_F32), first, count, ends, has_end.astype(_F32))


_W, _CTRL, _PREV, _NEXT, _ARC, _FIRST, _COUNT, _ENDS, _HAS_END = _build_templates()
_HAS_PREV = (_PREV != np.arange(P)).astype(_F32)  # 0 where a point starts an open stroke
_C = _CTRL.shape[1]
_PIX = np.arange(_SIZE, dtype=_F32)


_NOISE = rng.normal(np.array([0x6D6E697374], np.uint64), "mnist2d:noise-table", 1 << 16)[0]
_NOISE_WINDOWS = np.lib.stride_tricks.sliding_window_view(_NOISE, _SIZE * _SIZE)  # row i = _NOISE[i:i+784]


def _splat(v: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """exp(inv·(pixel - v)²) for every point and pixel: [B, N] -> [B, N, 28].

    In place after the first op (these maps are the family's hottest arrays). The exponent is
    clamped at -30 so tails underflow to ~1e-13, never to float32 denormals, which would make
    exp and the matmul that follows ~10x slower.
    """
    d = np.subtract.outer(v, _PIX)
    np.square(d, out=d)
    d *= inv[..., None]
    np.maximum(d, _F32(-30.0), out=d)
    return np.exp(d, out=d)


def fit_scale(extent, box, half):
    """MNIST normalisation, step 1 (LeCun et al. 1998): the factor that fits an ink box into a
    ``box``×``box`` pixel square keeping its aspect ratio. ``extent`` is the longer side of the
    pen path's bounding box (any unit), ``half`` the pen's half-width in output pixels, which the
    box must also hold. Shared with the Blender digits (digits3d)."""
    return np.maximum(box - 2.0 * half, 2.0) / extent


def centre_of_mass_offset(x, y, mass, cx=_CENTRE, cy=_CENTRE):
    """MNIST normalisation, step 2: the shift [B, 1] each that moves the ink's centre of mass (pen
    points x, y [B, N] weighted by the ink they lay, ``mass`` [B, N]) to (cx, cy), the frame's
    centre (13.5 in pixel-centre coordinates) unless told otherwise."""
    msum = mass.sum(1, keepdims=True)
    return cx - (mass * x).sum(1, keepdims=True) / msum, cy - (mass * y).sum(1, keepdims=True) / msum


def _col(params: dict, name: str) -> np.ndarray:
    return np.asarray(params[name], dtype=_F32)[:, None]


def render(params: dict[str, np.ndarray], seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Render a batch: params name -> array [B], seeds uint64 [B] -> (uint8 [B,28,28], int64 [B])."""
    seeds, label = batch_labels(params, seeds, NUM_CLASSES, LABEL_PARAM)
    B = seeds.shape[0]
    if B == 0:
        return np.zeros((0,) + IMAGE_SHAPE, np.uint8), label.copy()
    x, y, sigma, step, g, _ = _pen(params, seeds)
    return distract(_raster(params, seeds, x, y, sigma, step, g), params, seeds), label.copy()


def _pen(params: dict, seeds: np.ndarray):
    """Pen points in output pixels: x, y, splat std σ, path length per point, gain g, template."""
    B = seeds.shape[0]
    label = np.asarray(params[LABEL_PARAM], dtype=np.int64)

    # -- skeleton: pick the style variant, jitter its control points, sample the pen path ----
    variant = np.clip(np.asarray(params["variant"], np.float64), 0.0, 1.0 - 1e-9)
    tpl = _FIRST[label] + np.minimum((variant * _COUNT[label]).astype(np.int64), _COUNT[label] - 1)
    # proportion: a vertical power warp y -> y**(2**p) of the unit box moves the digit's middle up or
    # down (bigger or smaller upper loop of 8/9, lower loop of 6, bar height of 4/7 …)
    cy0 = _CTRL[tpl][..., 1]
    gamma = np.exp2(_col(params, "proportion"))
    cy0 = np.sign(cy0) * np.abs(cy0) ** gamma
    ctrl = np.stack([_CTRL[tpl][..., 0], cy0], -1) + _col(params, "jitter")[:, :, None] * rng.normal(seeds, "jitter", 2 * _C).reshape(B, _C, 2)

    # -- tails: the free pen ends run on or stop short along their last segment (real strokes
    # overshoot the 8's start, leave a 5's bar long, stop a 2's hook early ...) -------------------
    tl = _col(params, "tails") * (rng.uniform(seeds, "tails", 2) * _F32(1.5) - _F32(0.5))  # [-tails/2, tails]
    rows_ = np.arange(B)[:, None]
    e_idx, n_idx = _ENDS[tpl][..., 0], _ENDS[tpl][..., 1]  # [B, 2]
    end, nb = ctrl[rows_, e_idx], ctrl[rows_, n_idx]  # [B, 2, xy]
    # add.at, not assignment: a template with one free end repeats index 0 in the unused slot
    np.add.at(ctrl, (np.broadcast_to(rows_, e_idx.shape), e_idx), (tl * _HAS_END[tpl])[..., None] * (end - nb))

    # -- smooth elastic displacement: a few random low-frequency plane waves per axis, applied
    # to the control points (the strokes are linear in them, so the whole path follows) -------
    e = rng.uniform(seeds, "elastic", 8 * _N_ELASTIC).reshape(B, 4, 2, _N_ELASTIC)  # [B, what, axis, k]
    freq = _F32(0.4) + _F32(1.2) * e[:, 0:2]  # cycles per unit box, along x and y
    phase = _F32(2 * np.pi) * e[:, 2]
    amp = (e[:, 3] - _F32(0.5)) * _F32(2.0 / np.sqrt(_N_ELASTIC))
    arg = _F32(2 * np.pi) * (ctrl[:, :, None, 0:1] * freq[:, None, 0] + ctrl[:, :, None, 1:2] * freq[:, None, 1])
    ctrl = ctrl + _col(params, "elastic")[:, :, None] * (amp[:, None] * np.sin(arg + phase[:, None])).sum(-1)
    pts = np.matmul(_W[tpl], ctrl)  # [B, P, 2], x right, y down, unit box

    # -- affine: aspect, slant (shear about the middle), rotation ------------------------------
    x = (pts[..., 0] - pts[..., 0].mean(1, keepdims=True)) * _col(params, "aspect")
    y = pts[..., 1] - pts[..., 1].mean(1, keepdims=True)
    x = x - _col(params, "slant") * y  # positive slant leans the top to the right (y is down)
    ang = np.deg2rad(_col(params, "rotation"))
    ca, sa = np.cos(ang), np.sin(ang)
    x, y = ca * x - sa * y, sa * x + ca * y

    # -- stroke width: a cap from the ink box's narrow side keeps loops open ------------------
    # Uniform sampling pairs the thickest pen with the narrowest digits, which fills the loops
    # of 0, 6, 8 and 9 into blobs no class owns. Writers with a broad pen write wider digits, so
    # the width is capped by the narrow side of the scaled ink box. 1s have no loop to close.
    xmin, xmax = x.min(1, keepdims=True), x.max(1, keepdims=True)
    ymin, ymax = y.min(1, keepdims=True), y.max(1, keepdims=True)
    extent = np.maximum(np.maximum(xmax - xmin, ymax - ymin), _F32(1e-3))
    minor = np.minimum(xmax - xmin, ymax - ymin) / extent  # narrow side over the long side
    half = _F32(0.5) * _col(params, "thickness")  # half-ink half-width in output pixels
    cap = _F32(0.75) + _F32(0.15) * minor * np.maximum(_col(params, "box") - _F32(2.0) * half, _F32(2.0))
    half = np.where(label[:, None] == 1, half, np.minimum(half, cap))

    # -- pen: width profile along the path (pressure), edge softness (ink, blur) --------------
    # A straight line of splats has density exp(-r²/2σ²) across it; ink = 1 - exp(-g·density)
    # is half-on at r = σ·sqrt(2·ln(g/ln 2)). Blur widens σ and lowers g so that this half-ink
    # width (the thickness parameter) stays put: blur softens edges without fattening strokes.
    sigma0 = half / np.sqrt(_F32(2.0) * np.log(_col(params, "ink") / _F32(np.log(2.0))))
    sigma_b = np.sqrt(sigma0 * sigma0 + np.square(_col(params, "blur")))
    g = _F32(np.log(2.0)) * np.exp(half * half / (_F32(2.0) * sigma_b * sigma_b))
    pr = rng.uniform(seeds, "pressure", 2)
    profile = np.sin(_F32(2 * np.pi) * ((_F32(0.7) + _F32(1.6) * pr[:, :1]) * _ARC[tpl] + pr[:, 1:]))
    sigma = sigma_b * (_F32(1.0) + _col(params, "pressure") * profile)

    # -- MNIST normalisation: ink box into box×box keeping aspect, centre of mass to 13.5 ------
    scale = fit_scale(extent, _col(params, "box"), half)
    x, y = x * scale, y * scale
    rows = np.arange(B)[:, None]
    nxt = _NEXT[tpl]
    seg = np.hypot(x[rows, nxt] - x, y[rows, nxt] - y)  # to the next point (0 at an open stroke's end)
    step = seg[rows, _PREV[tpl]]  # from the previous point (0 at an open stroke's start)
    step *= _HAS_PREV[tpl]
    step += seg
    step *= _F32(0.5)  # path length per point
    sh = rng.uniform(seeds, "shift", 1)
    shift = _col(params, "shift")
    cx = _F32(_CENTRE) + shift * np.cos(_F32(2 * np.pi) * sh)
    cy = _F32(_CENTRE) + shift * np.sin(_F32(2 * np.pi) * sh)
    dx, dy = centre_of_mass_offset(x, y, step * sigma, cx, cy)
    x = x + dx
    y = y + dy

    return x, y, sigma, step, g, tpl


def _raster(params: dict, seeds: np.ndarray, x, y, sigma, step, g) -> np.ndarray:
    B = seeds.shape[0]
    # -- rasterise: separable Gaussian splats, one batched matmul, then saturate ---------------
    inv = _F32(-0.5) / (sigma * sigma)
    # x and y maps in one pass: gxy[:, :P] is gx [B, P, 28], gxy[:, P:] is gy; density = gyᵀ·diag(w)·gx
    gxy = _splat(np.concatenate([x, y], 1), np.concatenate([inv, inv], 1))
    gx, gy = gxy[:, :P], gxy[:, P:]
    w = step / (_F32(np.sqrt(2 * np.pi)) * sigma)  # a straight line gets a peak density of 1
    gx *= (w * g)[:, :, None]
    density = np.matmul(gy.transpose(0, 2, 1), gx)  # [B, 28(y), 28(x)]; strided views go to BLAS
    np.negative(density, out=density)
    blank = np.exp(density, out=density)  # 1 - coverage

    # -- scan: ink level, per-pixel noise ----------------------------------------------------
    # MNIST's digits are anti-aliased binary scans: the stroke core is at full level in every
    # image (99% of the real test digits peak at 254-255), crossings add no ink, and the edge
    # ramp is about a pixel wide. So the core level of a straight stroke, 1 - exp(-g), is
    # mapped to `intensity`, anything above it (crossings, slow pen) is clipped there, and the
    # faint Gaussian tails below _FLOOR of it go to black: `ink` shapes only the edges (soft
    # pens would otherwise give grey digits with bright crossings and wide halos, unlike the scans).
    # In 0-255 units, level·(coverage/core - F)/(1 - F) = (gain - level·F/(1 - F)) - gain·blank,
    # two passes over the pixels (this tail of the family is a fifth of its time).
    level = _col(params, "intensity") * _F32(255.0)
    gain = level / ((_F32(1.0) - np.exp(-g)) * _F32(1.0 - _FLOOR))
    blank *= (-gain)[:, :, None]
    blank += (gain - level * _F32(_FLOOR / (1.0 - _FLOOR)))[:, :, None]
    img = np.maximum(blank, _F32(0.0), out=blank)  # maximum/minimum: np.clip is ~3x slower on float32
    np.minimum(img, level[:, :, None], out=img)
    # Noise is read from a fixed table of normal deviates at a per-sample random offset: one
    # gather instead of 784 hashes per image (the table is a pure function of a constant seed).
    noise = _col(params, "noise")[:, :, None]
    start = (rng.bits(seeds, "noise", 1)[:, 0] % np.uint64(len(_NOISE_WINDOWS))).astype(np.int64)
    # relative to the local ink level, so the background stays exactly black as in MNIST scans
    grain = noise * _NOISE_WINDOWS[start].reshape(B, _SIZE, _SIZE)
    grain += _F32(1.0)
    img *= grain
    img += _F32(0.5)
    np.maximum(img, _F32(0.0), out=img)  # a YAML may widen noise until grain = 1 + noise·N goes negative
    np.minimum(img, _F32(255.0), out=img)
    return img.astype(np.uint8)
