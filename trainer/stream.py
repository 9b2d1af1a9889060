"""The generated stream as a ``torch.utils.data.IterableDataset``.

A receiver thread owns the two sockets (a PULL the workers push batches to, a DEALER to the
controller), decodes and checks each batch, drops request ids it has already seen (re-issued
requests arrive twice at most; the first copy wins), acknowledges delivery to the controller at
once, and hands batches to the consuming thread through a bounded queue, so receiving overlaps
the training step. The consumer talks back (per-sample losses, validation metrics) through an
inproc PAIR socket it owns: no socket is ever used by two threads.

Library use::

    stream = Stream.connect("tcp://127.0.0.1:5555", batch_size=128, samples=100_000)
    for x, y in DataLoader(stream, batch_size=None):   # x float [B,1,28,28] in [0,1], y int64 [B]
        ...
    # or let it start a controller and workers itself:
    with Stream.local(["budget.samples=50000", "launcher.workers=2"]) as stream: ...
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
import zmq
from torch.utils.data import IterableDataset, get_worker_info

from blender_gen import protocol, security
from trainer.models import to_input

log = logging.getLogger("otfgen.stream")
_instances = itertools.count()


class StreamError(RuntimeError):
    pass


@dataclass
class Batch:
    """A slice of one request's samples, as it came off the wire."""

    request_id: int
    offset: int
    images: np.ndarray  # uint8 [b,H,W] or [b,H,W,C]
    labels: np.ndarray  # int64 [b]
    worker: str
    request_size: int


@dataclass
class _Received:
    msg: protocol.Message
    digest: str
    received_at: float = field(default_factory=time.monotonic)


class Stream(IterableDataset):
    def __init__(self, controller: str, batch_size: int = 128, samples: int | None = None,
                 bind: str = "tcp://127.0.0.1", queue_size: int = 8, data_timeout_s: float = 60.0,
                 on_request=None, keys: str | None = None, advertise: str | None = None,
                 rank: int = 0, world: int = 1):
        super().__init__()
        self.controller, self.batch_size, self.samples = controller, batch_size, samples
        self.bind, self.data_timeout_s = bind, data_timeout_s
        self.advertise = advertise  # the host workers use to reach the PULL socket
        self.rank, self.world = rank, world  # data-parallel trainers: each rank registers its own PULL
        # checked here, in the caller's thread: a bad key or a public bind without keys fails loudly
        self._keys = security.for_endpoint(keys, "trainer.bind", bind, server=True)
        if self._keys is None and not security.is_private(controller):
            raise security.KeysError(f"controller {controller} is not on this machine: CurveZMQ keys are required "
                                     "(controller.keys=DIR)")
        self.on_request = on_request  # called with (request_id, n, digest, worker) on each new request
        self._q: queue.Queue[_Received] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._pair: zmq.Socket | None = None
        self._inproc = f"inproc://otfgen-stream-{next(_instances)}"
        self._losses: np.ndarray | None = None  # [2, n] of the request being consumed
        self._loss_seen = 0
        self._has_signal = False
        self.info: dict[str, Any] = {}  # the controller's info: family, num_classes, image_shape, signal
        self.pull_endpoint: str | None = None
        self.rejects = protocol.RejectCounter()
        self.duplicates = 0
        self.consumed = 0
        self.wait_s = 0.0
        self._error: str | None = None
        self._launcher = None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def connect(cls, controller: str, **kwargs) -> "Stream":
        return cls(controller, **kwargs)

    @classmethod
    def local(cls, overrides: list[str] | None = None, **kwargs) -> "Stream":
        """Start a controller and workers on this machine (Hydra overrides as for ``otfgen``)."""
        from controller.config import compose, default_run_dir, with_run_dir
        from controller.launcher import LocalCluster

        cfg = compose(list(overrides or []))
        cfg = with_run_dir(cfg, cfg.run_dir or default_run_dir("stream"))
        cluster = LocalCluster(cfg)
        endpoint = cluster.start_controller_and_workers()
        kwargs.setdefault("batch_size", cfg.trainer.batch_size)
        kwargs.setdefault("samples", cfg.budget.samples)
        s = cls(endpoint, **kwargs)
        s._launcher = cluster
        return s

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "Stream":
        if self._thread is not None:
            return self
        ctx = zmq.Context.instance()
        self._pair = ctx.socket(zmq.PAIR)
        self._pair.setsockopt(zmq.LINGER, 1000)
        self._pair.bind(self._inproc)
        self._thread = threading.Thread(target=self._run, name="otfgen-stream", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.data_timeout_s):
            self.close()
            raise StreamError(f"no answer from controller {self.controller} within {self.data_timeout_s:.0f} s")
        if self._error:
            raise StreamError(self._error)
        return self

    def close(self, finished: bool = True) -> None:
        if self._pair is not None and finished and self._thread is not None and self._thread.is_alive():
            self._send_back("finished", {"samples": self.consumed})
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._pair is not None:
            self._pair.close()
            self._pair = None
        if self._launcher is not None:
            self._launcher.stop()
            self._launcher = None

    def __enter__(self) -> "Stream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the receiver thread (owns the PULL and the DEALER) -------------------------------------
    def _run(self) -> None:
        ctx = zmq.Context.instance()
        seen: set[int] = set()
        pending: _Received | None = None
        with ctx.socket(zmq.PULL) as pull, ctx.socket(zmq.DEALER) as dealer, ctx.socket(zmq.PAIR) as pair:
            for s in (pull, dealer):
                s.setsockopt(zmq.LINGER, 1000)
            pull.setsockopt(zmq.RCVHWM, 8)
            pull.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
            dealer.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_CONTROL_FRAME_BYTES)
            pair.connect(self._inproc)
            auth = None
            if self._keys is not None:  # workers' PUSH and our DEALER authenticate with CurveZMQ
                auth = security.start_authenticator(ctx, self._keys)
                security.make_server(pull, self._keys)
                security.make_client(dealer, self._keys)
            if self.bind.startswith("tcp://") and self.bind.count(":") == 1:
                port = pull.bind_to_random_port(self.bind)
                self.pull_endpoint = f"{self.bind}:{port}"
            else:
                pull.bind(self.bind)
                self.pull_endpoint = pull.getsockopt_string(zmq.LAST_ENDPOINT)
            self.pull_endpoint = _advertised(self.pull_endpoint, self.advertise)
            dealer.connect(self.controller)
            dealer.send_multipart(protocol.encode("trainer", {"pull": self.pull_endpoint, "rank": self.rank,
                                                              "world": self.world}))
            poller = zmq.Poller()
            poller.register(dealer, zmq.POLLIN)
            poller.register(pair, zmq.POLLIN)
            pull_registered = False
            while not self._stop.is_set():
                if pending is not None:
                    try:
                        self._q.put_nowait(pending)
                        pending = None
                    except queue.Full:
                        pass
                want_pull = pending is None
                if want_pull != pull_registered:  # back-pressure: stop reading while the queue is full
                    (poller.register(pull, zmq.POLLIN) if want_pull else poller.unregister(pull))
                    pull_registered = want_pull
                events = dict(poller.poll(20))
                if pair in events:
                    while pair.poll(0):
                        dealer.send_multipart(pair.recv_multipart(copy=False), copy=False)
                if dealer in events:
                    self._on_controller(dealer)
                if pull_registered and pull in events:
                    pending = self._on_batch(pull.recv_multipart(copy=False), seen)
            while pair.poll(100):  # flush what the consumer said last (e.g. "finished")
                dealer.send_multipart(pair.recv_multipart(copy=False), copy=False)
            if auth is not None:
                auth.stop()

    def _on_controller(self, dealer: zmq.Socket) -> None:
        try:
            msg = protocol.decode(dealer.recv_multipart(copy=False))
        except protocol.ProtocolError as e:
            self.rejects.add(e)
            return
        if msg.kind == "info":
            self.info = dict(msg.fields)
            self._ready.set()

    def _on_batch(self, frames, seen: set[int]) -> _Received | None:
        try:
            msg = protocol.decode(frames)  # checks every field and array of a batch
            if msg.kind != "batch":
                raise protocol.ProtocolError("kind", f"expected batch, got {msg.kind}")
        except protocol.ProtocolError as e:
            self.rejects.add(e)
            if self.rejects.total <= 10:
                log.warning("stream rejected a message (%d so far): %s", self.rejects.total, e)
            return None
        rid = msg["id"]
        if rid in seen:
            self.duplicates += 1  # a re-issued request whose first copy arrived after all
            return None
        seen.add(rid)
        h = hashlib.blake2b(msg.arrays["images"].data, digest_size=16)
        h.update(msg.arrays["labels"].data)
        return _Received(msg, h.hexdigest())

    # -- the consumer side ------------------------------------------------------------------------
    def _send_back(self, kind: str, fields=None, arrays=None) -> None:
        if self._pair is not None:
            self._pair.send_multipart(protocol.encode(kind, fields, arrays), copy=False)

    def iter_batches(self) -> Iterator[Batch]:
        """Minibatches of at most ``batch_size``, cut from requests in arrival order. A request is
        reported delivered — with the losses ``report_losses`` gave for it — once the consumer
        asks for the batch after its last one."""
        if get_worker_info() is not None:
            raise StreamError("use the stream with DataLoader(num_workers=0): it owns sockets and a thread")
        self.start()
        while self.samples is None or self.consumed < self.samples:
            t0 = time.perf_counter()
            rec = self._next()
            self.wait_s += time.perf_counter() - t0
            msg = rec.msg
            rid, n = msg["id"], len(msg.arrays["labels"])
            if self.on_request is not None:
                self.on_request(rid, n, rec.digest, msg["worker"])
            self._losses, self._loss_seen, self._has_signal = np.zeros((2, n), dtype=np.float32), 0, False
            for off in range(0, n, self.batch_size):
                if self.samples is not None and self.consumed >= self.samples:
                    break
                sl = slice(off, min(n, off + self.batch_size))
                self.consumed += sl.stop - sl.start
                yield Batch(rid, off, msg.arrays["images"][sl], msg.arrays["labels"][sl], msg["worker"], n)
            self._deliver(rid, n)

    def _deliver(self, rid: int, n: int) -> None:
        arrays = {}
        if self._loss_seen >= n:  # every sample's loss was reported: the policy's feedback
            arrays["losses"] = self._losses[0]
            if self._has_signal:
                arrays["signal"] = self._losses[1]
        self._send_back("delivered", {"id": rid, "samples": n}, arrays)
        self._losses = None

    def _next(self) -> _Received:
        deadline = time.monotonic() + self.data_timeout_s
        while True:
            try:
                return self._q.get(timeout=0.1)
            except queue.Empty:
                if self._thread is None or not self._thread.is_alive():
                    raise StreamError("the stream's receiver thread has stopped") from None
                if time.monotonic() > deadline:
                    raise StreamError(f"no data for {self.data_timeout_s:.0f} s (are workers running? "
                                      f"controller {self.controller})") from None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in self.iter_batches():
            yield to_input(torch.from_numpy(b.images.copy())), torch.from_numpy(b.labels.copy())

    def report_losses(self, batch: Batch, losses: np.ndarray, signal: np.ndarray | None = None) -> None:
        """Per-sample training losses (and feature distances to the real reward split, when
        ``info["signal"]`` asks for them) of the minibatch just trained on; they reach the
        controller with the request's delivery."""
        if self._losses is None or self._losses.shape[1] != batch.request_size:
            return  # not the request being consumed (reported late): nothing to attach it to
        sl = slice(batch.offset, batch.offset + len(losses))
        self._losses[0, sl] = losses
        if signal is not None:
            self._losses[1, sl] = signal
            self._has_signal = True
        self._loss_seen += len(losses)

    def report_metrics(self, metrics: dict[str, Any]) -> None:
        self._send_back("metrics", {"metrics": metrics})


def _advertised(endpoint: str, host: str | None) -> str:
    """The PULL endpoint as other machines must dial it: a wildcard bind gets a real host name."""
    if not endpoint.startswith("tcp://"):
        return endpoint
    bound_host, _, port = endpoint[len("tcp://"):].rpartition(":")
    if host is None and bound_host in ("0.0.0.0", "*", "[::]", "::"):
        import socket

        host = socket.getfqdn()
    return f"tcp://{host}:{port}" if host else endpoint

