"""What the launcher=ray and launcher=slurm tests share: start a run, wait for it, check its stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import otfgen_cmd, proc_cmdlines

SMALL = ["controller.request_size=256", "trainer.batch_size=128", "trainer.threads=1", "launcher.progress=false",
         "trainer.val_every=100000"]


def like_a_terminal():  # SIGINT handled by default and not blocked, whatever the test process did
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def start(run_dir: Path, env: dict, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(otfgen_cmd(f"hydra.run.dir={run_dir}", *SMALL, *overrides), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=like_a_terminal)


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return out


def wait_for_requests(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until the trainer has consumed ``n`` requests (lines of stream.jsonl)."""
    stream = run_dir / "stream.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stream.exists() and len(stream.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before {n} requests:\n"
                                 f"{proc.communicate()[0][-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} requests consumed within {timeout:.0f} s")


def wait_for_log(run_dir: Path, needle: str, count: int, proc: subprocess.Popen, timeout: float = 120,
                 log: str = "controller.log") -> None:
    """Until ``<run>/<log>`` holds ``needle`` ``count`` times (e.g. a restarted worker's second join)."""
    path = run_dir / log
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(errors="replace").count(needle) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before {count}× {needle!r} in {log}")
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count}× {needle!r} in {log} within {timeout:.0f} s")


def assert_went_on_after_a_restart(run_dir: Path, proc: subprocess.Popen, env: dict) -> str:
    """Stop a run that is meant to outlast a worker's restart, once it has consumed 3 requests past
    the restarted worker's join (a budget it never reaches keeps a fast machine from finishing
    first): nothing consumed twice, and replay regenerates every request consumed. What was in
    flight at the stop is not delivered, by design; loss across restarts of whole runs is the
    chaos test's (the controller's accounting is the same under every launcher). The output."""
    wait_for_requests(run_dir, len(stream_ids(run_dir)) + 3, proc)
    out = ctrl_c(proc)
    assert proc.returncode == 130, out[-3000:]
    ids = stream_ids(run_dir)
    assert len(ids) == len(set(ids))  # none duplicated
    assert replay(run_dir, env)["matched"] == len(ids)
    return out


def stream_ids(run_dir: Path) -> list[int]:
    return [json.loads(line)["id"] for line in open(run_dir / "stream.jsonl")]


def replay(run_dir: Path, env: dict, timeout: float = 120) -> dict:
    r = subprocess.run(otfgen_cmd("replay", str(run_dir)), env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc's parent links)."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - out
        out |= frontier
    return out


def alive(pids: set[int]) -> set[int]:
    """The ones still running (zombies waiting for their reaper count as gone)."""
    out = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(p)
    return out


def alive_after(pids: set[int], timeout: float = 10.0) -> set[int]:
    """The ones still running once they are all gone or ``timeout`` has passed: polled, not a fixed
    sleep that a loaded machine outlasts."""
    deadline = time.monotonic() + timeout
    while (left := alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def ctrl_c(proc: subprocess.Popen, timeout: float = 60) -> str:
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    return finish(proc, timeout)


def matching(needle: str) -> list[int]:
    return [pid for pid, cmd in proc_cmdlines().items() if needle in cmd]


def workers_of(endpoint: str) -> list[int]:
    """The worker processes of the run whose controller listens at ``endpoint``."""
    return [pid for pid in matching("blender_gen.worker") if endpoint in proc_cmdlines().get(pid, "")]


def kill_a_worker(run_dir: Path, proc: subprocess.Popen, after: int, timeout: float = 60) -> str:
    """SIGKILL one of the run's two workers once the trainer has consumed ``after`` requests; the
    controller's endpoint (what names the run's workers)."""
    wait_for_requests(run_dir, after, proc, timeout)
    endpoint = json.loads((run_dir / "endpoints.json").read_text())["controller"]
    victims = workers_of(endpoint)
    assert len(victims) == 2, victims
    os.kill(victims[0], signal.SIGKILL)
    return endpoint


def assert_recovered(out: str, run_dir: Path, n_requests: int, env: dict, replay_timeout: float = 120) -> None:
    """A run that lost a worker: the launcher restarted it, every request was consumed exactly once,
    and replay regenerates every one of them byte for byte."""
    assert "killed by SIGKILL" in out and "restart" in out, out[-3000:]
    ids = stream_ids(run_dir)
    assert len(ids) == len(set(ids)) == n_requests  # none lost, none duplicated
    assert replay(run_dir, env, replay_timeout)["matched"] == n_requests
