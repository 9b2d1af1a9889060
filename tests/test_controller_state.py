"""Controller bookkeeping without sockets: credits and re-issue under message reorderings."""

import numpy as np
import pytest

from otfgen.controller.config import ConfigError, compose, with_run_dir
from otfgen.controller.ledger import Request, WorkerState
from otfgen.blender_gen.families import scene_space
from otfgen.controller.server import Controller


class Msg(dict):
    arrays: dict = {}


@pytest.fixture
def ctrl(tmp_path):
    cfg = with_run_dir(compose(["budget.samples=1024"]), tmp_path)
    c = Controller(cfg, tmp_path)
    c.workers[b"w"] = WorkerState("w", credits=0, welcomed=True)
    params, seeds = c.space.sample({}, 1, 4)
    for rid in (0, 1):
        c.ledger.open[rid] = Request(rid, 1, {}, params, seeds, step=rid, worker=b"w")
        c.workers[b"w"].open.add(rid)
        c.workers[b"w"].rendering.add(rid)
    return c


@pytest.mark.parametrize("order", [("done", "delivered"), ("delivered", "done")])
def test_credit_returns_whatever_arrives_first(ctrl, order):
    for kind in order:
        getattr(ctrl, f"_on_{kind}")(b"w", Msg(id=0, ms=1.0, samples=4))
    w = ctrl.workers[b"w"]
    assert w.credits == 1 and 0 not in w.open and 0 not in w.rendering and 0 not in ctrl.ledger.open


def test_dead_worker_requeues_rendered_but_undelivered(ctrl):
    ctrl._on_done(b"w", Msg(id=0, ms=1.0))  # rendered, still in the worker's send queue
    ctrl.workers[b"w"].last_seen = -1e9
    ctrl._check_liveness(now=0.0)
    assert sorted(ctrl.ledger.reissue) == [0, 1] and b"w" not in ctrl.workers


def test_delivered_losses_reach_the_policy_once(tmp_path):
    cfg = with_run_dir(compose(["budget.samples=1024", "policy=bandit"]), tmp_path)
    c = Controller(cfg, tmp_path)
    c.workers[b"w"] = WorkerState("w", credits=0, welcomed=True)
    params, seeds = c.space.sample({}, 1, 4)
    c.ledger.open[0] = Request(0, 1, {}, params, seeds, step=0, worker=b"w")
    msg = Msg(id=0, samples=4)
    msg.arrays = {"losses": np.array([0.5, 1.0, 1.5, 2.0], np.float32)}
    c._on_delivered(b"t", msg)
    c._on_delivered(b"t", msg)  # a duplicate is dropped
    assert c.policy.observed == 1 and c.ledger.delivered == 1


def test_overrides_may_narrow_but_not_widen_a_range(tmp_path):
    space = scene_space(compose(["scene.params.slant.low=0.0"]))
    assert (space["slant"].low, space["slant"].high) == (0.0, 0.6)  # the scene's high, the override's low
    # a parameter the scene YAML leaves at the family's limits takes overrides the same way
    space = scene_space(compose(["scene.params.label.high=4", "scene.params.variant.high=0.5"]))
    assert (space["label"].low, space["label"].high, space["variant"].high) == (0, 4, 0.5)
    with pytest.raises(ConfigError, match="slant"):
        scene_space(compose(["scene.params.slant.low=-9"]))


def test_endpoint_in_use_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    import zmq

    with zmq.Context.instance().socket(zmq.PULL) as squatter:
        port = squatter.bind_to_random_port("tcp://127.0.0.1")
        p = subprocess.run([sys.executable, "-m", "otfgen.controller.server", f"controller.bind=tcp://127.0.0.1:{port}",
                            f"run_dir={tmp_path}", "budget.samples=256"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert f"controller.bind: cannot bind tcp://127.0.0.1:{port}" in p.stderr
    assert "Traceback" not in p.stderr
