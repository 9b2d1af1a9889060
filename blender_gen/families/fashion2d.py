"""fashion2d: procedural garment, shoe and bag silhouettes, 28×28, normalised like Fashion-MNIST.

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) shows each product front-on (garments) or in side
view with the toe to the left (shoes), its box fitted to the frame on its longest side (so the
end rows hold the product's extremes, a collar or a hem, at full strength), light on black.
Each class here is a parametric silhouette: a union (min) and difference (max of the negated
distance) of a few signed-distance primitives — trapezoids, oriented boxes, ellipses, rings —
whose geometry is per-sample ``[b, 1]`` columns broadcast against the flat pixel grid. Coverage
is the distance in pixels turned into a one-pixel linear ramp, which anti-aliases without
supersampling. Garments use ``|u|`` so one sleeve primitive draws both sleeves.

Shape parameters are shared across classes and mean the analogous thing in each (``sleeve``
is sleeve width on tops, leg width on trousers, strap or sole thickness on shoes, handle
thickness on bags …). The fill is a procedural texture (flat, gradient, stripes, checks,
spots, print, knit) times fold shading, detail lines (seams, plackets, zips, soles, laces,
flaps; mostly darker, though a placket or a collar may be brighter, as shadows in the photo come
out once it is negated), a brighter (or darker) one-pixel rim inside the outline, a 3-tap blur or sharpen
and per-pixel noise; finally each image is stretched so its brightest pixel is 255, as every
Fashion-MNIST image is (light products on the photos' white ground come out as dim bodies with
bright outlines).

Batches are processed per class (a loop over the 10 classes and the fill kinds, never over
images); every random number comes from ``blender_gen.rng`` keyed by the sample's own seed and
all arithmetic is element-wise, so sample i's bytes depend only on (its parameters, its seed).
"""

from __future__ import annotations

import numpy as np

from otfgen.blender_gen import rng
from otfgen.blender_gen.space import choices, floats, ints
from otfgen.blender_gen.families import batch_labels, distract

NAME = "fashion2d"
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
# Fashion-MNIST's class names, by label: what plots, previews and exports call each class
CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
LABEL_PARAM = "label"
# Each parameter: its kind, the widest range it may take (or every choice), default and doc. A
# scene config narrows the ranges (configs/scene/fashion2d.yaml to a tuned prior); these reach
# wider texture, light and blur, tilt all the way round, and the distractors a new user would
# switch on. Shape parameters are in normalised units [0, 1] and mean the analogous thing in
# every class.
SPACE = {
    "label": ints(0, 9, 0, "0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 "
                  "bag, 9 ankle boot"),
    "width": floats(0.0, 1.0, 0.5, "body width (tops, dress bodice, trouser waist), sneaker toe bluntness, sandal "
                    "strap spread, boot shaft width, bag height"),
    "length": floats(0.0, 1.0, 0.5, "sleeve length, trouser rise, sandal strap reach, sneaker / boot height, bag "
                     "handle height"),
    "sleeve": floats(0.0, 1.0, 0.5, "sleeve width, trouser leg width, strap or sole thickness, bag handle thickness"),
    "neckline": floats(0.0, 1.0, 0.5, "neck opening / collar / lapel size, waistband height, shoe opening or collar, "
                       "bag handle span"),
    "heel": floats(0.0, 1.0, 0.3, "hem flare (tops, dress, trouser legs), heel height (sandal, boot), bag taper"),
    "tilt": floats(-180.0, 180.0, 0.0, "rotation in degrees about the frame centre"),
    "fill": choices(['flat', 'gradient', 'stripes', 'checks', 'spots', 'print', 'knit'], 'flat', "procedural texture "
                    "of the material"),
    "pattern_scale": floats(0.0, 1.0, 0.5, "texture period: 0 = 2 px, 1 = 12 px"),
    "contrast": floats(0.0, 1.0, 0.3, "texture depth: fraction of brightness the darkest texture removes"),
    "brightness": floats(0.05, 1.0, 0.75, "level of the material (1 = 255) before the image is stretched to peak at "
                         "255: low = a dim body inside a bright rim, as light products on the photos' white ground "
                         "come out"),
    "rim": floats(0.0, 1.0, 0.8, "level of the one-pixel band inside the outline (1 = 255), beside brightness for "
                  "the body; the image is then stretched to peak at 255"),
    "folds": floats(0.0, 1.0, 0.1, "depth of the soft darker fold bands"),
    "noise": floats(0.0, 0.3, 0.02, "per-pixel grain std on the product, relative to its local level"),
    "blur": floats(-1.0, 1.6, 0.3, "3-tap blur strength (0 = sharp one-pixel edges, negative = sharpened, as "
                   "Fashion-MNIST was)"),
    "occlude": floats(0.0, 0.6, 0.0, "side of a background-coloured square hiding part of the image, as a fraction "
                      "of the frame (0 = none)"),
    "invert": choices(['plain', 'inverted'], 'plain', "plain, or inverted (dark on light: real garments never are)"),
}

FILLS = ("flat", "gradient", "stripes", "checks", "spots", "print", "knit")
_SIZE = IMAGE_SHAPE[0]
_F32 = np.float32
_PIX = (np.arange(_SIZE, dtype=_F32) + _F32(0.5) - _F32(_SIZE / 2))  # pixel centres about the middle
# Pixel arrays are kept flat, [b, 784], with per-sample values as [b, 1] columns: numpy's inner
# loop then runs over 784 contiguous pixels. Broadcasting [b, 1, 1] against [b, 28, 28] instead
# gives 28-long inner loops and was measured ~4× slower per op.
_X = np.tile(_PIX, _SIZE)[None, :]
_Y = np.repeat(_PIX, _SIZE)[None, :]
_N_SHAPE = 32  # per-sample shape draws (stream "shape")
_N_PAT = 10  # per-sample pattern draws (stream "pattern")
_TOP = _SIZE * _SIZE // 2  # the top half of the flat pixel rows

_NOISE = rng.normal(np.array([0x66617368], np.uint64), "fashion2d:noise-table", 1 << 16)[0]
_NOISE_WINDOWS = np.lib.stride_tricks.sliding_window_view(_NOISE, _SIZE * _SIZE)


# --------------------------------------------------------------------------------------------
# Signed-distance primitives (units: the frame's long side = 1; negative inside)
# --------------------------------------------------------------------------------------------


def _lerp(a, b, t):
    return a + (b - a) * t


def _clamp(x, lo, hi):
    """np.clip(x, lo, hi, out=x) on a temporary: a maximum and a minimum in place (np.clip on
    float32 costs several times as much, for its NaN handling)."""
    np.maximum(x, lo, out=x)
    return np.minimum(x, hi, out=x)


# The primitives work in place on their own temporaries (same operations in the same order,
# so the same bits as the plain expressions, with fewer [b, 784] arrays allocated).


def _box(u, v, cx, cy, hw, hh):
    a = u - cx
    np.abs(a, out=a)
    a -= hw
    b = v - cy
    np.abs(b, out=b)
    b -= hh
    return np.maximum(a, b, out=a)


def _obox(u, v, ax, ay, bx, by, hw):
    """Box of half-width ``hw`` around the segment a→b (square ends)."""
    dx, dy = bx - ax, by - ay
    ln = np.sqrt(dx * dx + dy * dy) + _F32(1e-6)
    dx, dy = dx / ln, dy / ln
    pu, pv = u - (ax + bx) * _F32(0.5), v - (ay + by) * _F32(0.5)
    along = pu * dx  # along = pu dx + pv dy, across = pv dx - pu dy
    across = pv * dx
    along += np.multiply(pv, dy, out=pv)
    across -= np.multiply(pu, dy, out=pu)
    np.abs(along, out=along)
    along -= ln * _F32(0.5)
    np.abs(across, out=across)
    across -= hw
    return np.maximum(along, across, out=along)


def _ellipse(u, v, cx, cy, rx, ry):
    """Approximate distance to an ellipse (exact on the axes, good enough for a 1-px ramp)."""
    du, dv = u - cx, v - cy
    du /= rx
    dv /= ry
    du *= du
    dv *= dv
    du += dv
    np.sqrt(du, out=du)
    du -= _F32(1.0)
    du *= np.minimum(rx, ry)
    return du


def _between(v, top, bottom):
    a = top - v
    return np.maximum(a, v - bottom, out=a)


def _line(d, width, outside=None):
    """Darkening of a line at signed distance d (units) of half-width ``width`` (units); d is
    a temporary and is overwritten.

    ``outside`` (> 0 off the segment of the line that is drawn) is folded in with a maximum:
    multiplying by a per-pixel boolean mask costs ~7× an arithmetic op (the bool→float cast),
    and ``np.where`` on a random per-pixel condition ~50× (branch misprediction).
    """
    a = np.abs(d, out=d)
    if outside is not None:
        a = np.maximum(a, outside, out=a if np.broadcast(a, outside).shape == a.shape else None)
    a /= -width
    a += _F32(1.0)
    return np.maximum(a, _F32(0.0), out=a)  # a >= 0, so only the floor needs clipping


def _flag(cond):
    """A per-sample [b,1] condition as float32 0/1 (cheap: b elements, not b·784)."""
    return cond.astype(_F32)


def _wave(f, ang, phase, x, y):
    """A plane wave sin(f·(x cos θ + y sin θ) + φ) for per-sample [b,1] f, θ, φ."""
    a = (f * np.cos(ang)) * x
    a += (f * np.sin(ang)) * y
    a += phase
    return np.sin(a, out=a)


# --------------------------------------------------------------------------------------------
# Classes. Each ``_shape`` gets u (right), v (down) in units with v in [0, H] and u centred,
# its parameters p (name -> [b,1], all but tilt in [0, 1]) and shape draws r [b,1,n]; it
# returns (signed distance, detail darkening in [0, 1]). ``_HEIGHT`` gives H per class: tops
# and trousers are 1 tall and at most 1 wide; shoes and bags are 1 wide.
# --------------------------------------------------------------------------------------------


def _top(u, v, p, r, *, sleeve_len, sleeve_drop, body_w, hem, sleeve_w=_F32(1.0), no_sleeves=_F32(0.0), neck=_F32(1.0),
         gather=_F32(0.0), shoulder=None, closed=None, stand=(0.01, 0.04), hem_v=None):
    """Shared upper-body garment: body trapezoid (drawn in below a rib hem by ``gather``), the
    neck band on top with the shoulders sloping down from it (``shoulder``, ``stand``), two
    sleeves, a neck opening (shown as a patch on most, cut on the rest, neither if ``closed``).
    ``hem_v`` (< 1) ends the body above the bottom of the frame, where the cuffs then reach.
    Returns (distance, seam darkening, |u|, sleeve half-width)."""
    au = np.abs(u)
    bw = body_w
    nw = (_F32(0.06) + _F32(0.07) * p["neckline"]) * neck
    # shoulder drop at the edge of the body
    sh = _F32(0.03) + _F32(0.1) * r[..., 0] if shoulder is None else shoulder
    # a rib hem (`gather` > 0) draws the body in below the rib line
    end = _F32(1.0) if hem_v is None else hem_v
    rib_v = (_F32(0.9) + _F32(0.06) * r[..., 3]) * end
    hw = _lerp(bw, bw * hem, v)
    if np.ndim(gather):
        hw -= gather * bw * _clamp((v - rib_v) * _F32(30.0), _F32(0.0), _F32(1.0))
    body = np.maximum(_between(v, _F32(0.0), end), np.subtract(au, hw, out=hw))
    # the back of the collar is the highest point, level across the neck; the shoulders slope
    # down from its ends a step lower (the neck band stands `stand` = (low, span) above the
    # shoulder seams: a pullover's crew neck hardly, a shirt's collar up to 2 px, so that in the
    # photos a shirt's top rows are much narrower than a pullover's; the top row holds the
    # collar, not a notch)
    cn = nw * _F32(0.9)
    out = au - cn
    np.maximum(out, _F32(0.0), out=out)
    band = np.minimum(out * _F32(30.0), _F32(1.0))
    band *= _F32(stand[0]) + _F32(stand[1]) * r[..., 20]
    t = sh * out
    t /= np.maximum(bw - cn, _F32(0.03))
    t += band
    t -= v
    t *= _F32(0.9)
    np.maximum(body, t, out=body)
    # sleeve: from the shoulder, outwards and down by `sleeve_drop` (radians below horizontal)
    sw = (_F32(0.05) + _F32(0.035) * p["sleeve"]) * sleeve_w
    inset = np.where(sleeve_drop < _F32(1.2), _F32(-0.5), _F32(0.2))  # short sleeves start inside the body
    ax, ay = bw + sw * inset, sh + sw * _F32(0.6)
    # long sleeves end at or above the hem (the photos frame the whole garment, so a cuff never
    # runs off the bottom edge), above the rib where there is one; where the body ends short of
    # the frame's bottom (``hem_v``), the cuffs reach it, as on many pullovers and coats
    cap = np.where(gather > _F32(0.0), rib_v - _F32(0.02), _F32(0.97))
    if hem_v is not None:
        cap = np.where(hem_v < _F32(1.0), _F32(1.0), cap)
    ln = np.minimum(sleeve_len, (cap - ay) / np.sin(sleeve_drop))
    bx = ax + ln * np.cos(sleeve_drop)
    by = ay + ln * np.sin(sleeve_drop)
    sl = _obox(au, v, ax, ay, bx, by, sw)
    sl += _F32(9.0) * no_sleeves
    d = np.minimum(body, sl)
    # neck: an ellipse cut from the top
    nd = (_F32(0.03) + _F32(0.08) * p["neckline"]) * (_F32(0.6) + _F32(0.8) * r[..., 1])
    # on most, as in the photos, the inside of the back shows through the neck: the collar's back
    # stays (at most a shallow notch) and the opening is a darker patch; the rest (and wide
    # sleeveless necks) are cut open; on coats closed to the neck (zip, stand collar or hood)
    # neither shows
    inside = (r[..., 18] < _F32(0.75)) & (neck < _F32(1.5))
    back = nd * np.where(inside, _F32(0.3) * r[..., 19], _F32(1.0))
    if closed is not None:
        inside &= ~closed
        back *= _flag(~closed)
    d, patch = _neck(d, u, v, nw, nd, back, (_F32(0.4) + _F32(0.6) * r[..., 19]) * _flag(inside))
    # the sleeve/body seam, and sleeves shaded apart from the body (outside the product both
    # are masked anyway)
    shade = _clamp(body * _F32(40.0), _F32(0.0), _F32(0.4))
    shade *= r[..., 10]
    seam = np.maximum(_line(sl - body, _F32(0.02)), shade, out=shade)
    np.maximum(seam[:, :_TOP], patch, out=seam[:, :_TOP])
    return d, seam, au, sw


def _neck(d, u, v, nw, nd, back, shade):
    """Cut the neck (an ellipse nw × nd at the top centre) from ``d`` above ``v = back``; the rest
    of the opening, where the back shows through, is a patch darkened by ``shade`` (0 = none).

    Returns (d, patch): the patch lies inside the neck, in the top half of the frame for any
    tilt up to 40 degrees, so it is worked out there only ([b, _TOP] flat pixels).
    """
    ne = _ellipse(u, v, _F32(0.0), _F32(0.0), nw, nd)
    d = np.maximum(d, -np.maximum(ne, v - back))
    patch = ne[:, :_TOP] * _F32(-30.0)
    return d, _clamp(patch, _F32(0.0), shade)


# Front details of upper-body garments and how often each class shows them. In the real
# photos no detail is certain (a pullover may have a zip, a coat none), and making them certain
# here lets the model learn one-line shortcuts that do not transfer to the photos. Columns:
# centre line (zip / placket), shirt collar, rib hem, chest print, pockets.
# The centre line is on about half the coats and shirts: most real ones show no visible zip or
# placket at 28 px, and a model that expects one reads them as pullovers.
_FRONT_P = {
    0: (0.05, 0.10, 0.20, 0.40, 0.05),  # T-shirt / top
    2: (0.10, 0.05, 0.70, 0.30, 0.05),  # pullover
    4: (0.55, 0.30, 0.20, 0.05, 0.50),  # coat
    6: (0.55, 0.90, 0.10, 0.10, 0.20),  # shirt
}


def _front(cls, u, v, au, bw, p, r, hem_v=_F32(1.0)):
    """(darkening, brightening) from the class's front details, each present with its _FRONT_P
    probability. Shadows in the photo (a placket's or zip's edges, a collar's underside) come out
    brighter once it is negated, highlights darker, so the centre line and the collar go either way.

    A detail is worked out only on the rows (samples) that show it where it is rare (rate 0.5 or
    less): elsewhere it is 0, and the maximum with 0 leaves the others as they are, so the
    bytes are those of working it out everywhere and multiplying by the 0/1 flag."""
    pc, pk, pr, pp, po = _FRONT_P[cls]
    b = u.shape[0]
    hem_v = np.broadcast_to(hem_v, (b, 1))

    def rows(rate, on):
        """(rows to work a detail out on, its 0/1 flag there): all rows for common details."""
        if rate > 0.5:
            return slice(None), _flag(on)
        sel = np.flatnonzero(on[:, 0])
        return sel, _F32(1.0)

    lit = r[..., 27] < _F32(0.5)
    sel, f = rows(pc, r[..., 12] < _F32(pc))
    centre = np.zeros_like(u)
    c = _line(u[sel] - _F32(0.02) * (r[sel, :, 5] - _F32(0.5)), _F32(0.016), _F32(0.05) - v[sel])
    c *= (_F32(0.5) + _F32(0.5) * r[sel, :, 7]) * f
    centre[sel] = c
    dark = centre * _flag(~lit)
    bright = np.multiply(centre, _flag(lit), out=centre)
    # the collar line and flaps lie above v = 0.18, in the top half of the frame for any tilt up
    # to 40 degrees, so they are only worked out there
    sel, f = rows(pk, r[..., 13] < _F32(pk))
    tu, tv = au[sel, :_TOP], v[sel, :_TOP]
    cw = _F32(0.06) + _F32(0.07) * p["neckline"][sel]
    rs = r[sel]
    collar = _line(tu - cw * (_F32(1.0) - tv / _F32(0.14)), _F32(0.02), tv - _F32(0.14))
    collar *= f
    # a shirt collar's two flaps: a triangle from the neck band down to a point on the placket
    ch = _F32(0.1) + _F32(0.08) * rs[..., 28]
    flap = tu - (cw + _F32(0.03)) * (_F32(1.0) - tv / ch)
    np.maximum(flap, -tv, out=flap)
    flap *= _F32(-30.0)
    _clamp(flap, _F32(0.0), (_F32(0.3) + _F32(0.4) * rs[..., 29]) * f * _flag(rs[..., 30] < _F32(0.7)))
    dark[sel, :_TOP] = np.maximum(dark[sel, :_TOP], collar)
    bright[sel, :_TOP] = np.maximum(bright[sel, :_TOP], flap)
    # rib line, chest print, pockets
    sel, f = rows(pr, r[..., 14] < _F32(pr))
    rib = _line(v[sel] - (_F32(0.9) + _F32(0.06) * r[sel, :, 3]) * hem_v[sel], _F32(0.015))
    rib *= _F32(0.4) + _F32(0.6) * r[sel, :, 4]
    rib *= f
    dark[sel] = np.maximum(dark[sel], rib)
    sel, f = rows(pp, r[..., 15] < _F32(pp))
    hw = _F32(0.06) + _F32(0.08) * r[sel, :, 11]
    cy = _F32(0.3) + _F32(0.1) * r[sel, :, 3]
    chest = _box(u[sel], v[sel], _F32(0.0), cy, hw, hw * _F32(0.8))
    chest *= _F32(-40.0)
    _clamp(chest, _F32(0.0), _F32(0.7))
    chest *= f
    dark[sel] = np.maximum(dark[sel], chest)
    sel, f = rows(po, r[..., 8] < _F32(po))
    bws = bw[sel]
    side = au[sel] - bws * _F32(0.55)
    np.abs(side, out=side)
    side -= bws * _F32(0.3)
    pocket = _line(v[sel] - (_F32(0.6) + _F32(0.1) * r[sel, :, 7]), _F32(0.015), side)
    pocket *= f
    dark[sel] = np.maximum(dark[sel], pocket)
    return dark, bright


def _gather(cls, r):
    """How far a rib hem (present with the class's _FRONT_P rate, as the rib line) draws the body in."""
    # a pullover's knitted rib pulls in hard: in the photos the bottom rows of a pullover are a
    # third of its full width (sleeves included), of a coat or shirt two thirds
    amount = _F32(0.12) + _F32(0.28) * r[..., 21] if cls == 2 else _F32(0.05) + _F32(0.15) * r[..., 21]
    return amount * _flag(r[..., 14] < _F32(_FRONT_P[cls][2]))


def _tshirt(u, v, p, r):
    bw = _F32(0.15) + _F32(0.15) * p["width"]  # from the narrow long tees the photos show to boxy ones
    ln = _F32(0.15) + _F32(0.2) * p["length"]
    drop = _F32(0.4) + _F32(0.6) * r[..., 2]  # sleeves from level to hanging at 57 degrees
    tank = _flag(r[..., 9] < _F32(0.2))  # a fifth are sleeveless tops with a wide neck
    d, seam, au, _ = _top(u, v, p, r, sleeve_len=ln, sleeve_drop=drop, body_w=bw, hem=_F32(0.9) + _F32(0.2) * p["heel"],
                          sleeve_w=_F32(1.5), no_sleeves=tank, neck=_F32(1.0) + tank)
    dark, lit = _front(0, u, v, au, bw, p, r)
    return d, np.maximum(_F32(0.5) * seam, dark) - lit


def _pullover(u, v, p, r):
    # pullovers, coats and shirts share one range of outlines (from A-shaped to boxy): in the
    # real photos they differ mostly by the front, and giving each class its own outline would
    # teach the model a cue the photos do not carry
    bw = _F32(0.17) + _F32(0.1) * p["width"]
    # in the photos the cuffs of most pullovers hang as low as the rib hem or lower: the bottom
    # row holds the two cuffs and the body ends a pixel or three above (a shirt's body is the
    # longest part); there the sleeves reach the bottom whatever their length, and length sets
    # where the body ends
    short = r[..., 24] < _F32(0.6)
    hem_v = np.where(short, _F32(0.88) + _F32(0.05) * r[..., 25] + _F32(0.05) * p["length"], _F32(1.0))
    ln = _F32(0.72) + _F32(0.25) * p["length"] + _F32(0.15) * _flag(short)
    drop = _F32(1.36) + _F32(0.22) * r[..., 2]  # sleeves hang close to the body, as in the photos
    d, seam, au, sw = _top(u, v, p, r, sleeve_len=ln, sleeve_drop=drop, body_w=bw, hem=_F32(0.88) + _F32(0.24) * p["heel"], gather=_gather(2, r),
                           shoulder=_F32(0.02) + _F32(0.09) * r[..., 0], stand=(0.01, 0.02), hem_v=hem_v)
    dark, lit = _front(2, u, v, au, bw, p, r, hem_v)
    return d, np.maximum(_F32(0.6) * seam, dark) - lit


def _coat(u, v, p, r):
    # the pullover's outlines, a neck opening from small (high collar) to wide, lapels on the
    # open ones
    bw = _F32(0.17) + _F32(0.1) * p["width"]
    short = r[..., 24] < _F32(0.5)  # cuffs lower than the hem, as on pullovers
    hem_v = np.where(short, _F32(0.9) + _F32(0.04) * r[..., 25] + _F32(0.04) * p["length"], _F32(1.0))
    ln = _F32(0.72) + _F32(0.25) * p["length"] + _F32(0.15) * _flag(short)
    drop = _F32(1.36) + _F32(0.22) * r[..., 2]  # sleeves hang close to the body, as in the photos
    # in the photos coats slope more at the shoulders than pullovers, and many have a hood
    # (a dome over the collar) or a stand-up collar
    stand = r[..., 16] < _F32(0.15)
    hood = (r[..., 16] >= _F32(0.15)) & (r[..., 16] < _F32(0.45))
    d, seam, au, sw = _top(u, v, p, r, sleeve_len=ln, sleeve_drop=drop, body_w=bw, hem=_F32(0.88) + _F32(0.24) * p["heel"], gather=_gather(4, r),
                          neck=_F32(0.7) + _F32(0.6) * r[..., 9], closed=r[..., 16] < _F32(0.6), shoulder=_F32(0.04) + _F32(0.12) * r[..., 0] + _F32(0.04) * _flag(hood),
                          hem_v=hem_v)
    hry = _F32(0.06) + _F32(0.06) * r[..., 22]
    hrx = _F32(0.09) + _F32(0.06) * r[..., 23] + _F32(0.03) * p["neckline"]
    hd = _ellipse(u, v, _F32(0.0), hry, hrx, hry)
    d = np.minimum(d, hd + _F32(9.0) * _flag(~hood))
    hood_line = _line(hd + _F32(0.03), _F32(0.015), v - hry) * _flag(hood)
    dark, lit = _front(4, u, v, au, bw, p, r, hem_v)
    lap_depth = _F32(0.15) + _F32(0.25) * r[..., 6]
    lapel = _line(au - (_F32(0.1) + _F32(0.06) * p["neckline"]) * (_F32(1.0) - v / lap_depth), _F32(0.02), v - lap_depth)
    # most coats in the photos close at the neck: a stand-up collar or hood fills the neck hole
    # that pullovers, shirts and T-shirts show
    cw = _F32(0.07) + _F32(0.06) * p["neckline"]
    collar = _box(u, v, _F32(0.0), _F32(0.04), cw, _F32(0.04) + _F32(0.01) * r[..., 17])  # its top at the frame top, like every class's
    d = np.minimum(d, collar + _F32(9.0) * _flag(~stand))
    cline = _line(v - _F32(0.07), _F32(0.015), au - cw) * _flag(stand)
    return d, np.maximum(np.maximum(np.maximum(_F32(0.6) * seam, lapel * r[..., 4] * _flag(r[..., 16] >= _F32(0.6))), np.maximum(cline, hood_line)),
                         dark) - lit


def _shirt(u, v, p, r):
    bw = _F32(0.17) + _F32(0.1) * p["width"]
    # the class holds blouses and tops too: a quarter short-sleeved, a tenth sleeveless; long
    # sleeves are wider than a pullover's and hang close to the body (in the photos a gap shows
    # between them on 14% of the rows, against 34% on pullovers)
    short = r[..., 9] < _F32(0.25)
    bare = r[..., 9] > _F32(0.9)
    ln = np.where(short, _F32(0.1) + _F32(0.12) * p["length"], _F32(0.68) + _F32(0.27) * p["length"])
    drop = np.where(short, _F32(0.4) + _F32(0.6) * r[..., 2], _F32(1.42) + _F32(0.16) * r[..., 2])
    d, seam, au, sw = _top(u, v, p, r, sleeve_len=ln, sleeve_drop=drop, body_w=bw, hem=_F32(0.88) + _F32(0.24) * p["heel"], gather=_gather(6, r),
                           shoulder=_F32(0.04) + _F32(0.11) * r[..., 0], sleeve_w=_F32(1.15), no_sleeves=_flag(bare),
                           stand=(0.02, 0.03))
    # shirt tails: on some, the hem curves up towards the sides
    tail = _F32(0.06) * r[..., 6] * _flag(r[..., 10] < _F32(0.5))
    d = np.maximum(d, v - _F32(1.0) + tail * np.square(np.minimum(au / bw, _F32(1.0))))
    dark, lit = _front(6, u, v, au, bw, p, r)
    return d, np.maximum(_F32(0.6) * seam, dark) - lit


def _trouser(u, v, p, r):
    au = np.abs(u)
    # the real photos show straight legs side by side with a narrow gap, hardly any flare
    top_w = _F32(0.13) + _F32(0.08) * p["width"]
    leg = _F32(0.05) + _F32(0.035) * p["sleeve"]  # half-width of a leg at the hem
    ankle_c = np.maximum(top_w - leg * (_F32(0.75) - _F32(0.3) * p["heel"]) + _F32(0.02) * (r[..., 0] - _F32(0.5)),
                         leg + _F32(0.025))
    outer = _lerp(top_w, ankle_c + leg, _clamp(v.copy(), _F32(0.0), _F32(1.0)))
    crotch = _F32(0.22) + _F32(0.18) * (_F32(1.0) - p["length"])
    t = _clamp((v - crotch) / (_F32(1.0) - crotch), _F32(0.0), _F32(1.0))
    # the legs part at the crotch with a visible gap that widens a little to the hem
    inner = (ankle_c - leg) * (_F32(0.7) + _F32(0.3) * t) * _clamp((v - crotch) * _F32(200.0), _F32(0.0), _F32(1.0))
    d = np.maximum(np.maximum(au - outer, inner - au), _between(v, _F32(0.0), _F32(1.0)))
    band = _F32(0.03) + _F32(0.06) * p["neckline"]
    d = np.minimum(d, _box(u, v, _F32(0.0), band * _F32(0.5), top_w + _F32(0.06) * p["neckline"], band * _F32(0.5)))  # waistband
    detail = np.maximum(_line(v - band, _F32(0.012)), _F32(0.5) * _line(u.copy(), _F32(0.012), v - crotch))
    return d, detail


def _dress(u, v, p, r):
    au = np.abs(u)
    # the photos show dresses from a straight column to a mild A-line, broad at the shoulders
    top = _F32(0.1) + _F32(0.07) * p["width"] + _F32(0.04) * p["sleeve"]
    waist_v = _F32(0.2) + _F32(0.15) * p["length"] + _F32(0.1) * r[..., 0]
    waist = top * (_F32(0.75) + _F32(0.3) * r[..., 1])
    hem = waist + _F32(0.01) + _F32(0.13) * p["heel"]
    # piecewise linear: top -> waist over [0, waist_v], waist -> hem over [waist_v, 1]
    hw = top + (waist - top) * _clamp(v / waist_v, _F32(0.0), _F32(1.0)) + (hem - waist) * _clamp((v - waist_v) / (_F32(1.0) - waist_v), _F32(0.0), _F32(1.0))
    d = np.maximum(au - hw, _between(v, _F32(0.0), _F32(1.0)))
    # shoulders slope from the ends of the neck band (so the neckline moves the outline even
    # where the neck is not cut open)
    nw = top * (_F32(0.3) + _F32(0.45) * p["neckline"])
    out = np.maximum(au - nw * _F32(0.9), _F32(0.0))
    band = (_F32(0.02) + _F32(0.03) * r[..., 9]) * np.minimum(out * _F32(30.0), _F32(1.0))  # neck band step
    d = np.maximum(d, ((_F32(0.01) + _F32(0.05) * r[..., 7]) * out / (top - nw * _F32(0.9)) + band - v) * _F32(0.9))
    # sleeves (short or long, hanging close to the body) for some, straps for the rest
    has_sl = r[..., 2] < _F32(0.45)
    sw = _F32(0.04) + _F32(0.04) * p["sleeve"]
    ln = _F32(0.08) + _F32(0.6) * p["length"]
    drop = _F32(1.05) + _F32(0.45) * r[..., 6]
    ax, ay = top - sw * _F32(0.5), sw * _F32(1.2)
    ln = np.minimum(ln, (_F32(0.95) - ay) / np.sin(drop))
    sl = _obox(au, v, ax, ay, ax + ln * np.cos(drop), ay + ln * np.sin(drop), sw)
    d = np.minimum(d, sl + _F32(9.0) * _flag(~has_sl))
    # neck: on most the back of the dress shows through it (a darker patch, at most a shallow
    # notch); the rest are cut open
    nd = _F32(0.04) + _F32(0.12) * p["neckline"]
    inside = r[..., 4] < _F32(0.6)
    back = nd * np.where(inside, _F32(0.3) * r[..., 5], _F32(1.0))
    d, patch = _neck(d, u, v, nw, nd, back, (_F32(0.3) + _F32(0.6) * r[..., 5]) * _flag(inside))
    belt = _line(v - waist_v, _F32(0.012)) * r[..., 3]
    np.maximum(belt[:, :_TOP], patch, out=belt[:, :_TOP])
    return d, belt


def _sandal(u, v, p, r, H):
    sole = _F32(0.025) + _F32(0.04) * p["sleeve"]
    heel_h = H - _F32(0.22)  # rise of the heel above the toe, from the frame height
    # sole: from the toe (left, on the ground) rising to the heel seat
    toe_x, seat_x = _F32(-0.5) + sole, _F32(0.3) + _F32(0.08) * r[..., 0]
    ground = H - sole
    mid_x = _F32(-0.15)
    d_sole = np.minimum(_obox(u, v, toe_x, ground, mid_x, ground, sole),
                        _obox(u, v, mid_x, ground, seat_x, ground - heel_h, sole))
    d_sole = np.minimum(d_sole, _obox(u, v, seat_x, ground - heel_h, _F32(0.5) - sole, ground - heel_h, sole))
    # heel: a post under the seat when the heel is raised
    post_w = _F32(0.02) + _F32(0.05) * r[..., 1]
    d_heel = _box(u, v, _F32(0.45) - post_w, ground - heel_h * _F32(0.5), post_w, heel_h * _F32(0.5) + sole)
    d = np.minimum(d_sole, d_heel + _F32(9.0) * _flag(heel_h <= _F32(0.05)))
    # some heeled sandals in the photos stand on a wedge: the space under the sole filled
    sole_v = ground - heel_h * _clamp((u - mid_x) / (seat_x - mid_x), _F32(0.0), _F32(1.0))
    wedge = np.maximum(np.maximum(sole_v - v, v - H), np.maximum(mid_x - u, u - _F32(0.5) + sole))
    d = np.minimum(d, wedge + _F32(9.0) * _flag(r[..., 11] > _F32(0.3)))
    # straps as the photos show them in side view: toe and instep straps are thin "^" bands
    # leaning over the foot from the sole, the ankle strap rises from the heel seat to a band
    # round the ankle at the top of the frame (round arches read as no real sandal)
    st = _F32(0.022) + _F32(0.035) * p["sleeve"]
    top_v = _F32(0.02) + _F32(0.08) * p["neckline"]
    spread = _F32(0.7) + _F32(0.3) * p["width"]  # how far apart along the foot the straps stand
    for k, x0 in enumerate((-0.3, -0.05)):
        x0 = _F32(x0) * spread
        ground_k = ground - heel_h * _clamp((x0 - mid_x) / (seat_x - mid_x), _F32(0.0), _F32(1.0))
        rx = _F32(0.05) + _F32(0.08) * r[..., 2 + k]
        hgt = (_F32(0.05) + _F32(0.3) * p["length"] * (_F32(0.5) + _F32(0.5) * r[..., 5 + k])) * (_F32(0.8) + _F32(0.4) * p["neckline"])
        hgt = np.maximum(np.minimum(hgt, ground_k - top_v), _F32(0.02))
        apx = x0 + rx * (r[..., 7 + k] - _F32(0.5))
        d = np.minimum(d, np.minimum(_obox(u, v, x0 - rx, ground_k, apx, ground_k - hgt, st),
                                     _obox(u, v, apx, ground_k - hgt, x0 + rx, ground_k, st)))
        if k == 0:
            # on a third the front strap is a wide band over the forefoot (slides, mules, woven
            # flats: the dense sandals the photos show), a dome standing on the sole
            vamp = np.maximum(_ellipse(u, v, x0, ground_k, rx + _F32(0.08), hgt), v - ground_k)
            d = np.minimum(d, vamp + _F32(9.0) * _flag(r[..., 12] >= _F32(0.33)))
    back_x = seat_x - _F32(0.05) * r[..., 4]
    ank_x = back_x - _F32(0.06) - _F32(0.1) * r[..., 9]
    seat_v = ground - heel_h
    rise = _obox(u, v, back_x, seat_v, ank_x, top_v, st)
    band = _obox(u, v, ank_x - _F32(0.12), top_v + _F32(0.04), _F32(0.48), top_v, st)
    has_ankle = _flag(r[..., 10] < _F32(0.7))
    d = np.minimum(d, np.minimum(rise, band) + _F32(9.0) * (_F32(1.0) - has_ankle))
    return d, _F32(0.0)


def _sneaker(u, v, p, r, H):
    sole = _F32(0.05) + _F32(0.05) * p["sleeve"]
    # upper: under a top line rising straight from the toe (left) to the collar, then level
    # to the back; width sets the toe's height (bluntness), heel how far the back dips
    toe_h = H * (_F32(0.2) + _F32(0.3) * p["width"])
    uc = _F32(0.12) + _F32(0.18) * r[..., 0]
    # a low toe cap first (flat for toe_len), then the lacing rises, mildly convex (t(1.5 - t/2)),
    # to the collar: the photos show low shoes, not wedges rising from the tip
    toe_len = _F32(0.12) + _F32(0.2) * r[..., 5]
    slope = (H - toe_h) / (uc + _F32(0.5) - toe_len)
    t = _clamp((u + _F32(0.5) - toe_len) / (uc + _F32(0.5) - toe_len), _F32(0.0), _F32(1.0))
    rise = t * (_F32(1.5) - _F32(0.5) * t)
    dip = H * (_F32(0.1) + _F32(0.25) * (_F32(1.0) - p["heel"])) / (_F32(0.5) - uc)
    back = _clamp(u - uc, _F32(0.0), _F32(1.0))
    v_top = (H - toe_h) * (_F32(1.0) - rise) + dip * back
    d = np.maximum((v_top - v) / np.sqrt(_F32(1.0) + slope * slope), np.maximum(np.abs(u - sole * _F32(0.5)) - _F32(0.5) + sole * _F32(0.5), v - H))
    d = np.minimum(d, _box(u, v, _F32(0.0), H - sole * _F32(0.5), _F32(0.5), sole * _F32(0.5)))  # the sole runs out to the toe
    # ankle opening dips into the top at the collar
    op = _ellipse(u, v, uc + _F32(0.05) * r[..., 1], _F32(0.0), _F32(0.08) + _F32(0.1) * p["neckline"],
                  (_F32(0.05) + _F32(0.2) * p["neckline"]) * H)
    d = np.maximum(d, -op)
    # a rounded toe cap and heel: the outline stays inside a wide ellipse standing on the sole
    # (square-cornered sneakers would teach that a rounded toe means ankle boot)
    d = np.maximum(d, _ellipse(u, v, _F32(0.06), H, _F32(0.62), H * (_F32(1.0) + _F32(0.15) * r[..., 6])))
    sole_line = _line(v - (H - sole), _F32(0.015))
    lace = _line(u + v * (_F32(0.6) + _F32(0.6) * r[..., 2]) - _F32(0.05), _F32(0.03), v - H + sole) * r[..., 3]
    # two side stripes (the three-stripe / swoosh look) behind the laces
    a = u * _F32(0.6) + v
    stripes = np.maximum(_line(a - _F32(0.3), _F32(0.025)), _line(a - _F32(0.42), _F32(0.025))) * _flag(r[..., 4] > _F32(0.6))
    return d, np.maximum(np.maximum(sole_line, lace), _F32(0.6) * stripes)


def _boot(u, v, p, r, H):
    sole = _F32(0.04) + _F32(0.05) * p["sleeve"]
    foot_h = _F32(0.28) + _F32(0.12) * r[..., 0]
    foot = np.maximum(_ellipse(u, v, _F32(0.05), H - sole, _F32(0.55), foot_h), v - H)
    shaft_w = _F32(0.3) + _F32(0.2) * p["width"]
    front_top = _F32(0.5) - shaft_w
    front_bot = front_top - _F32(0.05) - _F32(0.3) * r[..., 1]
    t = _clamp(v / (H - foot_h * _F32(0.5)), _F32(0.0), _F32(1.0))
    # the shaft's top edge dips towards the front by the neckline (collar) depth
    dip = _F32(0.12) * p["neckline"] * (_F32(0.5) - u) / shaft_w
    shaft = np.maximum(np.maximum(_lerp(front_top, front_bot, t) - u, u - _F32(0.5)), _between(v, dip, H))
    # the shaft runs into the foot in a curve (instep and heel), not a step: a smooth minimum
    k = _F32(0.04) + _F32(0.12) * r[..., 4]
    h = np.maximum(k - np.abs(foot - shaft), _F32(0.0))
    h *= h
    h *= _F32(0.25) / k
    d = np.maximum(np.minimum(foot, shaft) - h, np.abs(u) - _F32(0.5))
    # a raised heel leaves a gap under the arch: the sole rises from the ball of the foot to the
    # front of the heel block (a wedge of background, as in the photos, not a rectangular notch)
    hh = _F32(0.01) + _F32(0.15) * p["heel"]
    u_heel = _F32(0.22) + _F32(0.1) * r[..., 2]
    u_ball = u_heel - _F32(0.25) - _F32(0.2) * r[..., 5]
    t = _clamp((u - u_ball) / (u_heel - u_ball), _F32(0.0), _F32(1.0))
    arch = np.maximum(H - hh * t - v, np.maximum(u_ball - u, u - u_heel))
    d = np.maximum(d, -arch)
    collar = _line(v - (_F32(0.02) + _F32(0.08) * p["neckline"]), _F32(0.02), front_top - u)
    sole_line = _line(v - (H - sole), _F32(0.015))
    seam = _line(u - _lerp(front_top, front_bot, t) - _F32(0.08), _F32(0.015)) * r[..., 3]
    return d, np.maximum(np.maximum(collar, sole_line), seam)


def _bag(u, v, p, r, H):
    au = np.abs(u)
    # a fifth have no handle, a quarter a long thin shoulder strap, the rest a handle
    strap = r[..., 4] < _F32(0.25)
    handle_h = H * np.where(strap, _F32(0.3) + _F32(0.2) * p["length"], _F32(0.1) + _F32(0.3) * p["length"])
    handle_h = handle_h * _flag(r[..., 0] > _F32(0.2))
    taper = _F32(0.25) * p["heel"]
    body = np.maximum(au - _lerp(_F32(0.5) * (_F32(1.0) - taper), _F32(0.5), (v - handle_h) / (H - handle_h)),
                      _between(v, handle_h, H))
    th = np.where(strap, _F32(0.01) + _F32(0.01) * p["sleeve"], _F32(0.02) + _F32(0.03) * p["sleeve"])
    hw = np.where(strap, _F32(0.3) + _F32(0.15) * p["neckline"], _F32(0.12) + _F32(0.25) * p["neckline"])
    ring = np.abs(_ellipse(u, v, _F32(0.0), handle_h + th, hw, np.maximum(handle_h, _F32(0.01)))) - th
    ring = np.maximum(ring, v - handle_h - th * _F32(2.0))
    d = np.minimum(body, ring + _F32(9.0) * _flag(handle_h <= _F32(0.0)))
    flap = _line(v - handle_h - (H - handle_h) * (_F32(0.15) + _F32(0.3) * r[..., 1]), _F32(0.015)) * _flag(r[..., 2] > _F32(0.4))
    frame = _line(body + _F32(0.05), _F32(0.012)) * r[..., 3]
    return d, np.maximum(flap, frame)


def _garment(fn):
    def shape(u, v, p, r, H):
        return fn(u, v, p, r)
    return shape


# class -> (shape, frame height H as a function of p [b,1,1] and r)
_CLASSES = {
    0: (_garment(_tshirt), None),
    1: (_garment(_trouser), None),
    2: (_garment(_pullover), None),
    3: (_garment(_dress), None),
    4: (_garment(_coat), None),
    # half the sandals in the photos are flat (a thin sole and low straps), half heeled
    5: (_sandal, lambda p, r: np.where(r[..., 15] < _F32(0.5), _F32(0.25) + _F32(0.15) * p["heel"],
                                       _F32(0.3) + _F32(0.65) * p["heel"])),
    6: (_garment(_shirt), None),
    7: (_sneaker, lambda p, r: _F32(0.3) + _F32(0.3) * p["length"]),
    8: (_bag, lambda p, r: _F32(0.45) + _F32(0.5) * p["width"]),  # from flat clutches to tall totes
    9: (_boot, lambda p, r: _F32(0.52) + _F32(0.43) * p["length"]),  # down to the low ankle boots of the photos
}
_SHAPE_PARAMS = ("width", "length", "sleeve", "neckline", "heel")


# --------------------------------------------------------------------------------------------
# Fill
# --------------------------------------------------------------------------------------------


def _pattern(kind: int, x, y, q, scale, contrast):
    """Multiplicative texture in [1 - contrast, 1]; x, y in pixels, q [b,1,n] pattern draws."""
    if kind == 0:  # flat
        return None
    ang = _F32(2 * np.pi) * q[..., 0]
    ph = _F32(2 * np.pi) * q[..., 1]
    f = _F32(2 * np.pi) / (_F32(2.0) + _F32(10.0) * scale)  # period 2 (fine) to 12 px (coarse)
    if kind == 1:  # gradient
        t = x * np.cos(ang)
        t += y * np.sin(ang)
        t *= _F32(1.0 / 28.0)
        t += _F32(0.5)
    elif kind == 2:  # stripes
        t = _wave(f, ang, ph, x, y)
        t *= _F32(2.0)
        t += _F32(0.5)
    elif kind in (3, 4):  # checks, spots
        t = _wave(f, ang, ph, x, y)
        t *= _wave(f, ang + _F32(np.pi / 2), ph, x, y)
        if kind == 3:
            t *= _F32(3.0)
            t += _F32(0.5)
        else:
            t -= _F32(0.5)
            t += _F32(0.4) * q[..., 2]
            t *= _F32(4.0)
    elif kind == 5:  # print: blobs from three random plane waves
        t = _wave(f, ang, ph, x, y)
        for k in range(2):
            fk = f * (_F32(0.6) + _F32(0.8) * q[..., 5 + k])
            t += _wave(fk, _F32(2 * np.pi) * q[..., 3 + k], _F32(2 * np.pi) * q[..., 7 + k], x, y)
        t += _F32(0.3)
    else:  # knit / denim: fine near-vertical ribs (the grain comes with the noise)
        t = _wave(_F32(np.pi) * (_F32(0.5) + _F32(0.5) * q[..., 2]), _F32(0.3) * (q[..., 0] - _F32(0.5)), ph, x, y)
        t += _F32(1.0)
        t *= contrast * _F32(0.5)
        return np.subtract(_F32(1.0), t, out=t)
    # 1 - contrast · clamp(t, 0, 1), in place
    _clamp(t, _F32(0.0), _F32(1.0))
    t *= contrast
    return np.subtract(_F32(1.0), t, out=t)


def _col(params: dict, name: str, idx=None) -> np.ndarray:
    v = np.asarray(params[name], dtype=_F32)
    return (v if idx is None else v[idx])[:, None]


def render(params: dict[str, np.ndarray], seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Render a batch: params name -> array [B], seeds uint64 [B] -> (uint8 [B,28,28], int64 [B])."""
    seeds, label = batch_labels(params, seeds, NUM_CLASSES, LABEL_PARAM)
    B = seeds.shape[0]
    if B == 0:
        return np.zeros((0,) + IMAGE_SHAPE, np.uint8), label.copy()

    shape_r = rng.uniform(seeds, "shape", _N_SHAPE)[:, None, :]
    frame_r = rng.uniform(seeds, "frame", 3)[:, None, :]
    # alpha: coverage × detail darkening × brightness in grey levels; the texture multiplies it
    alpha = np.empty((B, _SIZE * _SIZE), _F32)
    level = _col(params, "brightness") * _F32(255.0)
    rim = _col(params, "rim") * _F32(255.0)
    for c, (shape, height) in _CLASSES.items():
        idx = np.flatnonzero(label == c)
        if idx.size == 0:
            continue
        p = {k: _col(params, k, idx) for k in _SHAPE_PARAMS}
        r = shape_r[idx]
        fr = frame_r[idx]
        H = height(p, r) if height is not None else _F32(1.0)
        # pixels -> shape units: the long side spans 27.5..28.5 px, tilt about the centre.
        # Fashion-MNIST fits each product's box to the frame, so the top row holds the product's
        # highest point at full strength even when that is a narrow collar: garments (H = 1) sit
        # 0.35 px high, their top edge 0.4..0.85 px above the frame. (Centred at 27..28 px the top
        # row of tops would be half empty, less so on coats, and the model reads the class from that.)
        s = (_F32(27.5) + _F32(1.0) * fr[..., 0]) / np.maximum(H, _F32(1.0))
        ang = np.deg2rad(_col(params, "tilt", idx))
        ca, sa = np.cos(ang) / s, np.sin(ang) / s
        u = ca * _X
        u += sa * _Y
        v = ca * _Y
        v -= sa * _X
        v += H * _F32(0.5)
        if height is None:
            v += _F32(0.35) / s
        d, det = shape(u, v, p, r, H)
        # distance in pixels -> coverage, a one-pixel ramp
        d *= -s
        d += _F32(0.5)
        # the outline band (the first pixel inside the edge) at the rim level, the rest at the
        # material's level: light products on the photos' white ground show as dim bodies
        # with bright outlines once negated
        lvl = level[idx]
        edge = _clamp(_F32(2.0) - d, _F32(0.0), _F32(1.0))
        edge *= rim[idx] - lvl
        edge += lvl
        _clamp(d, _F32(0.0), _F32(1.0))
        det = det * -(_F32(0.3) + _F32(0.5) * fr[..., 1])
        det += _F32(1.0)
        edge *= det
        d *= edge
        alpha[idx] = d

    # -- texture × folds, plus grain -------------------------------------------------------------
    q = rng.uniform(seeds, "pattern", _N_PAT)[:, None, :]
    fill = np.asarray(params["fill"], dtype=np.int64)
    img = np.ones((B, _SIZE * _SIZE), _F32)
    for k in range(len(FILLS)):
        idx = np.flatnonzero(fill == k)
        if idx.size == 0:
            continue
        t = _pattern(k, _X, _Y, q[idx], _col(params, "pattern_scale", idx), _col(params, "contrast", idx))
        if t is not None:
            img[idx] = t
    # folds: soft darker vertical bands, 1 - folds·(1 + sin)/2, built on the 28 columns and
    # broadcast down the rows (a per-pixel sine costs ~8 arithmetic ops)
    fq = rng.uniform(seeds, "folds", 2)
    folds = _col(params, "folds")[:, 0]
    f = (_F32(0.25) + _F32(0.5) * fq[:, :1]) * _PIX[None, :] + _F32(6.3) * fq[:, 1:]
    f = (_F32(1.0) - _F32(0.5) * folds)[:, None] - (_F32(0.5) * folds)[:, None] * np.sin(f)
    img.reshape(B, _SIZE, _SIZE)[...] *= f[:, None, :]
    # grain: a window of a fixed table of normal deviates at a per-sample offset (one gather
    # instead of 784 hashes per image), relative to the local level so the background stays black
    start = (rng.bits(seeds, "noise", 1)[:, 0] % np.uint64(len(_NOISE_WINDOWS))).astype(np.int64)
    grain = _NOISE_WINDOWS[start]
    grain *= _col(params, "noise")
    img += grain
    img *= alpha

    # -- blur (separable 3-tap [a, 1-2a, a]), quantise ------------------------------------------
    # on the flat rows a vertical neighbour is 28 away and a horizontal one 1 away; the
    # horizontal pass masks the pixel that would wrap into the next row
    # a·pixel is computed once per pass and shifted both ways; the horizontal shift's row
    # wrap-arounds (column 0 <- column 27 of the row above and back) are taken out after, on
    # 27 strided elements per image, instead of masking all 784
    a = _col(params, "blur") * _F32(0.3)
    c = _F32(1.0) - _F32(2.0) * a
    h = a * img
    out = img * c
    out[:, _SIZE:] += h[:, :-_SIZE]
    out[:, :-_SIZE] += h[:, _SIZE:]
    np.multiply(out, a, out=h)
    img = np.multiply(out, c, out=out)
    img[:, 1:] += h[:, :-1]
    img[:, :-1] += h[:, 1:]
    img[:, _SIZE::_SIZE] -= h[:, _SIZE - 1:-1:_SIZE]
    img[:, _SIZE - 1:-1:_SIZE] -= h[:, _SIZE::_SIZE]
    # every Fashion-MNIST image peaks at 255: stretch each sample's brightest pixel to it (so
    # nothing exceeds 255 and only the floor needs clipping)
    img *= _F32(255.0) / np.maximum(img.max(axis=1, keepdims=True), _F32(1.0))
    np.maximum(img, _F32(0.0), out=img)
    return distract(img.astype(np.uint8).reshape(B, _SIZE, _SIZE), params, seeds), label.copy()
