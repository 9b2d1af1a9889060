"""End-to-end samples/s against the number of workers: scaling as a measured line.

    python benchmarks/scaling.py [--workers 1 2 4] [--ranks 1 2] [--samples 60000] [overrides …]
    python benchmarks/scaling.py --samples 3150 scene=digits3d scene.render.device=cpu controller.request_size=63

Runs the whole loop once per worker count (same seed, same budget) and prints the trainer's
samples/s (consumed samples over wall time from the first batch to the end), its data-wait
share, and the speed-up over the first count. On a small machine the line flattens where the
trainer or the CPU cores, not the workers, are the limit: the printed data-wait share says which.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(workers: int, samples: int, overrides: list[str], ranks: int = 1) -> dict:
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        p = subprocess.run([sys.executable, "-m", "controller.launcher", f"hydra.run.dir={run}",
                            f"launcher.workers={workers}", f"budget.samples={samples}", f"trainer.val_every={samples}",
                            f"trainer.ranks={ranks}",
                            "launcher.progress=false", *overrides], cwd=ROOT, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"))
        if p.returncode != 0:
            raise SystemExit(f"run with {workers} workers failed:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
        m = [json.loads(line) for line in open(run / "metrics.jsonl") if '"train/samples_per_s"' in line][-1]
    return {"workers": workers, "ranks": ranks, "samples_per_s": m["train/samples_per_s"],
            "data_wait": m["train/data_wait"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--samples", type=int, default=60_000)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1], help="DDP trainer ranks to try with the most workers")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    rows = [one(w, args.samples, args.overrides) for w in args.workers]
    rows += [one(max(args.workers), args.samples, args.overrides, r) for r in args.ranks if r > 1]
    base = rows[0]["samples_per_s"]
    print(f"{'workers':>7} {'ranks':>5} {'samples/s':>10} {'speed-up':>8} {'data wait':>9}   ({os.cpu_count()} CPU cores; "
          f"{' '.join(args.overrides) or 'default scene'})")
    for r in rows:
        print(f"{r['workers']:7d} {r['ranks']:5d} {r['samples_per_s']:10.0f} {r['samples_per_s'] / base:7.2f}× {100 * r['data_wait']:8.1f}%")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
