"""A worker: a long-lived process that renders whatever requests the controller sends it.

It connects a DEALER to the controller's ROUTER, says hello, learns the scene family and its
parameter space from the welcome, grants credits, and then loops: receive a request → check
its parameters → render the batch → PUSH it to the trainer (arrays zero-copy) → tell the
controller it is done (which returns the credit). One loop owns both sockets (STYLE 8).

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

from blender_gen import families, protocol, security
from blender_gen.space import ParamSpace, SpaceError

log = logging.getLogger("otfgen.worker")


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
    controller is not on this machine."""
    worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    ctx = context or zmq.Context.instance()
    rejects = protocol.RejectCounter()
    curve = security.for_endpoint(keys, "controller", controller, server=False)
    with ctx.socket(zmq.DEALER) as dealer:
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_CONTROL_FRAME_BYTES)
        if curve is not None:
            security.make_client(dealer, curve)
        dealer.setsockopt_string(zmq.IDENTITY, worker_id)
        dealer.connect(controller)
        dealer.send_multipart(protocol.encode("hello", {"worker": worker_id, "pid": os.getpid()}))
        welcome = _await_welcome(dealer, rejects, silent_after_s)
        if welcome is None:
            log.error("worker %s: no welcome from controller %s within %.0f s", worker_id, controller, silent_after_s)
            return 3
        family = families.load(welcome["family"])
        _configure(family, dict(welcome["render"]))
        renderer = Renderer(family, ParamSpace.from_mapping(welcome["space"]))
        heartbeat_s = float(welcome["heartbeat_s"])
        targets = welcome.fields.get("push_all") or [welcome["push"]]  # one PULL per trainer rank
        if not (isinstance(targets, list) and 0 < len(targets) <= 1024 and all(isinstance(t, str) for t in targets)):
            log.error("worker %s: malformed push_all in the welcome", worker_id)
            return 3
        log.info("worker %s: family %s, pushing to %s", worker_id, welcome["family"], ", ".join(targets))
        pushes = []
        try:
            for target in targets:
                push = ctx.socket(zmq.PUSH)
                pushes.append(push)
                push.setsockopt(zmq.LINGER, 2000)  # let the last batch leave on a clean stop
                push.setsockopt(zmq.SNDHWM, 4)
                if curve is not None:
                    security.make_client(push, curve)
                push.connect(target)
            dealer.send_multipart(protocol.encode("credit", {"n": credits}))
            return _loop(worker_id, dealer, pushes, renderer, heartbeat_s, silent_after_s, rejects)
        finally:
            for push in pushes:
                push.close()


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
                   beat_s: float = 0.5):
    """Wait for the welcome (sent once a trainer has joined, however long that takes) while
    heartbeating, so the controller keeps this worker; give up only when the controller itself
    has been silent for ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_beat = time.monotonic()
    while time.monotonic() < deadline:
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


def _loop(worker_id, dealer, pushes, renderer, heartbeat_s, silent_after_s, rejects) -> int:
    """Render on this (the main) thread — Blender wants it — while an I/O thread owns both sockets,
    so heartbeats keep flowing through a render of any length (a long Cycles frame must not
    look like a dead worker to the controller)."""
    todo: queue.Queue = queue.Queue()  # decoded requests, or None: stop rendering
    io = _IO(worker_id, dealer, pushes, heartbeat_s, silent_after_s, rejects, todo)
    thread = threading.Thread(target=io.run, name=f"{worker_id}-io", daemon=True)
    thread.start()
    try:
        _render_requests(worker_id, renderer, todo, io, len(pushes))
    finally:  # also on Ctrl-C: the sockets are closed only after the I/O thread has let go of them
        io.stop.set()
        thread.join(timeout=5)
    return io.code


def _render_requests(worker_id, renderer, todo: queue.Queue, io: "_IO", n_ranks: int) -> None:
    while True:
        msg = todo.get()
        if msg is None:
            return
        rid = msg["id"]
        t0 = time.perf_counter()
        try:
            seeds = msg.arrays["seeds"]
            if seeds.dtype != np.uint64 or seeds.shape != (msg["n"],):
                raise SpaceError(f"seeds must be uint64 [{msg['n']}], got {seeds.dtype}{seeds.shape}")
            rank = msg.fields.get("rank", 0)
            if not (isinstance(rank, int) and 0 <= rank < n_ranks):
                raise SpaceError(f"rank {rank!r} is not one of the {n_ranks} trainer ranks")
            params = protocol.params_of(msg)
            images, labels = renderer.render(params, seeds)
        except (SpaceError, RuntimeError, ValueError) as e:
            log.warning("worker %s: request %d failed: %s", worker_id, rid, e)
            io.results.put((rid, None, str(e)[:500]))
            continue
        ms = (time.perf_counter() - t0) * 1000
        pfields, parrays = protocol.pack_params(params)
        io.results.put((rid, (rank, msg["family"], ms, pfields, {"images": images, "labels": labels, "seeds": seeds,
                                                                  **parrays}), None))


class _IO:
    """The worker's socket loop: heartbeats, requests in, finished batches out."""

    def __init__(self, worker_id, dealer, pushes, heartbeat_s, silent_after_s, rejects, todo):
        self.worker_id, self.dealer, self.pushes = worker_id, dealer, pushes
        self.heartbeat_s, self.silent_after_s, self.rejects, self.todo = heartbeat_s, silent_after_s, rejects, todo
        self.results: queue.Queue = queue.Queue()
        self.stop = threading.Event()  # set by the render thread when it is leaving (e.g. Ctrl-C)
        self.code = 130
        self.rendered = 0

    def run(self) -> None:
        try:
            self.code = self._run()
        finally:
            while True:  # what was queued is not rendered after a stop
                try:
                    self.todo.get_nowait()
                except queue.Empty:
                    break
            self.todo.put(None)

    def _send_results(self) -> bool:
        sent = False
        while True:
            try:
                rid, ok, error = self.results.get_nowait()
            except queue.Empty:
                return sent
            if ok is None:
                self.dealer.send_multipart(protocol.encode("failed", {"id": rid, "error": error}))
            else:
                rank, family, ms, pfields, arrays = ok
                self.pushes[rank].send_multipart(protocol.encode("batch", {"id": rid, "worker": self.worker_id, "family": family,
                                                                   "ms": ms, **pfields}, arrays), copy=False)
                self.dealer.send_multipart(protocol.encode("done", {"id": rid, "ms": ms}))
                self.rendered += 1
            sent = True

    def _run(self) -> int:
        last_heard = last_sent = time.monotonic()
        poll_ms = max(5, min(50, int(self.heartbeat_s * 1000)))
        while not self.stop.is_set():
            if self._send_results():
                last_sent = time.monotonic()
            now = time.monotonic()
            if now - last_sent >= self.heartbeat_s:
                self.dealer.send_multipart(protocol.encode("heartbeat"))
                last_sent = now
            if now - last_heard > self.silent_after_s:
                log.error("worker %s: controller silent for %.0f s, exiting", self.worker_id, self.silent_after_s)
                return 3
            if not self.dealer.poll(poll_ms):
                continue
            last_heard = time.monotonic()
            try:
                msg = protocol.decode(self.dealer.recv_multipart(copy=False))
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
            # heartbeats and anything harmless: being heard is enough
        return 130  # the render thread left first (interrupted)


def _kv_args(argv: list[str]) -> dict[str, str]:
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        code = serve(args["controller"], args.get("id"), int(args.get("credits", 2)),
                     float(args.get("silent_after_s", 30)), keys=args.get("keys"))
    except (families.UnknownFamily, SpaceError, RenderSetupError, security.KeysError) as e:
        log.error("%s", e)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
