"""The worker's threads: one I/O thread owns every socket (creates, uses and closes the DEALER and
the PUSH sockets); the thread that calls ``serve`` configures the family and renders. Fast: a fake
controller (a ROUTER) and fake trainers (PULLs) on loopback tcp live in the test itself."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from otfgen.blender_gen import families, protocol, worker
from otfgen.blender_gen.families import mnist2d
from conftest import ROOT

FAMILY = "mnist2d"
WID = "w-test"


class FakeController:
    """A ROUTER that records every message a worker sends it, with the time it arrived."""

    def __init__(self, ctx: zmq.Context):
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # as the real controller: a worker that reconnects under the same id (the next Serve of a
        # test) is taken at once, not dropped while the old connection's close is still in flight
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.endpoint = f"tcp://127.0.0.1:{self.router.bind_to_random_port('tcp://127.0.0.1')}"
        self.got: list[tuple[float, protocol.Message]] = []
        self.ident: bytes | None = None

    def pump(self, timeout_s: float = 0.05) -> None:
        if self.router.poll(int(timeout_s * 1000)):
            while self.router.poll(0):
                frames = self.router.recv_multipart(copy=False)
                self.ident = bytes(frames[0].buffer)
                self.got.append((time.monotonic(), protocol.decode(frames[1:])))

    def kinds(self) -> list[str]:
        return [m.kind for _, m in self.got]

    def wait_for(self, kind: str, timeout_s: float = 20.0, after: int = 0) -> protocol.Message:
        """The first ``kind`` message at index >= ``after``."""
        deadline = time.monotonic() + timeout_s
        while True:
            for _, m in self.got[after:]:
                if m.kind == kind:
                    return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind!r} from the worker within {timeout_s} s; got {self.kinds()}")
            self.pump()

    def wait_until(self, pred, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; the worker sent {self.kinds()}")
            self.pump()

    def send(self, kind: str, fields=None, arrays=None) -> None:
        self.router.send_multipart([self.ident, *protocol.encode(kind, fields, arrays)], copy=False)

    def welcome(self, pulls: list[str], render: dict | None = None, heartbeat_s: float = 0.2) -> None:
        # as controller/server.py's _welcome_waiting builds it: the PULL of every trainer rank, in rank order
        self.send("welcome", {"family": FAMILY, "space": families.default_space(FAMILY).to_mapping(),
                              "render": render or {}, "heartbeat_s": heartbeat_s, "push": pulls})

    def request(self, rid: int, n: int = 16, rank: int = 0, seed: int | None = None) -> tuple[dict, np.ndarray]:
        # as controller/server.py's _new_request and _issue build it
        params, seeds = families.default_space(FAMILY).sample(None, 1000 + rid if seed is None else seed, n)
        pfields, parrays = protocol.pack_params(params)
        self.send("request", {"id": rid, "family": FAMILY, "n": n, "rank": rank, **pfields},
                  {"seeds": seeds, **parrays})
        return params, seeds

    def close(self) -> None:
        self.router.close()


def _pull(ctx: zmq.Context) -> tuple[zmq.Socket, str]:
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    return pull, f"tcp://127.0.0.1:{pull.bind_to_random_port('tcp://127.0.0.1')}"


def _recv_batch(pull: zmq.Socket, timeout_s: float = 20.0) -> protocol.Message:
    assert pull.poll(int(timeout_s * 1000)), "no batch reached the trainer's PULL"
    msg = protocol.decode(pull.recv_multipart(copy=False))
    assert msg.kind == "batch"
    return msg


class Serve:
    """``worker.serve`` on its own thread (standing in for the process's main thread)."""

    def __init__(self, endpoint: str, worker_id: str = WID, **kw):
        self.result: object = None
        self.thread = threading.Thread(target=self._run, args=(endpoint, worker_id), kwargs=kw,
                                       name="serve-main", daemon=True)
        self.thread.start()

    def _run(self, endpoint, worker_id, **kw):
        try:
            self.result = worker.serve(endpoint, worker_id, **kw)
        except BaseException as e:  # checked by the test
            self.result = e

    def join(self, timeout_s: float = 15.0) -> object:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "serve did not return"
        return self.result


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def sockets(monkeypatch):
    """Every socket opened or closed in this process: (event, type, thread ident, thread name)."""
    events: list[tuple[str, int, int, str]] = []
    lock = threading.Lock()
    open_socket, close_socket = zmq.Context.socket, zmq.Socket.close

    def socket(self, socket_type, *args, **kwargs):
        s = open_socket(self, socket_type, *args, **kwargs)
        with lock:
            events.append(("open", socket_type, threading.get_ident(), threading.current_thread().name))
        return s

    def close(self, linger=None):
        if not self.closed:
            with lock:
                events.append(("close", self.type, threading.get_ident(), threading.current_thread().name))
        return close_socket(self, linger)

    monkeypatch.setattr(zmq.Context, "socket", socket)
    monkeypatch.setattr(zmq.Socket, "close", close)
    return events


def _worker_sockets(events) -> list[tuple[str, int, int, str]]:
    return [e for e in events if e[1] in (zmq.DEALER, zmq.PUSH)]  # the test itself only opens ROUTER and PULL


def assert_one_thread_owns_the_sockets(events, n_push: int) -> None:
    ws = _worker_sockets(events)
    opened = sorted(t for ev, t, _, _ in ws if ev == "open")
    closed = sorted(t for ev, t, _, _ in ws if ev == "close")
    assert opened == sorted([zmq.DEALER] + [zmq.PUSH] * n_push), ws
    assert closed == opened, f"not every socket was closed: {ws}"
    assert {(ident, name) for _, _, ident, name in ws} == {(ws[0][2], f"{WID}-io")}, ws
    assert not [e for e in events if e[3] == "serve-main"], "the serve (main) thread touched a socket"


# -- the whole conversation --------------------------------------------------------------------

def start_worker(fake, pull_ep: str, **welcome) -> "Serve":
    """A worker that has said hello, been welcomed to one trainer and granted its credits."""
    s = Serve(fake.endpoint, silent_after_s=10)
    fake.wait_for("hello")
    fake.welcome([pull_ep], **welcome)
    fake.wait_for("credit")
    return s


def _teardown(proc, fake, pull) -> None:
    """A worker process that is still running is killed; the fake peers close."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    fake.close()
    pull.close()


def stop_cleanly(fake, serve) -> None:
    """The controller says stop: the worker returns 0."""
    fake.send("stop", {"reason": "test"})
    assert serve.join() == 0


def test_hello_welcome_credits_batches_stop_on_the_io_thread(ctx, sockets):
    fake = FakeController(ctx)
    pulls = [_pull(ctx), _pull(ctx)]  # two trainer ranks: one PUSH each
    try:
        s = Serve(fake.endpoint, credits=3, silent_after_s=10)
        hello = fake.wait_for("hello")
        assert hello["worker"] == WID and hello["pid"] == os.getpid()
        assert fake.ident == WID.encode()
        fake.wait_for("heartbeat")  # polled: a loaded machine may send the first one late
        assert "credit" not in fake.kinds()  # no credit before the welcome (it would come before the heartbeat)
        fake.welcome([ep for _, ep in pulls])
        assert fake.wait_for("credit")["n"] == 3
        sent = {0: fake.request(0, n=16, rank=0), 1: fake.request(1, n=8, rank=1)}
        for rid, (pull, _) in enumerate(pulls):
            b = _recv_batch(pull)
            params, seeds = sent[rid]
            assert b["id"] == rid and b["worker"] == WID and b["family"] == FAMILY and b["ms"] >= 0
            assert set(b.arrays) == {"images", "labels"}  # nothing no receiver reads
            space = families.default_space(FAMILY)
            want_images, want_labels = mnist2d.render(space.cast(params), seeds)
            assert b.arrays["images"].shape == (len(seeds), 28, 28) and b.arrays["images"].dtype == np.uint8
            assert np.array_equal(b.arrays["images"], want_images)
            assert np.array_equal(b.arrays["labels"], want_labels)
        fake.wait_until(lambda: fake.kinds().count("done") == 2)
        assert {m["id"] for _, m in fake.got if m.kind == "done"} == {0, 1}
        # a request the worker cannot render (rank 5 of 2) is answered "failed", not dropped
        fake.request(2, n=4, rank=5)
        failed = fake.wait_for("failed")
        assert failed["id"] == 2 and "rank 5" in failed["error"]
        # the last batch still leaves on a clean stop
        mark = len(fake.got)
        fake.request(3, n=16, rank=0)
        assert fake.wait_for("done", after=mark)["id"] == 3
        fake.send("stop", {"reason": "training finished"})
        assert s.join() == 0
        assert _recv_batch(pulls[0][0])["id"] == 3
    finally:
        fake.close()
        for pull, _ in pulls:
            pull.close()
    assert_one_thread_owns_the_sockets(sockets, n_push=2)


def test_out_of_range_parameters_are_answered_failed_and_the_worker_goes_on(ctx, sockets):
    """Bad input reaching a worker (a parameter beyond its declared range, a label no class has):
    the request is answered "failed" with the parameter's name, nothing reaches the trainer for it,
    and the next request is rendered as usual."""
    fake = FakeController(ctx)
    pull, pull_ep = _pull(ctx)
    space = families.default_space(FAMILY)
    try:
        s = start_worker(fake, pull_ep)
        for rid, (name, value) in enumerate((("thickness", space["thickness"].high + 1.0), ("label", 10))):
            params, seeds = space.sample(None, 7 + rid, 4)
            params[name] = params[name].copy()
            params[name][1] = value
            pfields, parrays = protocol.pack_params(params)
            mark = len(fake.got)
            fake.send("request", {"id": rid, "family": FAMILY, "n": 4, "rank": 0, **pfields},
                      {"seeds": seeds, **parrays})
            failed = fake.wait_for("failed", after=mark)
            assert failed["id"] == rid and f"'{name}'" in failed["error"], failed.fields
        mark = len(fake.got)
        fake.request(2, n=8)
        assert fake.wait_for("done", after=mark)["id"] == 2
        assert _recv_batch(pull)["id"] == 2  # the first batch to reach the trainer: none for the failed ones
        assert "done" not in [m.kind for _, m in fake.got[:mark]]
        stop_cleanly(fake, s)
    finally:
        fake.close()
        pull.close()
    assert_one_thread_owns_the_sockets(sockets, n_push=1)


def test_configure_runs_on_the_serving_thread_before_credits_while_heartbeats_flow(ctx, sockets, monkeypatch):
    seen = {}

    def configure(options):
        seen["thread"] = threading.current_thread().name
        seen["options"] = dict(options)
        seen["start"] = time.monotonic()
        time.sleep(1.0)  # like Blender building a scene
        seen["end"] = time.monotonic()

    monkeypatch.setattr(mnist2d, "configure", configure, raising=False)
    fake = FakeController(ctx)
    pull, pull_ep = _pull(ctx)
    try:
        s = Serve(fake.endpoint, silent_after_s=10)
        fake.wait_for("hello")
        fake.pump()
        mark = len(fake.got)
        fake.welcome([pull_ep], render={"quality": 1}, heartbeat_s=0.1)
        credit = fake.wait_for("credit")
        credit_at = next(t for t, m in fake.got if m is credit)
        assert seen["thread"] == "serve-main" and seen["options"] == {"quality": 1}
        assert credit_at >= seen["end"], "credits granted before the family was configured"
        # counted in the order the worker sent them, not by when this thread read them: between the
        # welcome and the credit lies the 1 s configure (and, at most, the one heartbeat before it)
        beats = [m for _, m in fake.got[mark:] if m.kind == "heartbeat" or m is credit]
        assert beats[-1] is credit and len(beats) - 1 >= 5, f"only {len(beats) - 1} heartbeats during a 1 s configure"
        stop_cleanly(fake, s)
    finally:
        fake.close()
        pull.close()
    assert_one_thread_owns_the_sockets(sockets, n_push=1)


def test_heartbeats_flow_during_a_long_render(ctx, sockets, monkeypatch):
    render = worker.Renderer.render

    def slow(self, params, seeds):
        time.sleep(1.0)  # like a long Cycles frame
        return render(self, params, seeds)

    monkeypatch.setattr(worker.Renderer, "render", slow)
    fake = FakeController(ctx)
    pull, pull_ep = _pull(ctx)
    try:
        s = start_worker(fake, pull_ep, heartbeat_s=0.1)
        fake.pump()
        mark = len(fake.got)
        asked = time.monotonic()
        fake.request(0)
        done = fake.wait_for("done")
        done_at = next(t for t, m in fake.got if m is done)
        assert done_at - asked >= 1.0
        # in the order the worker sent them (not timed at read): before its "done", after the request
        kinds = [m.kind for _, m in fake.got[mark:]]
        beats = kinds[:kinds.index("done")].count("heartbeat")
        assert beats >= 5, f"only {beats} heartbeats during a 1 s render"
        assert _recv_batch(pull)["id"] == 0
        stop_cleanly(fake, s)
    finally:
        fake.close()
        pull.close()
    assert_one_thread_owns_the_sockets(sockets, n_push=1)


# -- the ways out ------------------------------------------------------------------------------

def test_a_family_that_cannot_be_configured_never_takes_requests(ctx, sockets):
    fake = FakeController(ctx)
    pull, pull_ep = _pull(ctx)
    try:
        s = Serve(fake.endpoint, silent_after_s=10)
        fake.wait_for("hello")
        fake.welcome([pull_ep], render={"device": "GPU"})  # mnist2d takes no render options
        err = s.join()
        assert isinstance(err, worker.RenderSetupError) and "takes no render options" in str(err)
        time.sleep(0.2)
        fake.pump()
        assert "credit" not in fake.kinds()
    finally:
        fake.close()
        pull.close()
    ws = _worker_sockets(sockets)
    assert [(ev, t) for ev, t, _, _ in ws] == [("open", zmq.DEALER), ("close", zmq.DEALER)]  # no PUSH either
    assert {name for *_, name in ws} == {f"{WID}-io"}
    assert not [e for e in sockets if e[3] == "serve-main"]


def test_no_welcome_or_a_silent_controller_returns_3(ctx, sockets, caplog):
    fake = FakeController(ctx)
    pull, pull_ep = _pull(ctx)
    try:
        with caplog.at_level(logging.INFO, logger="otfgen.worker"):
            t0 = time.monotonic()
            assert Serve(fake.endpoint, silent_after_s=0.5).join() == 3  # nobody answers the hello
            assert time.monotonic() - t0 < 5
            assert "no welcome from controller" in caplog.text
            fake.pump()  # the first worker's hello and heartbeats
            mark = len(fake.got)
            s = Serve(fake.endpoint, silent_after_s=1.0)
            fake.wait_for("hello", after=mark)
            fake.welcome([pull_ep])
            fake.wait_for("credit")
            assert s.join() == 3  # welcomed, then the controller falls silent
            assert "controller silent for" in caplog.text
    finally:
        fake.close()
        pull.close()
    ws = _worker_sockets(sockets)
    assert sorted(t for ev, t, *_ in ws if ev == "open") == sorted(t for ev, t, *_ in ws if ev == "close")
    assert {name for *_, name in ws} == {f"{WID}-io"}
    assert not [e for e in sockets if e[3] == "serve-main"]


def test_interrupt_while_rendering_stops_the_io_thread_which_closes_its_sockets(ctx, sockets, monkeypatch, caplog):
    def interrupted(self, params, seeds):
        raise KeyboardInterrupt  # Ctrl-C arrives on the main thread, mid-render

    monkeypatch.setattr(worker.Renderer, "render", interrupted)
    fake = FakeController(ctx)
    pull, pull_ep = _pull(ctx)
    try:
        s = start_worker(fake, pull_ep)
        fake.request(0)
        assert isinstance(s.join(), KeyboardInterrupt)
    finally:
        fake.close()
        pull.close()
    assert "did not exit" not in caplog.text
    assert_one_thread_owns_the_sockets(sockets, n_push=1)


def _wait_blocked_in_send(thread_name: str, timeout_s: float = 20.0, for_s: float = 0.3) -> None:
    """Until the thread has been inside a socket send for ``for_s`` without leaving it: polled on
    its stack, not guessed with a sleep."""
    thread = next(t for t in threading.enumerate() if t.name == thread_name)
    deadline, since = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread.ident)
        names = set()
        while frame is not None:
            names.add(frame.f_code.co_name)
            frame = frame.f_back
        if "send_multipart" in names:
            since = since or time.monotonic()
            if time.monotonic() - since >= for_s:
                return
        else:
            since = None
        time.sleep(0.01)
    raise AssertionError(f"{thread_name} never blocked in a send within {timeout_s} s")


def test_a_stuck_io_thread_keeps_its_sockets(ctx, sockets, monkeypatch, caplog):
    """The I/O thread is blocked sending to a trainer that is not there when Ctrl-C comes: the main
    thread waits, logs and leaves; the sockets stay the I/O thread's, which closes them once free."""
    monkeypatch.setattr(worker, "JOIN_TIMEOUT_S", 0.5)
    render = worker.Renderer.render
    calls = []

    def interrupted_later(self, params, seeds):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(1.0)  # meanwhile the I/O thread queues all 12 requests for this thread
        if len(calls) == 12:
            _wait_blocked_in_send(f"{WID}-io")  # SNDHWM 4, nobody listens
            raise KeyboardInterrupt
        return render(self, params, seeds)

    monkeypatch.setattr(worker.Renderer, "render", interrupted_later)
    spare, spare_ep = _pull(ctx)
    spare.close()  # a trainer endpoint nobody listens on (yet)
    fake = FakeController(ctx)
    try:
        with caplog.at_level(logging.INFO, logger="otfgen.worker"):
            s = Serve(fake.endpoint, silent_after_s=10)
            fake.wait_for("hello")
            fake.welcome([spare_ep])
            fake.wait_for("credit")
            for rid in range(12):
                fake.request(rid, n=64)
            assert isinstance(s.join(), KeyboardInterrupt)
            assert "the I/O thread did not exit within" in caplog.text
        io_thread = next(t for t in threading.enumerate() if t.name == f"{WID}-io")
        assert [ev for ev, *_ in _worker_sockets(sockets)] == ["open", "open"]  # nothing closed meanwhile
        assert not [e for e in sockets if e[3] == "serve-main"]
        # a trainer appears, the blocked send completes; the I/O thread sees the stop and closes its sockets
        late = ctx.socket(zmq.PULL)
        late.setsockopt(zmq.LINGER, 0)
        late.bind(spare_ep)
        deadline = time.monotonic() + 20
        while io_thread.is_alive() and time.monotonic() < deadline:
            while late.poll(20):
                late.recv_multipart()
        assert not io_thread.is_alive()
        late.close()
    finally:
        fake.close()
    assert_one_thread_owns_the_sockets(sockets, n_push=1)


def _like_a_terminal():  # SIGINT handled by default and not blocked, whatever this test process did
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.parametrize("when", ["waiting for the welcome", "waiting for requests"])
def test_ctrl_c_exits_130(ctx, env, when):
    fake = FakeController(ctx)
    pull, pull_ep = _pull(ctx)
    proc = subprocess.Popen([sys.executable, "-m", "otfgen.blender_gen.worker", f"controller={fake.endpoint}", f"id={WID}"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_like_a_terminal)
    try:
        fake.wait_for("hello")
        if when == "waiting for requests":
            fake.welcome([pull_ep])
            fake.wait_for("credit")
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 130, out
        assert "Traceback" not in out and "did not exit" not in out, out
    finally:
        _teardown(proc, fake, pull)


def test_main_exits_2_when_the_family_cannot_be_configured(ctx, env):
    fake = FakeController(ctx)
    pull, pull_ep = _pull(ctx)
    proc = subprocess.Popen([sys.executable, "-m", "otfgen.blender_gen.worker", f"controller={fake.endpoint}", f"id={WID}"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        fake.wait_for("hello")
        fake.welcome([pull_ep], render={"samples": 4})
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 2, out
        assert "takes no render options" in out and "Traceback" not in out, out
        fake.pump()
        assert "credit" not in fake.kinds()
    finally:
        _teardown(proc, fake, pull)
