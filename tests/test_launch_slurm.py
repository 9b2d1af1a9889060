"""launcher=slurm with submitit's local executor (SLURM cannot run here): workers as jobs."""

import json
import os
import signal

import pytest

pytest.importorskip("submitit")

from launch_helpers import (alive_after, ctrl_c, descendants, finish, matching, replay, start, stream_ids,  # noqa: E402
                            wait_for_requests)

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
    # long enough that the resubmitted job joins before the end: submitit's local executor can
    # take 10-15 s to report a killed job, and a 6k run had once finished before that
    budget = 16384
    proc = start(run_dir, env, *LOCAL, f"budget.samples={budget}", "controller.dead_after_s=2")
    try:
        wait_for_requests(run_dir, 3, proc)
        jobs = _jobs(run_dir)
        assert len(jobs) == 2
        os.kill(jobs[0], signal.SIGKILL)  # as if its node were lost: the job is submitted again
    finally:
        out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "ended (job" in out and "restart 1 of 3" in out, out[-3000:]
    assert out.count(") joined") == 3, out[-3000:]  # two workers, one of them twice
    ids = stream_ids(run_dir)
    assert len(ids) == len(set(ids)) == budget // 256  # none lost, none duplicated
    assert replay(run_dir, env)["matched"] == budget // 256


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
