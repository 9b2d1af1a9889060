"""Memory of a Blender worker over thousands of requests: data-blocks are reused, not leaked.

    python benchmarks/soak_blender.py [--family digits3d] [--requests 2000] [--n 16]

Renders --requests requests of --n uniformly sampled samples each in this process (what a
worker does per request, without the sockets: soak_2d.py covers those) and prints the resident
set size after warm-up, at every tenth of the run and at the end, plus the number of Blender
data-blocks (objects, meshes, curves, materials, images), which must not grow.
"""

from __future__ import annotations

import argparse
import time


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def blocks() -> dict[str, int]:
    import bpy

    d = bpy.data
    return {k: len(getattr(d, k)) for k in ("objects", "meshes", "curves", "materials", "images", "lights")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="digits3d")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--samples", type=int, default=1)
    args = ap.parse_args()
    from otfgen.blender_gen import families

    fam, space = families.load(args.family), families.default_space(args.family)
    fam.configure({"device": args.device, "samples": args.samples})
    for k in range(20):  # warm-up: first syncs, allocator pools
        fam.render(*space.sample(None, k, args.n))
    start, b0 = rss_mib(), blocks()
    print(f"{args.family}: after warm-up RSS {start:.1f} MiB, data-blocks {b0}", flush=True)
    t0 = time.perf_counter()
    marks = []
    for i in range(args.requests):
        fam.render(*space.sample(None, 1000 + i, args.n))
        if (i + 1) % max(1, args.requests // 10) == 0:
            marks.append(rss_mib())
            print(f"  {i + 1:6d} requests  RSS {marks[-1]:.1f} MiB  ({(i + 1) * args.n / (time.perf_counter() - t0):.0f} "
                  f"images/s)", flush=True)
    end, b1 = rss_mib(), blocks()
    print(f"{args.family}: {args.requests} requests of {args.n}: RSS {start:.1f} -> {end:.1f} MiB "
          f"({100 * (end - start) / start:+.2f}%), max {max(marks):.1f}; data-blocks {b1} "
          f"({'unchanged' if b1 == b0 else 'CHANGED'})")


if __name__ == "__main__":
    main()
