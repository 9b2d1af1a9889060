"""The generated stream as a ``torch.utils.data.IterableDataset``.

A receiver thread owns the two sockets (a PULL the workers push batches to, a DEALER to the
controller), decodes and checks each batch, drops request ids it has already seen (re-issued
requests arrive twice at most; the first copy wins), and hands batches to the consuming thread
through a bounded queue, so receiving overlaps the training step. The consumer talks back
(per-sample losses, validation metrics) through an inproc PAIR socket it owns: no socket is
ever used by two threads.

Sockets are opened lazily, in the process that iterates: a DataLoader with ``num_workers=N``
(any start method) gives each worker its own sockets, registered with the controller as one
trainer rank each, so the controller sends every request to exactly one worker; each worker
takes ``samples // N`` (the controller's ``budget // N``; a remainder is not generated).

Library use::

    with Stream.local(["budget.samples=50000", "policy=uniform"]) as stream:  # starts controller + workers
        for x, y in DataLoader(stream, batch_size=None):   # x float [B,1,28,28] in [0,1], y int64 [B]
            losses = F.cross_entropy(model(x), y, reduction="none")
            stream.report(losses)            # a learning policy's feedback (num_workers=0 only)
            losses.mean().backward(); ...
    stream = Stream.connect("tcp://127.0.0.1:5555", batch_size=128, samples=100_000)

The stream is one pass: iterating it a second time raises ``StreamError``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import zmq
from torch.utils.data import IterableDataset, get_worker_info

from otfgen.blender_gen import protocol, security
from otfgen.configs import cli
from otfgen.configs.schema import ConfigError
from otfgen.trainer.models import to_input

log = logging.getLogger("otfgen.stream")
_instances = itertools.count()

FEEDBACK_NEEDS_OWN_ITERATION = (
    "stream.report() attaches losses to the batch this process last took from the stream, and this "
    "process has taken none: with DataLoader(num_workers>0) the batches come from worker processes and "
    "the policy gets no feedback; use num_workers=0 (the stream already receives in a background thread)")


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


class _Receiver:
    """One iterating process's sockets: the receiver thread (PULL, DEALER) and the consumer's PAIR.

    The thread holds this object, never the ``Stream``, so a stream nobody holds any more is
    collected, and its finaliser stops the thread and the processes ``Stream.local`` started.
    """

    def __init__(self, controller: str, bind: str, keys, advertise: str | None, rank: int, world: int,
                 queue_size: int, info: dict, rejects: protocol.RejectCounter):
        self.controller, self.bind, self.keys, self.advertise = controller, bind, keys, advertise
        self.rank, self.world = rank, world
        self.info, self.rejects = info, rejects
        self.pid = os.getpid()
        self.q: queue.Queue[_Received] = queue.Queue(maxsize=queue_size)
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.error: str | None = None  # why the thread stopped before the controller's info came
        self.duplicates = 0
        self.pull_endpoint: str | None = None
        self.ctx = zmq.Context()  # our own: a forked DataLoader worker must not share its parent's
        self.inproc = f"inproc://otfgen-stream-{next(_instances)}"
        self.pair = self.ctx.socket(zmq.PAIR)
        self.pair.setsockopt(zmq.LINGER, 1000)
        self.pair.bind(self.inproc)
        self.thread = threading.Thread(target=self._run, name="otfgen-stream", daemon=True)
        self.thread.start()

    def send(self, kind: str, fields=None, arrays=None) -> None:
        if self.pair is not None:
            self.pair.send_multipart(protocol.encode(kind, fields, arrays), copy=False)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        """Stop the thread (it flushes what the consumer sent last) and close every socket."""
        if os.getpid() != self.pid:
            return  # a forked copy: the sockets and the thread are the parent's
        self.stop_event.set()
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=5)
        if self.pair is not None:
            self.pair.close()
            self.pair = None
        if not self.thread.is_alive():
            self.ctx.term()  # every socket is closed: returns at once

    def _run(self) -> None:
        try:
            self._serve()
        except Exception as e:  # e.g. a bind that cannot work: said at once, not after data_timeout_s
            self.error = f"the stream's receiver stopped: {type(e).__name__}: {e}"
            self.ready.set()

    def _serve(self) -> None:
        ctx = self.ctx
        seen: set[int] = set()
        pending: _Received | None = None
        with ctx.socket(zmq.PULL) as pull, ctx.socket(zmq.DEALER) as dealer, ctx.socket(zmq.PAIR) as pair:
            for s in (pull, dealer):
                s.setsockopt(zmq.LINGER, 1000)
            pull.setsockopt(zmq.RCVHWM, 8)
            pull.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
            dealer.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_CONTROL_FRAME_BYTES)
            pair.connect(self.inproc)
            auth = None
            if self.keys is not None:  # workers' PUSH and our DEALER authenticate with CurveZMQ
                auth = security.start_authenticator(ctx, self.keys)
                security.make_server(pull, self.keys)
                security.make_client(dealer, self.keys)
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
            while not self.stop_event.is_set():
                if pending is not None:
                    try:
                        self.q.put_nowait(pending)
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
            self.info.update(msg.fields)
            self.ready.set()

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


class _Owned:
    """What a stream releases when closed, collected or at interpreter exit: the receiver of the
    process that iterates, and (in the process that made it) the processes ``Stream.local``
    started and the directory that marks which passes have begun."""

    def __init__(self, passes_dir: str | None = None):
        self.pid = os.getpid()
        self.rx: _Receiver | None = None
        self.services: subprocess.Popen | None = None  # Stream.local's ``otfgen serve``
        self.passes_dir = passes_dir

    def release(self) -> None:
        if self.rx is not None:
            self.rx.stop()
            self.rx = None
        if os.getpid() != self.pid:
            return  # a forked DataLoader worker's copy: the processes and markers are its parent's
        if self.services is not None:
            _stop(self.services)
            self.services = None
        if self.passes_dir is not None:
            shutil.rmtree(self.passes_dir, ignore_errors=True)
            self.passes_dir = None


class Stream(IterableDataset):
    def __init__(self, controller: str, batch_size: int = 128, samples: int | None = None,
                 bind: str = "tcp://127.0.0.1", queue_size: int = 8, data_timeout_s: float = 60.0,
                 on_request=None, keys: str | None = None, advertise: str | None = None,
                 rank: int = 0, world: int = 1):
        super().__init__()
        self.controller, self.batch_size, self.samples = controller, batch_size, samples
        self.bind, self.data_timeout_s, self.queue_size = bind, data_timeout_s, queue_size
        self.advertise = advertise  # the host workers use to reach the PULL socket
        self.rank, self.world = rank, world  # data-parallel trainers: each rank registers its own PULL
        # checked here, in the caller's thread: a bad key or a public bind without keys fails loudly
        self._keys = security.for_endpoint(keys, "trainer.bind", bind, server=True)
        if self._keys is None and not security.is_private(controller):
            raise security.KeysError(f"controller {controller} is not on this machine: CurveZMQ keys are required "
                                     "(controller.keys=DIR)")
        # called with (request_id, n, digest, worker) on each new request, in the iterating process
        self.on_request = on_request
        self.info: dict[str, Any] = {}  # the controller's info: family, num_classes, image_shape, signal
        self.rejects = protocol.RejectCounter()
        self.consumed = 0
        self.wait_s = 0.0
        self._cur: tuple[int, np.ndarray] | None = None  # (id, losses and signal [2, n]) of the request consumed
        self._loss_seen = 0
        self._has_signal = False
        self._last: Batch | None = None  # the batch __iter__ yielded last: what report() is about
        self._fed = self._unfed = 0
        self._warned_signal = False
        # one marker file per (rank, world) whose pass has begun, shared by DataLoader workers
        self._passes = tempfile.mkdtemp(prefix="otfgen-stream-")
        self._owned = _Owned(self._passes)
        self._finalizer = weakref.finalize(self, self._owned.release)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def connect(cls, controller: str, **kwargs) -> "Stream":
        return cls(controller, **kwargs)

    @classmethod
    def local(cls, overrides: list[str] | None = None, echo_logs: bool = True, **kwargs) -> "Stream":
        """Start a controller and workers on this machine (Hydra overrides as for ``otfgen``), through
        ``otfgen serve`` in a process of its own: the trainer never imports the controller. They stop
        with ``close()`` (or the ``with`` block), when the stream is garbage-collected, at
        interpreter exit, or when this process dies (the service sees its standard input close).

        ``stream.run_dir`` is the run directory (``run_dir=`` among the overrides, else
        ``outputs/<date>/<time>-stream`` under the working directory). Their log lines are always in
        ``<run_dir>/<name>.log`` (launcher, controller, worker-N); ``echo_logs=False`` keeps them
        out of this process's stderr (a start-up error is still raised with its message)."""
        services = subprocess.Popen([sys.executable, "-m", "otfgen.controller.main", "serve", *(overrides or [])],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        log_copy = _ChildLog(services.stderr, echo_logs)
        line = services.stdout.readline()
        if not line:
            code = services.wait()
            log_copy.thread.join(5)  # its last lines: the child has exited, so the pipe ends
            why = log_copy.last_error or f"exit code {code}"
            raise (ConfigError if code == cli.CANNOT_RUN else StreamError)(
                f"the controller and workers did not start: {why}")
        ready = json.loads(line)
        kwargs.setdefault("batch_size", ready["batch_size"])
        kwargs.setdefault("samples", ready["samples"])
        try:
            s = cls(ready["controller"], **kwargs)
        except BaseException:
            _stop(services)
            raise
        s._owned.services = services
        s.run_dir = Path(ready["run_dir"])
        return s

    # -- pickling (DataLoader workers under spawn or forkserver) --------------------------------
    def __getstate__(self) -> dict:
        if self._owned.rx is not None:
            raise StreamError("the stream is already connected in this process (start(), or an iteration), so it "
                              "cannot also be iterated by DataLoader workers: pass it to the DataLoader unstarted")
        if self._passes is not None and os.path.isdir(self._passes) and os.listdir(self._passes):
            raise StreamError(self._second_pass())  # here, before a worker starts (spawn, forkserver)
        state = dict(self.__dict__)
        for k in ("_owned", "_finalizer", "_last", "_cur"):
            state[k] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._owned = _Owned()  # releases only this process's receiver
        self._finalizer = weakref.finalize(self, self._owned.release)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "Stream":
        """Connect in this process: register with the controller and wait for its info. Iterating
        does this by itself; call it to read ``info`` before the first batch (not with DataLoader
        workers, which connect on their own)."""
        return self._start(self.rank, self.world)

    def _start(self, rank: int, world: int) -> "Stream":
        rx = self._owned.rx
        if rx is not None and rx.pid == os.getpid():
            return self
        rx = _Receiver(self.controller, self.bind, self._keys, self.advertise, rank, world, self.queue_size,
                       self.info, self.rejects)
        self._owned.rx = rx
        if not rx.ready.wait(self.data_timeout_s):
            self._stop_receiver(finished=False)
            raise StreamError(f"no answer from controller {self.controller} within {self.data_timeout_s:.0f} s")
        if rx.error:
            self._stop_receiver(finished=False)
            raise StreamError(rx.error)
        return self

    @property
    def pull_endpoint(self) -> str | None:
        return self._owned.rx.pull_endpoint if self._owned.rx is not None else None

    @property
    def duplicates(self) -> int:
        return self._owned.rx.duplicates if self._owned.rx is not None else self._dups_final

    _dups_final = 0

    def _stop_receiver(self, finished: bool) -> None:
        rx = self._owned.rx
        if rx is None or rx.pid != os.getpid():
            return
        if finished and rx.alive():
            rx.send("finished", {"samples": self.consumed})
        self._dups_final = rx.duplicates
        rx.stop()
        self._owned.rx = None

    def close(self, finished: bool = True) -> None:
        """Say "finished" to the controller (if this process is connected), close the sockets,
        stop the processes ``Stream.local`` started."""
        self._stop_receiver(finished)
        self._finalizer()

    def __enter__(self) -> "Stream":
        return self  # sockets open in the process that iterates: maybe a DataLoader worker

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the consumer side ------------------------------------------------------------------------
    def _send_back(self, kind: str, fields=None, arrays=None) -> None:
        rx = self._owned.rx
        if rx is not None:
            rx.send(kind, fields, arrays)

    def _claim_pass(self, rank: int, world: int) -> None:
        if self._passes is None or not os.path.isdir(self._passes):
            raise StreamError("the stream is closed")
        mine = f"{rank}-of-{world}"
        others = [m for m in os.listdir(self._passes) if not m.endswith(f"-of-{world}")]
        try:
            if others:
                raise FileExistsError
            os.close(os.open(os.path.join(self._passes, mine), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            raise StreamError(self._second_pass()) from None

    def _second_pass(self) -> str:
        return ("this stream has already been iterated: a generated stream is one pass of "
                f"samples={self.samples} (its controller stops when they are delivered); "
                "make a new Stream, or a larger budget, for more")

    def iter_batches(self) -> Iterator[Batch]:
        """Minibatches of at most ``batch_size``, cut from requests in arrival order. A request is
        reported delivered — with the losses ``report`` gave for it — once the consumer asks for
        the batch after its last one. In a DataLoader worker, this worker's share of the stream."""
        rank, world, samples = self.rank, self.world, self.samples
        wi = get_worker_info()
        if wi is not None and wi.num_workers > 1:
            rank, world = self.rank * wi.num_workers + wi.id, self.world * wi.num_workers
            samples = None if samples is None else samples // wi.num_workers
        if self._owned.rx is not None and self._owned.rx.pid != os.getpid():
            raise StreamError("the stream was connected before the DataLoader forked its workers: pass it to the "
                              "DataLoader unstarted (do not call start() or iterate it first)")
        self._claim_pass(rank, world)
        self._start(rank, world)
        try:
            while samples is None or self.consumed < samples:
                t0 = time.perf_counter()
                rec = self._next()
                self.wait_s += time.perf_counter() - t0
                msg = rec.msg
                rid, n = msg["id"], len(msg.arrays["labels"])
                if self.on_request is not None:
                    self.on_request(rid, n, rec.digest, msg["worker"])
                self._cur, self._loss_seen, self._has_signal = (rid, np.zeros((2, n), dtype=np.float32)), 0, False
                for off in range(0, n, self.batch_size):
                    if samples is not None and self.consumed >= samples:
                        break
                    sl = slice(off, min(n, off + self.batch_size))
                    self.consumed += sl.stop - sl.start
                    yield Batch(rid, off, msg.arrays["images"][sl], msg.arrays["labels"][sl], msg["worker"], n)
                self._deliver(rid, n)
        finally:
            self._cur = None
        self._finish_pass()

    def _finish_pass(self) -> None:
        if self._unfed and not self._fed and self.info.get("signal", "none") == "none":
            log.info("stream: no losses were reported for %d requests: a policy that learns from them draws "
                     "uniformly without them (stream.report(per_sample_losses) after each batch)", self._unfed)
        self._stop_receiver(finished=True)

    def _deliver(self, rid: int, n: int) -> None:
        arrays = {}
        if self._loss_seen >= n:  # every sample's loss was reported: the policy's feedback
            arrays["losses"] = self._cur[1][0]
            if self._has_signal:
                arrays["signal"] = self._cur[1][1]
            elif self.info.get("signal", "none") != "none" and not self._warned_signal:
                self._warned_signal = True
                log.warning("stream: the controller's policy learns from '%s' (measured per sample against real "
                            "images): report(losses, signal=...) must pass it, or the policy learns nothing",
                            self.info["signal"])
            self._fed += 1
        else:
            self._unfed += 1
        self._send_back("delivered", {"id": rid, "samples": n}, arrays)
        self._cur = None

    def _next(self) -> _Received:
        rx = self._owned.rx
        deadline = time.monotonic() + self.data_timeout_s
        while True:
            try:
                return rx.q.get(timeout=0.1)
            except queue.Empty:
                if not rx.alive():
                    raise StreamError(rx.error or "the stream's receiver thread has stopped") from None
                if time.monotonic() > deadline:
                    raise StreamError(f"no data for {self.data_timeout_s:.0f} s (are workers running? "
                                      f"controller {self.controller})") from None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in self.iter_batches():
            self._last = b
            yield to_input(torch.from_numpy(b.images.copy())), torch.from_numpy(b.labels.copy())
        self._last = None

    def report(self, losses, signal=None) -> None:
        """Feed the controller's policy from your own loop: the per-sample losses (``[B]``, e.g.
        ``F.cross_entropy(logits, y, reduction="none")``; detached for you) of the batch the stream
        last yielded. They reach the controller with that request's delivery, once every sample of
        the request was reported; a request without them teaches the policy nothing.

        ``signal``: what ``info["signal"]`` names, per sample, for ``rho`` (``reducible_loss``) and
        the installed ``match`` (``feature_distance``), ``align`` (``grad_alignment``) and
        ``realism`` (``realism``: it reads the model inputs, not the model);
        ``otfgen.trainer.judges.RealSignal`` computes it for the built-in models. The installed
        ``bandit`` and ``ppo`` need only the losses.
        """
        if self._last is None:
            raise StreamError("stream.report(): the stream's pass has ended, no batch to attach losses to"
                              if self.consumed else FEEDBACK_NEEDS_OWN_ITERATION)
        self.report_losses(self._last, _numpy(losses), None if signal is None else _numpy(signal))

    def report_losses(self, batch: Batch, losses: np.ndarray, signal: np.ndarray | None = None) -> None:
        """Per-sample training losses (and the signal ``info["signal"]`` asks for) of ``batch``,
        a minibatch of the request being consumed."""
        if len(losses) != len(batch.labels) or (signal is not None and len(signal) != len(batch.labels)):
            raise StreamError(f"report: {len(losses)} losses for a batch of {len(batch.labels)} samples "
                              "(per-sample losses: reduction='none')")
        if self._cur is None or self._cur[0] != batch.request_id:
            return  # not the request being consumed (reported late): nothing to attach it to
        sl = slice(batch.offset, batch.offset + len(losses))
        self._cur[1][0, sl] = losses
        if signal is not None:
            self._cur[1][1, sl] = signal
            self._has_signal = True
        self._loss_seen += len(losses)

    def report_metrics(self, metrics: dict[str, Any]) -> None:
        self._send_back("metrics", {"metrics": metrics})


class _ChildLog:
    """A child's stderr, read from a daemon thread and copied to ours when ``echo`` (read either way,
    so the child never blocks on a full pipe). ``last_error`` is the message of its last ERROR line:
    why it stopped, for the exception if it fails to start."""

    def __init__(self, pipe, echo: bool = True):
        self.pipe, self.echo, self.last_error = pipe, echo, ""
        self.thread = threading.Thread(target=self._copy, name="otfgen-serve-log", daemon=True)
        self.thread.start()

    def _copy(self) -> None:
        for text in self.pipe:
            if self.echo:
                sys.stderr.write(text)
            if " ERROR " in text:
                self.last_error = text.split(" ERROR ", 1)[1].strip()


def _stop(services: subprocess.Popen, timeout: float = 30.0) -> None:
    """Close ``otfgen serve``'s standard input (it stops its controller and workers and exits); kill
    it if it has not within ``timeout``."""
    try:
        services.stdin.close()
    except OSError:
        pass
    try:
        services.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        services.kill()
        services.wait()


def _numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32).reshape(-1)


def _advertised(endpoint: str, host: str | None) -> str:
    """The PULL endpoint as other machines must dial it: a wildcard bind gets a real host name."""
    if not endpoint.startswith("tcp://"):
        return endpoint
    bound_host, _, port = endpoint[len("tcp://"):].rpartition(":")
    if host is None and bound_host in ("0.0.0.0", "*", "[::]", "::"):
        import socket

        host = socket.getfqdn()
    return f"tcp://{host}:{port}" if host else endpoint
