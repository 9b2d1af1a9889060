"""A worker: a long-lived process that renders whatever requests the controller sends it.

It connects a DEALER to the controller's ROUTER, says hello, learns the scene family and its
parameter space from the welcome, grants credits, and then loops: receive a request → check
its parameters → render the batch → PUSH it to the trainer (arrays zero-copy) → tell the
controller it is done (which returns the credit).

Two threads. One I/O thread owns every socket for its whole life (STYLE 8): it creates the
DEALER, connects it, says hello, waits for the welcome while heartbeating, creates the PUSH
sockets, grants the credits, heartbeats, receives requests, sends batches, "done" and "failed",
and closes every socket itself before it exits. The main thread never touches a socket: it
configures the family (Blender builds its scene here, and Blender wants the main thread), then
renders. They talk through queues and an event only: welcome (I/O → main: the welcome, or None
when there is none), targets (main → I/O: the family is configured, open the PUSH sockets and
grant the credits), todo (I/O → main: requests, then None: stop rendering), results (main → I/O:
rendered batches and failures) and stop (main → I/O: the main thread is leaving, e.g. Ctrl-C or
a family that cannot be configured; such a worker never grants a credit). On the way out the
main thread waits a few seconds for the I/O thread; if it is still busy (say, blocked sending to
a trainer that stopped reading), the main thread logs that and returns without closing anything.

    otfgen-worker controller=tcp://127.0.0.1:5555 [id=w3] [credits=2]
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import sys
import threading
import time
from types import ModuleType

import numpy as np
import zmq

from otfgen.blender_gen import families, protocol, security
from otfgen.configs import cli
from otfgen.blender_gen.space import ParamSpace, SpaceError

log = logging.getLogger("otfgen.worker")

JOIN_TIMEOUT_S = 5.0  # how long the main thread waits for the I/O thread on the way out


class Renderer:
    """A family held in memory with the space the controller declared for this run."""

    def __init__(self, family: ModuleType, space: ParamSpace):
        self.family, self.space = family, space

    def render(self, params: dict[str, np.ndarray], seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(seeds)
        params = self.space.cast(params)
        self.space.check_params(params, n)
        images, labels = self.family.render(params, seeds)
        if images.dtype != np.uint8 or len(images) != n or labels.shape != (n,):
            raise RuntimeError(f"family '{self.family.NAME}' returned {images.dtype}{images.shape}, "
                               f"labels {labels.shape} for {n} samples")
        return images, labels.astype(np.int64, copy=False)


def serve(controller: str, worker_id: str | None = None, credits: int = 2,
          silent_after_s: float = 30.0, context: zmq.Context | None = None, keys: str | None = None) -> int:
    """Run until the controller says stop (returns 0) or falls silent (returns 3).

    ``keys``: a CurveZMQ keys directory (server.key, client.key_secret); required when the
    controller is not on this machine.

    Call it on the main thread (Blender's): it configures the family and renders here while an
    I/O thread it starts owns every socket (see the module docstring)."""
    worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    ctx = context or zmq.Context.instance()
    rejects = protocol.RejectCounter()
    curve = security.for_endpoint(keys, "controller", controller, server=False)
    io = _IO(worker_id, controller, ctx, curve, credits, silent_after_s, rejects)
    thread = threading.Thread(target=io.run, name=f"{worker_id}-io", daemon=True)
    thread.start()
    code = None
    try:
        code = _configure_and_render(worker_id, io)
    finally:  # also on Ctrl-C and on a family that cannot be set up: the I/O thread closes its sockets
        io.stop.set()
        thread.join(timeout=JOIN_TIMEOUT_S)
        if thread.is_alive():  # its sockets stay its own: closing them from here could crash both threads
            log.error("worker %s: the I/O thread did not exit within %.0f s; leaving its sockets to it",
                      worker_id, JOIN_TIMEOUT_S)
    if io.error is not None and not thread.is_alive():
        raise io.error  # setting up the sockets failed (e.g. a malformed endpoint): as if raised here
    return io.code if code is None else code


def _configure_and_render(worker_id: str, io: "_IO") -> int | None:
    """The main thread's part: configure the family the welcome names, let the I/O thread grant
    credits, render until told to stop. Returns an exit code, or None for the I/O thread's."""
    welcome = io.welcome.get()
    if welcome is None:
        return None  # no welcome (the I/O thread has logged why), Ctrl-C, or a socket error
    family = families.load(welcome["family"])
    _configure(family, dict(welcome["render"]))
    renderer = Renderer(family, ParamSpace.from_mapping(welcome["space"]))
    targets = welcome["push"]  # one PULL per trainer rank, in rank order (checked by the wire format)
    log.info("worker %s: family %s, pushing to %s", worker_id, welcome["family"], ", ".join(targets))
    io.targets.put(targets)  # configured: the I/O thread opens the PUSH sockets and grants the credits
    _render_requests(worker_id, renderer, io.todo, io, len(targets))
    return None


class RenderSetupError(RuntimeError):
    """The family cannot render here as configured (no bpy, missing GPU, bad render option)."""


def _configure(family: ModuleType, options: dict) -> None:
    """Hand the run's render options to the family; Blender families build their scene here, so
    a missing bpy or GPU is reported at start-up, not on the first request."""
    configure = getattr(family, "configure", None)
    if configure is None:
        if options:
            raise RenderSetupError(f"scene family '{family.NAME}' takes no render options, got {sorted(options)}")
        return
    try:
        configure(options)
    except (RuntimeError, ValueError, TypeError) as e:
        raise RenderSetupError(f"scene family '{family.NAME}': {e}") from e


def _await_welcome(dealer: zmq.Socket, rejects: protocol.RejectCounter, timeout_s: float,
                   beat_s: float = 0.5, stop: threading.Event | None = None):
    """Wait for the welcome (sent once a trainer has joined, however long that takes) while
    heartbeating, so the controller keeps this worker; give up only when the controller itself
    has been silent for ``timeout_s``, or when ``stop`` is set."""
    deadline = time.monotonic() + timeout_s
    last_beat = time.monotonic()
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        if time.monotonic() - last_beat >= beat_s:
            dealer.send_multipart(protocol.encode("heartbeat"))
            last_beat = time.monotonic()
        if dealer.poll(100):
            try:
                msg = protocol.decode(dealer.recv_multipart(copy=False))
            except protocol.ProtocolError as e:
                rejects.add(e)
                log.warning("rejected message: %s", e)
                continue
            if msg.kind == "welcome":
                return msg
            if msg.kind == "stop":
                return None
            deadline = time.monotonic() + timeout_s  # the controller is alive: keep waiting
    return None


def _render_requests(worker_id, renderer, todo: queue.Queue, io: "_IO", n_ranks: int) -> None:
    """Render on this (the main) thread — Blender wants it — while the I/O thread keeps the
    heartbeats flowing through a render of any length (a long Cycles frame must not look like a
    dead worker to the controller)."""
    while True:
        msg = todo.get()
        if msg is None:
            return
        rid = msg["id"]
        t0 = time.perf_counter()
        try:
            seeds, rank = msg.arrays["seeds"], msg["rank"]  # dtype and length: checked by the wire format
            if rank >= n_ranks:  # only this side knows how many ranks there are
                raise SpaceError(f"rank {rank} is not one of the {n_ranks} trainer ranks")
            images, labels = renderer.render(protocol.params_of(msg), seeds)
        except (SpaceError, RuntimeError, ValueError) as e:
            log.warning("worker %s: request %d failed: %s", worker_id, rid, e)
            io.results.put((rid, None, str(e)[:500]))
            continue
        ms = (time.perf_counter() - t0) * 1000
        io.results.put((rid, (rank, msg["family"], ms, {"images": images, "labels": labels}), None))


class _IO:
    """The worker's socket thread: it creates, uses and closes the DEALER and every PUSH socket.
    Hello, the welcome, heartbeats, credits, requests in, finished batches out."""

    def __init__(self, worker_id, controller, ctx, curve, credits, silent_after_s, rejects):
        self.worker_id, self.controller, self.ctx, self.curve = worker_id, controller, ctx, curve
        self.credits, self.silent_after_s, self.rejects = credits, silent_after_s, rejects
        self.welcome: queue.Queue = queue.Queue()  # the welcome, then None (always last): no (more) welcome
        self.targets: queue.Queue = queue.Queue()  # the PUSH endpoints, once the family is configured
        self.todo: queue.Queue = queue.Queue()  # decoded requests, or None: stop rendering
        self.results: queue.Queue = queue.Queue()
        self.stop = threading.Event()  # set by the main thread when it is leaving (e.g. Ctrl-C)
        self.code = 130
        self.error: BaseException | None = None  # a failure before the credits were granted
        self.rendered = 0
        self.serving = False  # the credits have been granted

    def run(self) -> None:
        try:
            self.code = self._run()
        except BaseException as e:
            if self.serving:
                raise  # reported by threading.excepthook; the worker exits with 130
            self.error = e  # the main thread raises it, as serve did when it set the sockets up
        finally:
            self.welcome.put(None)  # after the welcome, if there was one: the main thread reads that first
            while True:  # what was queued is not rendered after a stop
                try:
                    self.todo.get_nowait()
                except queue.Empty:
                    break
            self.todo.put(None)

    def _run(self) -> int:
        dealer = self.ctx.socket(zmq.DEALER)
        try:
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_CONTROL_FRAME_BYTES)
            if self.curve is not None:
                security.make_client(dealer, self.curve)
            dealer.setsockopt_string(zmq.IDENTITY, self.worker_id)
            dealer.connect(self.controller)
            dealer.send_multipart(protocol.encode("hello", {"worker": self.worker_id, "pid": os.getpid()}))
            welcome = _await_welcome(dealer, self.rejects, self.silent_after_s, stop=self.stop)
            if welcome is None:
                if self.stop.is_set():
                    return 130  # the main thread left first (interrupted)
                log.error("worker %s: no welcome from controller %s within %.0f s", self.worker_id, self.controller,
                          self.silent_after_s)
                return 3
            self.welcome.put(welcome)  # the main thread configures the family meanwhile
            return self._serve(dealer, float(welcome["heartbeat_s"]))
        finally:
            dealer.close()

    def _open_pushes(self, targets: list[str], pushes: list) -> None:
        for target in targets:
            push = self.ctx.socket(zmq.PUSH)
            pushes.append(push)
            push.setsockopt(zmq.LINGER, 2000)  # let the last batch leave on a clean stop
            push.setsockopt(zmq.SNDHWM, 4)
            if self.curve is not None:
                security.make_client(push, self.curve)
            push.connect(target)

    def _send_results(self, dealer, pushes) -> bool:
        sent = False
        while True:
            try:
                rid, ok, error = self.results.get_nowait()
            except queue.Empty:
                return sent
            if ok is None:
                dealer.send_multipart(protocol.encode("failed", {"id": rid, "error": error}))
            else:
                rank, family, ms, arrays = ok
                fields = {"id": rid, "worker": self.worker_id, "family": family, "ms": ms}
                pushes[rank].send_multipart(protocol.encode("batch", fields, arrays), copy=False)
                dealer.send_multipart(protocol.encode("done", {"id": rid, "ms": ms}))
                self.rendered += 1
            sent = True

    def _serve(self, dealer, heartbeat_s: float) -> int:
        """Heartbeat and listen while the main thread configures the family; once it has, open the
        PUSH sockets and grant the credits; then requests in, results out, until a stop."""
        pushes: list = []
        try:
            last_heard = last_sent = time.monotonic()
            poll_ms = max(5, min(50, int(heartbeat_s * 1000)))
            while not self.stop.is_set():
                if not self.serving:
                    try:
                        targets = self.targets.get_nowait()
                    except queue.Empty:
                        pass
                    else:
                        self._open_pushes(targets, pushes)
                        dealer.send_multipart(protocol.encode("credit", {"n": self.credits}))
                        self.serving = True
                        last_sent = time.monotonic()
                elif self._send_results(dealer, pushes):
                    last_sent = time.monotonic()
                now = time.monotonic()
                if now - last_sent >= heartbeat_s:
                    dealer.send_multipart(protocol.encode("heartbeat"))
                    last_sent = now
                if now - last_heard > self.silent_after_s:
                    log.error("worker %s: controller silent for %.0f s, exiting", self.worker_id, self.silent_after_s)
                    return 3
                if not dealer.poll(poll_ms):
                    continue
                last_heard = time.monotonic()
                try:
                    msg = protocol.decode(dealer.recv_multipart(copy=False))
                except protocol.ProtocolError as e:
                    self.rejects.add(e)
                    log.warning("worker %s rejected a message (%d so far): %s", self.worker_id, self.rejects.total, e)
                    continue
                if msg.kind == "stop":
                    log.info("worker %s: stop (%s) after %d requests; rejected %d messages %s", self.worker_id,
                             msg["reason"], self.rendered, self.rejects.total, dict(self.rejects))
                    return 0
                if msg.kind == "request":
                    self.todo.put(msg)  # credits bound how many wait here
                # heartbeats, a repeated welcome, anything harmless: being heard is enough
            return 130  # the main thread left first (interrupted, or its family could not be configured)
        finally:
            for push in pushes:
                push.close()


USAGE = """usage: otfgen-worker controller=ENDPOINT [id=NAME] [credits=N] [silent_after_s=S] [keys=DIR]

Render whatever the controller at ENDPOINT asks for and push it to the trainer it names; exits
when the controller says stop (0) or falls silent (3); a family that cannot run here exits 2.

  controller=ENDPOINT  the controller's ROUTER: tcp://HOST:PORT or ipc://PATH (required)
  id=NAME              this worker's name in the controller's log (default HOST-PID)
  credits=N            requests in flight to this worker (default 2)
  silent_after_s=S     give up after the controller has been silent this long (default 30)
  keys=DIR             CurveZMQ keys directory (`otfgen keys DIR`); required beyond loopback"""


def _kv_args(argv: list[str]) -> dict[str, str]:
    if "-h" in argv or "--help" in argv:
        print(USAGE)
        raise SystemExit(0)
    out = {}
    for a in argv:
        key, sep, val = a.partition("=")
        if not sep:
            raise SystemExit(f"otfgen-worker: expected key=value, got {a!r}; keys: controller, id, credits, keys")
        out[key.lstrip("-")] = val
    unknown = set(out) - {"controller", "id", "credits", "silent_after_s", "keys"}
    if unknown:
        raise SystemExit(f"otfgen-worker: unknown keys {sorted(unknown)}; allowed: controller, id, credits, "
                         "silent_after_s, keys")
    if "controller" not in out:
        raise SystemExit("otfgen-worker: controller=tcp://HOST:PORT (or ipc://PATH) is required")
    return out


def main(argv: list[str] | None = None) -> None:
    args = _kv_args(sys.argv[1:] if argv is None else argv)
    cli.setup_logging()
    cli.exit_with(lambda: serve(args["controller"], args.get("id"), int(args.get("credits", 2)),
                                float(args.get("silent_after_s", 30)), keys=args.get("keys")),
                  (families.UnknownFamily, SpaceError, RenderSetupError, security.KeysError), log)


if __name__ == "__main__":
    main()
