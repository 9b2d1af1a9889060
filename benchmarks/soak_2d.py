"""Soak: many requests through ONE 2D worker; does anyone's resident memory grow?

Three processes on loopback tcp: a controller (``python -m controller.server`` with overrides), one
worker (``python -m blender_gen.worker controller=...``) and this script as the trainer side, a
``Stream`` whose consumer just iterates and drops the batches (no losses, no metrics reported back,
as a consumer that only reads data would). Budget = requests × 256 samples.

VmRSS of each process is read from /proc/<pid>/status at intervals; growth is measured from the end
of the warm-up (the first 10% of requests) to the end, per process. Goal: < 5%.

    python benchmarks/soak_2d.py [--requests 10000] [--family mnist2d] [--points 20]

"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from otfgen.trainer.stream import Stream

REQUEST_SIZE = 256


def rss_kib(pid: int | str = "self") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--family", default="mnist2d")
    ap.add_argument("--points", type=int, default=20, help="memory samples over the run")
    args = ap.parse_args()

    samples = args.requests * REQUEST_SIZE
    run_dir = Path(tempfile.mkdtemp(prefix="otfgen-soak-"))
    ready = run_dir / "endpoints.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    logs = {name: open(run_dir / f"{name}.log", "w") for name in ("controller", "worker")}
    ctrl = subprocess.Popen([sys.executable, "-m", "otfgen.controller.server", f"scene={args.family}",
                             f"budget.samples={samples}", f"controller.request_size={REQUEST_SIZE}",
                             f"run_dir={run_dir}", f"--ready={ready}"],
                            env=env, stdout=logs["controller"], stderr=subprocess.STDOUT)
    procs = {"controller": ctrl}
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if ctrl.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"controller did not start (code {ctrl.poll()}); see {run_dir}/controller.log")
            time.sleep(0.05)
        endpoint = json.loads(ready.read_text())["controller"]
        procs["worker"] = subprocess.Popen([sys.executable, "-m", "otfgen.blender_gen.worker", f"controller={endpoint}",
                                            "id=soak-w"], env=env, stdout=logs["worker"], stderr=subprocess.STDOUT)
        stream = Stream(endpoint, batch_size=REQUEST_SIZE, samples=samples, data_timeout_s=60)
        print(f"soak: {args.requests:,} requests × {REQUEST_SIZE} samples of {args.family} through one worker; "
              f"run dir {run_dir}")
        pids = {"worker": procs["worker"].pid, "controller": ctrl.pid, "consumer": "self"}
        every = max(1, args.requests // args.points)
        warm = max(1, args.requests // 10)
        curve: list[tuple[int, float, dict[str, int]]] = []
        print(f"{'requests':>9} {'s':>7} {'samples/s':>10}" + "".join(f" {k + ' MiB':>15}" for k in pids))
        t0 = time.perf_counter()
        done = 0
        last = None
        for b in stream.iter_batches():
            if b.request_id == last:
                continue
            last = b.request_id
            done += 1
            if done == 1 or done % every == 0 or done == warm or done == args.requests:
                el = time.perf_counter() - t0
                mem = {k: rss_kib(p) for k, p in pids.items()}
                curve.append((done, el, mem))
                print(f"{done:>9,} {el:>7.1f} {done * REQUEST_SIZE / el:>10,.0f}"
                      + "".join(f" {v / 1024:>15.1f}" for v in mem.values()), flush=True)
        elapsed = time.perf_counter() - t0
        end_mem = {k: rss_kib(p) for k, p in pids.items()}  # before close: the processes are still up
        stream.close()
        codes = {}
        for name, p in procs.items():
            try:
                codes[name] = p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = "killed"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        for f in logs.values():
            f.close()

    base = next(m for n, _, m in curve if n >= warm)
    peak = {k: max(m[k] for n, _, m in curve if n >= warm) for k in pids}
    print()
    print(f"{stream.consumed:,} samples in {elapsed:.1f} s ({stream.consumed / elapsed:,.0f} samples/s); "
          f"duplicates {stream.duplicates}, rejected {stream.rejects.total}; exit codes {codes}")
    print(f"resident memory growth after warm-up (request {warm:,} -> {args.requests:,}), goal < 5%:")
    for k in pids:
        g = 100.0 * (end_mem[k] - base[k]) / base[k]
        print(f"  {k:<11} {base[k] / 1024:8.1f} -> {end_mem[k] / 1024:8.1f} MiB  (peak {peak[k] / 1024:.1f})  "
              f"{g:+6.2f}%  {'ok' if g < 5 else 'GROWS'}")


if __name__ == "__main__":
    main()
