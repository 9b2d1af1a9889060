"""Throughput of the fashion2d family per CPU core, beside a naive per-image PIL renderer.

The baseline draws comparable silhouettes the usual one-image-at-a-time way: for each sample a
PIL image at 2× size, a body polygon, two sleeve or leg polygons and a neck ellipse drawn with
ImageDraw, a per-image stripe texture multiplied in, a Gaussian blur and a resize to 28×28.
Its geometry comes from the same parameters (width, length, sleeve, neckline, heel, tilt) but
is simpler than fashion2d's (no per-class shapes, no detail lines), so the ratio flatters PIL.
Threads are pinned to one (env vars before numpy and torch load, ``torch.set_num_threads(1)``),
so the figures are per core.

    python benchmarks/bench_fashion2d.py [--batch 512] [--seconds 3]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # must precede the numpy / torch imports

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from otfgen.blender_gen.families import default_space, load  # noqa: E402

torch.set_num_threads(1)


def rate(fn, n_per_call: int, seconds: float) -> float:
    """Images per CPU-second: best of repeated calls (after one warm-up) within ``seconds``.

    Process CPU time, not wall time, so that other jobs sharing the machine's cores do not
    count against the renderer (one thread, so CPU-seconds are core-seconds).
    """
    fn()
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return n_per_call / max(best, 1e-9)


def pil_render(params: dict, up: int = 2) -> np.ndarray:
    """Naive baseline: one PIL image per sample, polygons at ``up``× size, texture, blur, resize."""
    n = len(params["label"])
    out = np.empty((n, 28, 28), np.uint8)
    S = 27.0 * up
    yy, xx = np.mgrid[0 : 28 * up, 0 : 28 * up].astype(np.float32)
    for i in range(n):
        w, ln, sl, nk, he = (float(params[k][i]) for k in ("width", "length", "sleeve", "neckline", "heel"))
        tilt = math.radians(float(params["tilt"][i]))
        ca, sa = math.cos(tilt), math.sin(tilt)

        def px(u, v):  # shape units (u right, v down, v in [0, 1]) -> rotated pixels
            u, v = u * S, (v - 0.5) * S
            return (14 * up + ca * u - sa * v, 14 * up + sa * u + ca * v)

        im = Image.new("L", (28 * up, 28 * up), 0)
        draw = ImageDraw.Draw(im)
        bw, hem, sw = 0.2 + 0.1 * w, (0.2 + 0.1 * w) * (0.85 + 0.25 * he), 0.045 + 0.045 * sl
        draw.polygon([px(-bw, 0.05), px(bw, 0.05), px(hem, 1.0), px(-hem, 1.0)], fill=255)
        reach = 0.1 + 0.85 * ln
        for s in (-1, 1):
            draw.polygon([px(s * bw, 0.05), px(s * (bw + 2 * sw), 0.08), px(s * (bw + 2 * sw + 0.1 * reach), reach),
                          px(s * (bw + 0.1 * reach), reach)], fill=255)
        nw, nd = 0.06 + 0.07 * nk, 0.03 + 0.1 * nk
        x0, y0 = px(-nw, -nd)
        x1, y1 = px(nw, nd)
        draw.ellipse([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=0)
        period = (2.0 + 10.0 * float(params["pattern_scale"][i])) * up
        tex = 1.0 - float(params["contrast"][i]) * 0.5 * (1.0 + np.sin(xx * (2 * np.pi / period)))
        a = np.asarray(im, np.float32) * tex * float(params["brightness"][i])
        im = Image.fromarray(a.astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.5 + float(params["blur"][i])))
        out[i] = np.asarray(im.resize((28, 28), Image.BILINEAR))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=3.0, help="timing window per measurement")
    args = ap.parse_args()

    fam, space = load("fashion2d"), default_space("fashion2d")
    params, seeds = space.sample(None, 0, args.batch)
    print(f"fashion2d, 28×28, params uniform over the full space, 1 thread (torch {torch.get_num_threads()}, "
          f"OMP/BLAS {os.environ['OMP_NUM_THREADS']})")
    for b in sorted({256, args.batch, 1024}):
        p, s = space.sample(None, 0, b)
        r = rate(lambda: fam.render(p, s), b, args.seconds)
        print(f"  fashion2d.render      batch {b:5d}: {r:10,.0f} images/s per core")
    ours = rate(lambda: fam.render(params, seeds), args.batch, args.seconds)

    n_pil = min(args.batch, 256)
    sub = {k: v[:n_pil] for k, v in params.items()}
    pil = rate(lambda: pil_render(sub), n_pil, args.seconds)
    print(f"  naive PIL per image   ({n_pil} images):  {pil:10,.0f} images/s per core  "
          f"(one garment outline per image, simpler than fashion2d's shapes)")
    print(f"\nratio fashion2d / PIL at batch {args.batch}: {ours / pil:.1f}×")


if __name__ == "__main__":
    main()
