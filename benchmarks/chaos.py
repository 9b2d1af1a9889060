"""Chaos: kill -9 workers at random moments during a run; nothing may be lost or duplicated.

    python benchmarks/chaos.py [--kills 8] [--workers 3] [--samples 400000] [--seed 0] [overrides …]

Runs the whole loop (``otfgen``) and SIGKILLs a worker (the one killed least, at random among
equals) at random points of the run's progress (10–80% of its requests) until --kills kills are
done. The launcher restarts each dead worker (back-off), the controller
re-issues the requests the dead worker held. At the end it prints: kills, restarts, requests
issued / delivered / duplicated / lost (from params.jsonl and the trainer's stream.jsonl), whether
``otfgen replay`` reproduces the stream, and per kill the recovery time: kill → the controller
re-issues its requests (detection: controller.dead_after_s of silence, or earlier when the
restarted worker rejoins under the same id) and kill → the restarted worker
serves again (back-off + start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _workers(endpoint: str) -> dict[str, int]:
    """worker id -> pid of the live worker processes of this run."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            args = [a.decode(errors="replace") for a in cmd]
            if any("blender_gen.worker" in a for a in args) and f"controller={endpoint}" in args:
                wid = next((a[3:] for a in args if a.startswith("id=")), None)
                if wid:
                    out[wid] = int(d.name)
    return out


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def _request_size(overrides: list[str]) -> int:
    """controller.request_size as the run gets it (256 unless overridden)."""
    sizes = [int(o.split("=", 1)[1]) for o in overrides if o.startswith("controller.request_size=")]
    return sizes[-1] if sizes else 256


def _ts(line: str) -> float | None:
    m = re.match(r"\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", line)
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000


def run_chaos(kills: int, workers: int, samples: int, seed: int, run_dir: Path, overrides: list[str],
              env: dict | None = None, timeout: float = 900) -> dict:
    rnd = random.Random(seed)
    env = dict(env or os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "otfgen.controller.main", f"hydra.run.dir={run_dir}", f"launcher.workers={workers}",
           f"budget.samples={samples}", f"launcher.max_restarts={kills + 1}", "controller.dead_after_s=1.5",
           f"trainer.val_every={samples}", *overrides]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    killed: list[tuple[float, str, int]] = []
    try:
        stream = run_dir / "stream.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (stream.exists() and stream.stat().st_size > 0):
            time.sleep(0.05)
        endpoint = json.loads((run_dir / "endpoints.json").read_text())["controller"]
        # kills paced by the run's progress, not by the clock: at random points between 10% and 80%
        # of the requests, so a fast machine cannot finish the run before the last kill
        n_requests = -(-samples // _request_size(overrides))
        points = sorted(int(rnd.uniform(0.1, 0.8) * n_requests) for _ in range(kills))
        while len(killed) < kills and proc.poll() is None:
            time.sleep(0.05)
            live = _workers(endpoint)
            if not live or _lines(stream) < points[len(killed)]:
                continue
            # the worker killed least so far: restarts back off (1, 2, 4 s …) per worker, and a
            # third kill of one worker could leave it down past the end of a short run
            fewest = min(sum(w == k for _, w, _ in killed) for k in live)
            wid = rnd.choice(sorted(k for k in live if sum(w == k for _, w, _ in killed) == fewest))
            try:
                os.kill(live[wid], signal.SIGKILL)
                killed.append((time.time(), wid, live[wid]))
            except ProcessLookupError:
                pass
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
    out = "".join(lines)
    # -- accounting: every request issued was delivered exactly once -------------------------
    issued = [json.loads(line)["id"] for line in (run_dir / "params.jsonl").read_text().splitlines()[1:] if line.strip()]
    delivered = [json.loads(line)["id"] for line in (run_dir / "stream.jsonl").read_text().splitlines() if line.strip()]
    issued_ids = set(issued)
    dup = len(delivered) - len(set(delivered))
    lost = len(issued_ids - set(delivered))
    rep = subprocess.run([sys.executable, "-m", "otfgen.controller.main", "replay", str(run_dir)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout)
    try:
        matched = json.loads(rep.stdout)["matched"]
    except (ValueError, KeyError):
        matched = None
    # -- recovery times from the logs' timestamps ---------------------------------------------
    detect, back = [], []
    for t_kill, wid, _ in killed:
        t_re = [t for line in out.splitlines() if "re-issuing" in line and f"worker {wid} " in line  # silent / rejoined
                and (t := _ts(line)) is not None and t >= t_kill - 0.01]
        t_up = [t for line in out.splitlines() if f"worker {wid}: family" in line
                and (t := _ts(line)) is not None and t >= t_kill - 0.01]
        if t_re:
            detect.append(min(t_re) - t_kill)
        if t_up:
            back.append(min(t_up) - t_kill)
    return {"returncode": proc.returncode, "kills": len(killed), "restarts": out.count(": restarting (attempt"),
            "requests_issued": len(issued_ids), "requests_delivered": len(set(delivered)), "duplicated": dup,
            "lost": lost, "replay_matched": matched, "replay_ok": matched == len(set(delivered)),
            "detect_s": [round(x, 2) for x in detect], "worker_back_s": [round(x, 2) for x in back],
            "log_tail": out[-2000:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=8)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--samples", type=int, default=400_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        r = run_chaos(args.kills, args.workers, args.samples, args.seed, Path(d) / "run",
                      ["trainer.threads=1", *args.overrides])
    tail = r.pop("log_tail")
    if r["returncode"] != 0:
        print(tail)
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    print(f"kills {r['kills']}, restarts {r['restarts']}; requests issued {r['requests_issued']}, delivered "
          f"{r['requests_delivered']}, duplicated {r['duplicated']}, lost {r['lost']}; replay matched "
          f"{r['replay_matched']} ({'ok' if r['replay_ok'] else 'MISMATCH'})")
    print(f"recovery: dead worker detected and its requests re-issued after {mean(r['detect_s']):.2f} s on average "
          f"(max {max(r['detect_s'], default=float('nan')):.2f}); restarted worker serving again after "
          f"{mean(r['worker_back_s']):.2f} s on average (max {max(r['worker_back_s'], default=float('nan')):.2f})")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
