"""launcher=ray on a real local Ray cluster that the run starts: workers as actors, restarts by Ray."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from launch_helpers import (alive, alive_after, assert_went_on_after_a_restart, ctrl_c, descendants,  # noqa: E402
                            finish, matching, start, stream_ids, wait_for_log, wait_for_requests)

pytestmark = [pytest.mark.slow, pytest.mark.ray]

KILL = """
import sys, ray
address, namespace, name = sys.argv[1:]
ray.init(address=address, namespace=namespace, log_to_driver=False)
ray.kill(ray.get_actor(name), no_restart=False)
"""


def test_two_worker_actors_complete_a_run_with_keys(tmp_path, env):
    run_dir = tmp_path / "run"
    proc = start(run_dir, env, "launcher=ray", "launcher.workers=2", "budget.samples=3072")
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "worker w0 (pid" in out and "worker w1 (pid" in out  # both actors joined the controller
    ids = stream_ids(run_dir)
    assert sorted(ids) == list(range(3072 // 256))
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["launcher"]["name"] == "ray"
    assert cfg["controller"]["keys"] == str(run_dir / "keys")  # a key pair made for this run
    assert (run_dir / "keys" / "server.key_secret").stat().st_mode & 0o077 == 0
    info = json.loads((run_dir / "ray.json").read_text())
    assert info["actors"] == ["w0", "w1"] and info["started_cluster"]
    assert not matching(info["temp_dir"])  # the cluster it started is gone


def test_ray_kill_of_an_actor_loses_and_duplicates_nothing(tmp_path, env):
    run_dir = tmp_path / "run"
    proc = start(run_dir, env, "launcher=ray", "launcher.workers=2", "budget.samples=10000000",
                 "controller.dead_after_s=2")
    try:
        wait_for_requests(run_dir, 3, proc)
        info = json.loads((run_dir / "ray.json").read_text())
        # another driver on the run's cluster (a client of its token auth) kills actor w0; Ray restarts it
        kill = subprocess.run([sys.executable, "-c", KILL, info["address"], info["namespace"], "w0"],
                              env=dict(env, RAY_AUTH_MODE="token"), capture_output=True, text=True, timeout=60)
        assert kill.returncode == 0, kill.stderr[-2000:]
        wait_for_log(run_dir, "worker w0 (pid", 2, proc)  # the restarted actor joined again
        out = assert_went_on_after_a_restart(run_dir, proc, env)
    finally:
        if proc.poll() is None:  # a step above failed: stop the run
            finish(proc, timeout=1)
    assert "worker w0 ended" in out, out[-3000:]


def test_ctrl_c_leaves_no_actor_or_raylet(tmp_path, env):
    run_dir = tmp_path / "run"
    proc = start(run_dir, env, "launcher=ray", "launcher.workers=2", "budget.samples=10000000")
    wait_for_requests(run_dir, 2, proc)
    info = json.loads((run_dir / "ray.json").read_text())
    tree = descendants(proc.pid)
    assert matching(info["temp_dir"]) and any("raylet" in open(f"/proc/{p}/cmdline").read() for p in alive(tree))
    out = ctrl_c(proc)
    assert proc.returncode == 130, out[-3000:]
    assert not alive_after(tree), out[-3000:]  # controller, trainer, raylet, GCS, the actors' processes
    assert not matching(info["temp_dir"]) and not matching(info["namespace"])


def test_a_failing_trainer_stops_every_actor(tmp_path, env):
    bad = tmp_path / "wrong.npz"  # found only once the trainer learns the family's image shape
    np.savez(bad, images=np.zeros((10, 32, 32), np.uint8), labels=np.zeros(10, np.uint8))
    run_dir = tmp_path / "run"
    proc = start(run_dir, env, "launcher=ray", "launcher.workers=2", "budget.samples=100000",
                 f"trainer.val_data={bad}")
    deadline = time.monotonic() + 60
    while not (run_dir / "ray.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = descendants(proc.pid)  # the actors are up; the trainer is still loading its validation data
    out = finish(proc)
    assert proc.returncode == 1 and "trainer failed (exit code 2)" in out, out[-3000:]
    info = json.loads((run_dir / "ray.json").read_text())
    assert not matching(info["temp_dir"]) and not alive(tree)
