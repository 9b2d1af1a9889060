"""Images/s of a Blender scene family in one worker process, and where the time goes.

    python benchmarks/bench_blender.py [--family digits3d] [--device cpu] [--samples 4] [--frames 6]

Renders --frames full frames (rows × cols cells, one sample each) of uniformly sampled
parameters and prints images/s beside the naive method measured in the same process (one
Cycles render per image: a 1×1 grid, same samples per pixel), as a ratio. The time per frame
is split into: parameter update (Python writes into Blender data-blocks), scene sync + BVH
build + session set-up (frame time at 1 sample/px minus one sample's tracing), path tracing
(from the slope between 1 and N samples/px), read-back (Combined pass → numpy) and post
(grayscale, blur, noise, uint8). Transport of the result is measured by bench_transport.py
(≈ 2.3 GB/s here: ~20 µs for a 63-image 28×28 batch), so it is left out.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from otfgen.blender_gen import families
from otfgen.blender_gen.blender import cycles


def _time_frames(fam, space, n_frames: int, cells: int, seed0: int) -> tuple[float, dict]:
    t_frame = {"s": 0.0}
    orig = cycles.render_frame

    def timed(scene):
        t = time.perf_counter()
        out = orig(scene)
        t_frame["s"] += time.perf_counter() - t
        return out

    cycles.render_frame = timed
    try:
        fam.render(*space.sample(None, seed0, cells))  # warm-up frame (first sync, shader compile)
        t_frame["s"] = 0.0
        cycles.STATS.update(readback_s=0.0, frames=0)
        t0 = time.perf_counter()
        for k in range(n_frames):
            fam.render(*space.sample(None, seed0 + 1 + k, cells))
        total = time.perf_counter() - t0
    finally:
        cycles.render_frame = orig
    return total, {"frame_s": t_frame["s"], "readback_s": cycles.STATS["readback_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="digits3d")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--naive", type=int, default=20, help="images rendered one per frame for the baseline")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--cell-px", type=int, default=0,
                    help="render cells of this size instead of the family's (e.g. 32 for the 32×32 target); "
                         "images/s only, the images are not the family's shape")
    args = ap.parse_args()
    fam, space = families.load(args.family), families.default_space(args.family)
    base = {"device": args.device, "threads": args.threads}
    if args.cell_px:
        fam.configure({**base, "samples": args.samples})
        scene = fam._Scene({**fam.OPTIONS, "cell_px": args.cell_px})  # same scene code, other cell size
        cells = scene.grid.capacity
        scene._render_chunk(*space.sample(None, 0, cells))
        t0 = time.perf_counter()
        for k in range(args.frames):
            out = scene._render_chunk(*space.sample(None, 1 + k, cells))
        ips = args.frames * cells / (time.perf_counter() - t0)
        print(f"{args.family} cells of {args.cell_px}×{args.cell_px} px on {scene.device}, {args.samples} samples/px: "
              f"{ips:.1f} images/s (output {out.shape[1:]})")
        return

    fam.configure({**base, "samples": args.samples})
    opts = dict(fam.OPTIONS)
    cells = opts["rows"] * opts["cols"]
    total, parts = _time_frames(fam, space, args.frames, cells, 100)
    ips = args.frames * cells / total
    device = fam._scene.device
    # the same frames at 1 sample/px: what is not path tracing
    fam.configure({**base, "samples": 1})
    total1, parts1 = _time_frames(fam, space, args.frames, cells, 100)
    per_frame = total / args.frames
    frame_n, frame_1 = parts["frame_s"] / args.frames, parts1["frame_s"] / args.frames
    trace = max(0.0, (frame_n - frame_1) * args.samples / max(1, args.samples - 1)) if args.samples > 1 else frame_n
    readback = parts["readback_s"] / args.frames
    sync = max(0.0, frame_n - trace - readback)
    update_post = per_frame - frame_n
    # baseline: one render per image
    fam.configure({**base, "samples": args.samples, "rows": 1, "cols": 1})
    total_naive, _ = _time_frames(fam, space, args.naive, 1, 500)
    naive_ips = args.naive / total_naive
    fam.configure({**base, "samples": args.samples})

    shape = "×".join(map(str, fam.IMAGE_SHAPE))
    print(f"{args.family} {shape} on {device}, {args.samples} samples/px, {opts['rows']}×{opts['cols']} cells per frame")
    print(f"  otfgen grid: {ips:8.1f} images/s  ({per_frame * 1000:.0f} ms per {cells}-image frame)")
    print(f"  naive (one render per image): {naive_ips:8.1f} images/s   ratio {ips / naive_ips:.1f}×")
    print(f"  per frame: update+post {update_post * 1000:.0f} ms | sync+BVH+session {sync * 1000:.0f} ms | "
          f"path tracing {trace * 1000:.0f} ms | read-back {readback * 1000:.1f} ms")
    print(json.dumps({"family": args.family, "device": device, "samples": args.samples, "images_per_s": round(ips, 1),
                      "naive_images_per_s": round(naive_ips, 1), "ratio": round(ips / naive_ips, 2),
                      "ms_update_post": round(update_post * 1000, 1), "ms_sync": round(sync * 1000, 1),
                      "ms_trace": round(trace * 1000, 1), "ms_readback": round(readback * 1000, 2)}))


if __name__ == "__main__":
    main()
