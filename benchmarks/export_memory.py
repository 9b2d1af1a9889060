"""Peak resident memory of ``otfgen export`` at two run lengths: it should not grow with the run.

Builds two synthetic runs of one family (a params.jsonl as the controller writes it: a header and
one line per request of 256 samples, uniform actions), exports each in a fresh process per format,
and prints that process's peak RSS (``ru_maxrss``) with the ratio long / short.

    python benchmarks/export_memory.py [--family mnist2d] [--short 20] [--long 200] [--shard-size 10000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from otfgen.blender_gen import families  # noqa: E402
from otfgen.blender_gen.rng import request_seed  # noqa: E402
from otfgen.controller import paramlog  # noqa: E402

PEAK = ("import resource, sys; from controller.export import main; code = main(sys.argv[1:]); "
        "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")


def make_run(run_dir: Path, family: str, requests: int, n: int = 256) -> Path:
    run_dir.mkdir(parents=True)
    log = paramlog.ParamLog(run_dir / "params.jsonl", {
        "family": family, "space": families.default_space(family).to_mapping(), "run_seed": 0,
        "request_size": n, "policy": "uniform", "render": {}, "code": families.code_digest()})
    for rid in range(requests):
        log.append({"id": rid, "family": family, "n": n, "seed": request_seed(0, rid), "action": {},
                    "worker": "w0", "step": rid})
    log.close()
    return run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="mnist2d")
    ap.add_argument("--short", type=int, default=20, help="requests of the short run")
    ap.add_argument("--long", type=int, default=200, help="requests of the long run")
    ap.add_argument("--shard-size", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {k: make_run(tmp / f"run{k}", args.family, k) for k in (args.short, args.long)}
        for fmt in ("webdataset", "npz"):
            peak = {}
            for k, run in runs.items():
                p = subprocess.run([sys.executable, "-c", PEAK, str(run), "--out", str(tmp / f"{fmt}{k}"),
                                    "--format", fmt, "--shard-size", str(args.shard_size)],
                                   capture_output=True, text=True, cwd=ROOT, check=True)
                report = json.loads(p.stdout.splitlines()[0])
                peak[k] = int(p.stdout.split("peak_rss_kb")[1]) / 1024
                print(f"{fmt:10s} {report['samples']:7d} samples, {report['shards']} shard(s), "
                      f"{report['seconds']:.1f} s: peak RSS {peak[k]:.0f} MB")
            print(f"{fmt:10s} peak RSS long / short: {peak[args.long] / peak[args.short]:.2f} "
                  f"({args.long // args.short}x the samples)")


if __name__ == "__main__":
    main()
