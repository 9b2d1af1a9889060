"""Throughput of the mnist2d family per CPU core, beside a naive per-image PIL renderer.

Both render the same digits: the baseline takes the very pen paths mnist2d builds (so the
geometry work is not counted against it), then draws each image's strokes as PIL ImageDraw
polylines at 4× resolution and downsamples with a Gaussian blur — the usual one-image-at-a-time
way. Threads are pinned to one (OMP/BLAS env vars before numpy and torch load, and
``torch.set_num_threads(1)``), so the figures are per core.

    python benchmarks/bench_generator.py [--batch 512] [--seconds 3]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # must precede the numpy / torch imports

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from otfgen.blender_gen.families import default_space, load  # noqa: E402

torch.set_num_threads(1)


def rate(fn, n_per_call: int, seconds: float) -> float:
    """Images per second: best of repeated timed calls (after one warm-up) within ``seconds``."""
    fn()
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_per_call / best


def pil_render(strokes: list[list[np.ndarray]], widths: np.ndarray, blur: np.ndarray, up: int = 4) -> np.ndarray:
    """Naive baseline: one PIL image per sample, polylines at ``up``× size, blur, resize to 28×28."""
    out = np.empty((len(strokes), 28, 28), np.uint8)
    for i, paths in enumerate(strokes):
        im = Image.new("L", (28 * up, 28 * up), 0)
        draw = ImageDraw.Draw(im)
        w = max(1, int(round(widths[i] * up)))
        for path in paths:
            xy = [(float(x) * up + up / 2, float(y) * up + up / 2) for x, y in path]
            draw.line(xy, fill=255, width=w, joint="curve")
        im = im.filter(ImageFilter.GaussianBlur(radius=float(blur[i]) * up + 0.5))
        out[i] = np.asarray(im.resize((28, 28), Image.BILINEAR))
    return out


def pen_paths(fam, params: dict, seeds: np.ndarray) -> list[list[np.ndarray]]:
    """The pixel-space pen points mnist2d splats, split back into strokes (setup, not timed)."""
    x, y, _, _, _, tpl = fam._pen(params, seeds)
    out = []
    for b in range(len(seeds)):
        nxt = fam._NEXT[tpl[b]]
        cut = np.flatnonzero(nxt != np.arange(fam.P) + 1)  # last point of each stroke
        starts = np.r_[0, cut[:-1] + 1]
        out.append([np.stack([x[b, s : e + 1], y[b, s : e + 1]], 1) for s, e in zip(starts, cut)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=3.0, help="timing window per measurement")
    args = ap.parse_args()

    fam, space = load("mnist2d"), default_space("mnist2d")
    params, seeds = space.sample(None, 0, args.batch)
    print(f"mnist2d, 28×28, params uniform over the full space, 1 thread (torch {torch.get_num_threads()}, "
          f"OMP/BLAS {os.environ['OMP_NUM_THREADS']})")
    for b in sorted({256, args.batch, 1024}):
        p, s = space.sample(None, 0, b)
        r = rate(lambda: fam.render(p, s), b, args.seconds)
        print(f"  mnist2d.render        batch {b:5d}: {r:10,.0f} images/s per core")
    ours = rate(lambda: fam.render(params, seeds), args.batch, args.seconds)

    n_pil = min(args.batch, 256)
    sub = {k: v[:n_pil] for k, v in params.items()}
    paths = pen_paths(fam, sub, seeds[:n_pil])
    pil = rate(lambda: pil_render(paths, sub["thickness"], sub["blur"]), n_pil, args.seconds)
    print(f"  naive PIL per image   ({n_pil} images):  {pil:10,.0f} images/s per core  "
          f"(geometry precomputed, drawing + blur + resize only)")
    print(f"\nratio mnist2d / PIL at batch {args.batch}: {ours / pil:.1f}×")


if __name__ == "__main__":
    main()
