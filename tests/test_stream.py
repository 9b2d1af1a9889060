"""``trainer.stream.Stream`` the way a user drives it: their own loop, DataLoader workers, a
second pass, a stream left unclosed. Each starts a real controller and workers (Stream.local)."""

import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import zmq
from torch.utils.data import DataLoader

from conftest import ROOT, proc_cmdlines, start_against
from otfgen.blender_gen import protocol
from otfgen.trainer.stream import Stream, StreamError

SMALL = ["controller.request_size=256", "trainer.batch_size=128", "launcher.workers=1"]


def test_an_unstarted_stream_pickles_for_dataloader_workers_and_reports_need_a_batch():
    s = Stream("tcp://127.0.0.1:1", samples=100)
    copy = pickle.loads(pickle.dumps(s))  # what spawn and forkserver do with a DataLoader's dataset
    assert (copy.controller, copy.samples, copy._passes) == (s.controller, 100, s._passes)
    with pytest.raises(StreamError, match="num_workers>0"):
        s.report(torch.zeros(4))
    s.close()
    assert not os.path.exists(s._passes)
    with pytest.raises(StreamError, match="closed"):
        next(iter(s))


def test_a_request_delivered_twice_is_consumed_once():
    """A re-issued request whose first copy arrives after all reaches the PULL twice: the first copy
    is trained on, the second is dropped and counted in ``duplicates``. A fake controller (ROUTER)
    and worker (PUSH) drive a real Stream."""
    ctx = zmq.Context()
    router, push = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUSH)
    for sock in (router, push):
        sock.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    s = Stream(f"tcp://127.0.0.1:{port}", batch_size=4, samples=8, data_timeout_s=10)
    try:
        start_against(s, router)
        assert s.info["num_classes"] == 10
        push.connect(s.pull_endpoint)

        def batch(rid: int, value: int) -> list:
            fields, arrays = protocol.example("batch", n=4)
            arrays["images"] = np.full_like(arrays["images"], value)
            return protocol.encode("batch", {**fields, "id": rid}, arrays)

        for frames in (batch(1, 10), batch(1, 11), batch(2, 20)):  # request 1's second copy comes in between
            push.send_multipart(frames)
        got = [(b.request_id, int(b.images[0, 0, 0])) for b in s.iter_batches()]
        assert got == [(1, 10), (2, 20)]
        assert s.duplicates == 1
    finally:
        s.close(finished=False)
        router.close()
        push.close()
        ctx.term()


def _final_probs(run_dir):
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    return [r for r in rows if "policy/probs" in r][-1]["policy/probs"]


@pytest.mark.slow
def test_report_from_a_plain_user_loop_moves_a_learning_policy(tmp_path):
    """bandit, driven by ``stream.report(losses)`` from ``for x, y in DataLoader(stream)``: the
    losses of class 3 fall (learning progress) while the others stay flat, so the policy moves
    its label distribution onto 3, and the stream's late batches hold more 3s."""
    overrides = [f"run_dir={tmp_path}", "budget.samples=12288", "policy=bandit", "policy.options.params=[label]",
                 *SMALL]
    threes = []
    with Stream.local(overrides) as stream:
        for step, (x, y) in enumerate(DataLoader(stream, batch_size=None)):
            losses = torch.where(y == 3, 5.0 - 0.05 * step, torch.ones(len(y)))  # per sample, as a model's
            stream.report(losses)
            threes.append(float((y == 3).float().mean()))
    probs = _final_probs(tmp_path)["label"]
    assert probs[3] > 0.4 and max(p for i, p in enumerate(probs) if i != 3) < 0.1, probs
    assert np.mean(threes[-24:]) > 0.3 > np.mean(threes[:16]), threes  # uniform at first: 10%


@pytest.mark.slow
@pytest.mark.parametrize("start", ["spawn", "fork"])
def test_dataloader_workers_share_the_stream_exactly_once(tmp_path, start):
    """num_workers=2 with spawn (the default from Python 3.14) or fork: each worker opens its own sockets
    and takes its own half; together every sample once. report() in the main process, which took
    no batch itself, is a clear error; a second epoch is one too. The budget is odd: each worker
    takes samples // 2 (1000), and the one left over is never generated."""
    budget, share = 2001, 1000
    overrides = [f"run_dir={tmp_path}", f"budget.samples={budget}", "policy=bandit", *SMALL]
    stream = Stream.local(overrides, data_timeout_s=60)
    loader = DataLoader(stream, batch_size=None, num_workers=2, multiprocessing_context=start)
    digests, labels = set(), []
    with stream:
        for x, y in loader:
            for im in x:
                digests.add(hashlib.blake2b(im.numpy().tobytes(), digest_size=16).hexdigest())
            labels.append(y)
            with pytest.raises(StreamError, match="num_workers>0"):
                stream.report(torch.zeros(len(y)))
        assert sum(map(len, labels)) == 2 * share
        assert len(digests) == 2 * share  # no sample twice, none lost
        with pytest.raises(StreamError, match="already been iterated"):
            next(iter(loader))
    params = [json.loads(line) for line in open(tmp_path / "params.jsonl")][1:]
    assert len({r["id"] for r in params}) == len(params)
    per_rank = {rank: sum(r["n"] for r in params if r["rank"] == rank) for rank in (0, 1)}
    assert per_rank == {0: share, 1: share}, per_rank  # each DataLoader worker registered as a rank of its own
    # no losses reached the controller: the bandit never left uniform
    assert all(abs(p - 0.1) < 1e-6 for p in _final_probs(tmp_path)["label"])


@pytest.mark.slow
def test_a_second_pass_is_a_clear_error(tmp_path, capfd):
    # echo_logs=False: the controller's and workers' lines stay in the run directory's logs
    with Stream.local([f"run_dir={tmp_path}", "budget.samples=512", *SMALL], echo_logs=False) as stream:
        assert stream.run_dir == tmp_path
        first = sum(len(y) for _, y in DataLoader(stream, batch_size=None))
        with pytest.raises(StreamError, match="already been iterated"):
            for _ in DataLoader(stream, batch_size=None):
                pass
    assert first == 512
    assert " otfgen." not in capfd.readouterr().err
    for name, logger in (("launcher", "otfgen.launcher"), ("controller", "otfgen.controller"),
                         ("worker-0", "otfgen.worker")):
        assert f" {logger} INFO " in (tmp_path / f"{name}.log").read_text(), name


SCRIPT = """
import gc, json, os, sys, time
from otfgen.trainer.stream import Stream

def children():  # every descendant: otfgen serve, and the controller and worker it starts
    parent = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent[int(p)] = int(open(f"/proc/{p}/stat").read().split(") ")[1].split()[1])
        except OSError:
            pass
    mine, grew = {os.getpid()}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in mine} - mine
        grew = bool(more)
        mine |= more
    return sorted(mine - {os.getpid()})

common = ["budget.samples=4096", "controller.request_size=256", "trainer.batch_size=128", "launcher.workers=1"]
dropped = Stream.local([f"run_dir={sys.argv[1]}/a", *common])
first = children()
for i, (x, y) in enumerate(dropped):
    if i == 2:
        break
del dropped, x, y
gc.collect()
deadline = time.monotonic() + 10
while set(first) & set(children()) and time.monotonic() < deadline:
    time.sleep(0.1)
left_after_drop = sorted(set(first) & set(children()))
kept = Stream.local([f"run_dir={sys.argv[1]}/b", *common])  # neither closed nor dropped
print(json.dumps({"first": first, "left_after_drop": left_after_drop, "second": children()}), flush=True)
"""


@pytest.mark.slow
def test_a_stream_never_closed_stops_its_processes(tmp_path, env):
    """Stream.local without ``with``: a stream that is dropped stops its controller and workers
    at once (not at interpreter exit); one still held stops them when the interpreter exits."""
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(tmp_path)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(out["first"]) == 3 and len(out["second"]) == 3, out  # otfgen serve, a controller and a worker each
    assert out["left_after_drop"] == [], out
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and set(out["second"]) & set(proc_cmdlines()):
        time.sleep(0.1)
    alive = {pid: cmd for pid, cmd in proc_cmdlines().items() if pid in out["first"] + out["second"]}
    assert not alive, alive
