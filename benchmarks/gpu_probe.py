"""First Blender render on a device: which Cycles devices exist, and how long the first frames take.

    python3.11 benchmarks/gpu_probe.py --device optix [--families digits3d shapes3d] [--samples 1]

Run by benchmarks/gpu_suite.sh before any timed Blender figure. On a GPU whose kernels are not in
the driver's caches (~/.nv/ComputeCache, /var/tmp/OptixCache_$USER) the first frame of a process
JIT-compiles the Cycles kernels (minutes); with a warm cache it takes about a second. The suite
saves the caches when this compiles. Prints one JSON line per family, then one for the run:
``{"family", "device", "build_s", "first_frame_s", "second_frame_s"}``. Needs bpy, not torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otfgen.blender_gen import families  # noqa: E402


def cycles_devices() -> list[str]:
    """Every (backend, device name) Cycles lists on this machine."""
    import bpy

    prefs = bpy.context.preferences.addons["cycles"].preferences
    found = []
    for kind in ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL"):
        try:
            prefs.compute_device_type = kind
        except TypeError:  # not in this build
            continue
        prefs.refresh_devices()
        found += [f"{kind}: {d.name}" for d in prefs.devices if d.type == kind]
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="optix")
    ap.add_argument("--families", nargs="+", default=["digits3d", "shapes3d"])
    ap.add_argument("--samples", type=int, default=1)
    args = ap.parse_args()
    t_all = time.perf_counter()
    import bpy

    print(json.dumps({"bpy": bpy.app.version_string, "python": sys.version.split()[0],
                      "cycles_devices": cycles_devices()}), flush=True)
    for name in args.families:
        fam, space = families.load(name), families.default_space(name)
        t0 = time.perf_counter()
        fam.configure({"device": args.device, "samples": args.samples})
        build = time.perf_counter() - t0
        cells = fam.OPTIONS["rows"] * fam.OPTIONS["cols"]
        times = []
        for k in range(2):
            t0 = time.perf_counter()
            images, _ = fam.render(*space.sample(None, k, cells))
            times.append(time.perf_counter() - t0)
        print(json.dumps({"family": name, "device": fam._scene.device, "samples": args.samples, "cells": cells,
                          "shape": list(images.shape), "build_s": round(build, 3),
                          "first_frame_s": round(times[0], 3), "second_frame_s": round(times[1], 3)}), flush=True)
    print(json.dumps({"probe_total_s": round(time.perf_counter() - t_all, 2)}))


if __name__ == "__main__":
    main()
