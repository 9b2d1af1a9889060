"""launcher=slurm with submitit's local executor (SLURM cannot run here): workers as jobs."""

import json
import os
import signal

import pytest

pytest.importorskip("submitit")

from launch_helpers import (alive_after, assert_went_on_after_a_restart, ctrl_c, descendants, finish,  # noqa: E402
                            matching, start, stream_ids, wait_for_log, wait_for_requests)

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

LOCAL = ["launcher=slurm", "launcher.executor=local", "launcher.workers=2"]


def _jobs(run_dir):
    """The processes running the job function (submitit's task runner), by pid."""
    return [pid for pid in matching("submitit.core._submit") if str(run_dir) in open(f"/proc/{pid}/cmdline").read()]


def test_two_worker_jobs_complete_a_run_with_keys(tmp_path, env):
    run_dir = tmp_path / "run"
    proc = start(run_dir, env, *LOCAL, "budget.samples=3072")
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "worker w0 (pid" in out and "worker w1 (pid" in out
    assert sorted(stream_ids(run_dir)) == list(range(3072 // 256))
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["controller"]["keys"] == str(run_dir / "keys")
    folder = run_dir / "submitit"
    assert folder.stat().st_mode & 0o077 == 0  # job pickles carry the client's secret key
    assert len(list(folder.glob("*_result.pkl"))) == 2  # each job ended by returning (the stop)
    assert not _jobs(run_dir)


def test_killing_a_job_loses_and_duplicates_nothing(tmp_path, env):
    run_dir = tmp_path / "run"
    proc = start(run_dir, env, *LOCAL, "budget.samples=10000000", "controller.dead_after_s=2")
    try:
        wait_for_requests(run_dir, 3, proc)
        jobs = _jobs(run_dir)
        assert len(jobs) == 2
        os.kill(jobs[0], signal.SIGKILL)  # as if its node were lost: the job is submitted again
        # submitit's local executor can take 10-15 s to report a killed job
        wait_for_log(run_dir, ") joined", 3, proc)  # two workers, one of them twice
        out = assert_went_on_after_a_restart(run_dir, proc, env)
    finally:
        if proc.poll() is None:  # a step above failed: stop the run
            finish(proc, timeout=1)
    assert "ended (job" in out and "restart 1 of 3" in out, out[-3000:]


def test_ctrl_c_cancels_every_job(tmp_path, env):
    run_dir = tmp_path / "run"
    proc = start(run_dir, env, *LOCAL, "budget.samples=10000000")
    wait_for_requests(run_dir, 2, proc)
    tree = descendants(proc.pid)
    assert len(_jobs(run_dir)) == 2
    out = ctrl_c(proc)
    assert proc.returncode == 130, out[-3000:]
    assert not alive_after(tree), out[-3000:]
    assert not _jobs(run_dir) and not matching(str(run_dir / "submitit"))
