"""End-to-end samples/s against the number of workers and the launcher; the controller's ceiling.

    python benchmarks/scaling.py [--workers 1 2 4] [--ranks 1 2] [--samples 60000] [overrides …]
    python benchmarks/scaling.py --samples 3150 scene=digits3d scene.render.device=cpu controller.request_size=63
    python benchmarks/scaling.py --launchers local ray --workers 1 2 --samples 2048
    python benchmarks/scaling.py --ceiling --fake-workers 8 64 --request-sizes 63 256 --seconds 8

Loop mode runs the whole loop once per (launcher, worker count) (same seed, same budget) and
prints the trainer's samples/s (consumed samples over wall time from the first batch to the
end), its data-wait share, the speed-up over the first row and the start-up time (from the
command's start to the trainer's first consumed request: Python imports, a Ray cluster for
launcher=ray, the workers' and the trainer's set-up). On a small machine the line flattens where
the trainer or the CPU cores, not the workers, are the limit: the data-wait share says which.

Ceiling mode measures what one controller's ROUTER sustains: the real controller process
(``controller.server``) with N fake workers and one fake trainer on loopback that speak the
real protocol (hello, credit, request, batch, done; trainer, delivered with losses) but send one
pre-rendered batch instead of rendering and train on nothing. It prints requests/s delivered,
the controller's CPU share of one core over the window, and requests per controller CPU-second:
what one controller does with a core of its own (the fakes share the machine's cores with it).
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

ROOT = Path(__file__).resolve().parents[1]


def one(workers: int, samples: int, overrides: list[str], ranks: int = 1, launcher: str = "local") -> dict:
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        cmd = [sys.executable, "-m", "otfgen.controller.main", f"hydra.run.dir={run}", f"launcher={launcher}",
               f"launcher.workers={workers}", f"budget.samples={samples}", f"trainer.val_every={samples}",
               f"trainer.ranks={ranks}", "launcher.progress=false", *overrides]
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
        first = None
        stream = run / "stream.jsonl"
        while p.poll() is None and first is None:
            if stream.exists() and stream.stat().st_size > 0:
                first = time.monotonic() - t0
            time.sleep(0.05)
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"run with {launcher} and {workers} workers failed:\n{out[-3000:]}")
        m = [json.loads(line) for line in open(run / "metrics.jsonl") if '"train/samples_per_s"' in line][-1]
    return {"launcher": launcher, "workers": workers, "ranks": ranks, "samples_per_s": m["train/samples_per_s"],
            "data_wait": m["train/data_wait"], "startup_s": first, "wall_s": time.monotonic() - t0}


# -- the controller's ceiling --------------------------------------------------------------------

def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fakes(endpoint: str, n_workers: int, seconds: float, credits: int, out: str) -> None:
    """N fake workers and a fake trainer in one process (one poll loop): the real messages, no
    rendering (one pre-rendered batch) and no training (losses of zeros)."""
    import numpy as np
    import zmq

    from otfgen.blender_gen import protocol

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    pull_ep = f"tcp://127.0.0.1:{port}"
    trainer = ctx.socket(zmq.DEALER)
    trainer.connect(endpoint)
    trainer.send_multipart(protocol.encode("trainer", {"pull": pull_ep, "rank": 0, "world": 1}))
    workers = []
    for i in range(n_workers):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, f"fake{i}".encode())
        s.connect(endpoint)
        s.send_multipart(protocol.encode("hello", {"worker": f"fake{i}", "pid": os.getpid()}))
        workers.append(s)
    push = ctx.socket(zmq.PUSH)
    pushed_to = None
    images: dict[int, np.ndarray] = {}
    poller = zmq.Poller()
    for s in (pull, trainer, *workers):
        poller.register(s, zmq.POLLIN)
    delivered, t_start, last_beat, samples = 0, None, time.monotonic(), 0
    while True:
        now = time.monotonic()
        if t_start is not None and now - t_start >= seconds:
            break
        if now - last_beat > 0.5:
            for s in workers:
                s.send_multipart(protocol.encode("heartbeat"))
            last_beat = now
        for sock, _ in poller.poll(100):
            if sock is pull:
                msg = protocol.decode(pull.recv_multipart(copy=False))
                n = msg.arrays["labels"].shape[0]
                trainer.send_multipart(protocol.encode("delivered", {"id": msg["id"], "samples": n},
                                                       {"losses": np.zeros(n, np.float32)}), copy=False)
                if t_start is None:
                    t_start = time.monotonic()  # from the first delivery: connections are up
                else:
                    delivered += 1
                    samples += n
            elif sock is trainer:
                trainer.recv_multipart()  # info
            else:
                msg = protocol.decode(sock.recv_multipart(copy=False))
                if msg.kind == "welcome":
                    if pushed_to is None:
                        pushed_to = msg["push"][0]
                        push.connect(pushed_to)
                    sock.send_multipart(protocol.encode("credit", {"n": credits}))
                elif msg.kind == "request":
                    n = msg["n"]
                    if n not in images:
                        images[n] = np.zeros((n, 28, 28), np.uint8)  # the pre-rendered batch
                    push.send_multipart(protocol.encode(
                        "batch", {"id": msg["id"], "worker": "fake", "family": msg["family"], "ms": 0.0},
                        {"images": images[n], "labels": np.zeros(n, np.int64)}), copy=False)
                    sock.send_multipart(protocol.encode("done", {"id": msg["id"], "ms": 0.0}))
    elapsed = time.monotonic() - t_start
    trainer.send_multipart(protocol.encode("finished", {"samples": samples}))
    time.sleep(0.2)
    Path(out).write_text(json.dumps({"requests": delivered, "seconds": elapsed, "samples": samples}))
    ctx.destroy(linger=0)


def ceiling(n_workers: int, request_size: int, seconds: float, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as d:
        run = Path(d)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        ctrl = subprocess.Popen([sys.executable, "-m", "otfgen.controller.server", f"run_dir={run}",
                                 f"controller.request_size={request_size}", "budget.samples=1000000000",
                                 *overrides], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            ready = run / "endpoints.json"
            deadline = time.monotonic() + 60
            while not ready.exists():
                if ctrl.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"controller did not start: {ctrl.communicate()[1][-2000:]}")
                time.sleep(0.05)
            endpoint = json.loads(ready.read_text())["controller"]
            result = run / "fakes.json"
            fake = subprocess.Popen([sys.executable, __file__, "--_fakes", endpoint, str(n_workers), str(seconds),
                                     "2", str(result)], cwd=ROOT, env=env)
            # the controller's CPU over the fakes' measuring window (they start it at the first delivery)
            while fake.poll() is None and not (run / "params.jsonl").exists():
                time.sleep(0.05)
            time.sleep(1.0)
            c0, f0, t0 = _cpu_s(ctrl.pid), _cpu_s(fake.pid), time.monotonic()
            c1, f1, t1 = c0, f0, t0
            while fake.poll() is None:
                try:
                    c1, f1, t1 = _cpu_s(ctrl.pid), _cpu_s(fake.pid), time.monotonic()
                except OSError:  # the fakes just exited
                    break
                time.sleep(0.2)
            if fake.returncode != 0:
                raise SystemExit("the fake workers failed")
            r = json.loads(result.read_text())
            ctrl.wait(timeout=30)
        finally:
            if ctrl.poll() is None:
                ctrl.kill()
    cpu_share = (c1 - c0) / max(1e-9, t1 - t0)
    rps = r["requests"] / r["seconds"]
    return {"fake_workers": n_workers, "request_size": request_size, "requests_per_s": rps,
            "samples_per_s": rps * request_size, "controller_cpu": cpu_share,
            "fakes_cpu": (f1 - f0) / max(1e-9, t1 - t0),
            "requests_per_cpu_s": rps / max(1e-9, cpu_share)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_fakes":
        endpoint, n, seconds, credits, out = sys.argv[2:]
        fakes(endpoint, int(n), float(seconds), int(credits), out)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--samples", type=int, default=60_000)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1], help="DDP trainer ranks to try with the most workers")
    ap.add_argument("--launchers", nargs="+", default=["local"], help="e.g. local ray: each worker count under each")
    ap.add_argument("--ceiling", action="store_true", help="the controller's ceiling with fake workers instead")
    ap.add_argument("--fake-workers", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--request-sizes", type=int, nargs="+", default=[63, 256])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.ceiling:
        rows = [ceiling(n, size, args.seconds, args.overrides) for size in args.request_sizes
                for n in args.fake_workers]
        print(f"{'fake workers':>12} {'request':>7} {'requests/s':>10} {'samples/s':>10} {'ctrl CPU':>8} "
              f"{'req/CPU-s':>9} {'fakes CPU':>9}   ({os.cpu_count()} CPU cores, shared with the fakes)")
        for r in rows:
            print(f"{r['fake_workers']:12d} {r['request_size']:7d} {r['requests_per_s']:10.0f} "
                  f"{r['samples_per_s']:10.0f} {100 * r['controller_cpu']:7.0f}% {r['requests_per_cpu_s']:9.0f} "
                  f"{100 * r['fakes_cpu']:8.0f}%")
        print(json.dumps(rows))
        return
    rows = [one(w, args.samples, args.overrides, launcher=launcher) for launcher in args.launchers
            for w in args.workers]
    rows += [one(max(args.workers), args.samples, args.overrides, r) for r in args.ranks if r > 1]
    base = rows[0]["samples_per_s"]
    print(f"{'launcher':>8} {'workers':>7} {'ranks':>5} {'samples/s':>10} {'speed-up':>8} {'data wait':>9} "
          f"{'start-up':>8}   ({os.cpu_count()} CPU cores; {' '.join(args.overrides) or 'default scene'})")
    for r in rows:
        print(f"{r['launcher']:>8} {r['workers']:7d} {r['ranks']:5d} {r['samples_per_s']:10.0f} "
              f"{r['samples_per_s'] / base:7.2f}× {100 * r['data_wait']:8.1f}% {r['startup_s']:7.1f}s")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
