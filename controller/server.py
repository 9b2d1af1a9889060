"""The controller process: sockets, credits, re-issue, feedback, the parameter log.

Topology (DESIGN.md): the controller binds one ROUTER. Workers connect DEALERs, say hello, and
grant credits; each credit lets the controller send one request. The trainer connects a DEALER
too, registers the address of its PULL socket (which the workers' welcome carries), and reports
each delivered request with its per-sample losses and each validation. A request stays *open*
until the trainer reports it delivered; if its worker misses heartbeats, or it was rendered
but never arrived, it is issued again with the same id, params and seeds — the trainer drops ids
it has seen, so at-least-once delivery plus de-duplication gives exactly-once.

    otfgen-controller [hydra overrides]   # binds, writes <run_dir>/endpoints.json, serves
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import zmq

from otfgen.blender_gen import families, protocol, rng, security
from otfgen.controller import config as config_mod
from otfgen.controller import policies
from otfgen.configs import cli
from otfgen.configs.schema import ConfigError, RunConfig
from otfgen.controller.ledger import Ledger, Request, WorkerState
from otfgen.controller.paramlog import ParamLog

log = logging.getLogger("otfgen.controller")


class Controller:
    """The controller's sockets and policy; what is open, owed and re-issued is its ``Ledger``'s."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.space = families.scene_space(cfg)
        self.family = families.load(cfg.scene.name)
        options = {"num_classes": self.family.NUM_CLASSES, "label_param": self.family.LABEL_PARAM,
                   "budget_requests": -(-cfg.budget.samples // cfg.controller.request_size),
                   **cfg.policy.options_dict()}
        self.policy = policies.make(cfg.policy.name, self.space, cfg.policy.bins, options, cfg.seed)
        cc = cfg.controller
        self.ledger = Ledger(cfg.budget.samples, cc.request_size, max_open=cc.max_open, credits=cc.credits)
        self.trainer: bytes | None = None  # rank 0 (or the only trainer)
        self.trainer_pull: str | None = None  # set once every rank has registered
        self.trainer_seen = 0.0
        # data-parallel training: one trainer per rank, each fed a disjoint share of the budget
        self.ranks: dict[int, tuple[bytes, str]] = {}  # rank -> (identity, PULL endpoint)
        self.finished_ranks: set[int] = set()
        self.rejects = protocol.RejectCounter()
        self.finished = False
        self.fed = 0  # delivered requests that came with per-sample losses: the policy's feedback

    @property
    def workers(self) -> dict[bytes, WorkerState]:
        return self.ledger.workers

    # -- the loop --------------------------------------------------------------------------------
    def serve(self, bind: str | None = None, ready_file: Path | None = None, idle_timeout_s: float = 600.0) -> int:
        cfg = self.cfg
        ctx = zmq.Context.instance()
        plog = ParamLog(self.run_dir / "params.jsonl", {
            "family": cfg.scene.name, "space": self.space.to_mapping(), "run_seed": cfg.seed,
            "request_size": cfg.controller.request_size, "policy": cfg.policy.name,
            "render": dict(cfg.scene.render), "code": families.code_digest()})
        metrics = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        with ctx.socket(zmq.ROUTER) as router:
            router.setsockopt(zmq.LINGER, 0)
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a vanished peer raises, never blocks
            router.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted worker may reuse its id at once
            router.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_CONTROL_FRAME_BYTES)
            self.auth = None
            try:
                keys = security.for_endpoint(cfg.controller.keys, "controller.bind", bind or cfg.controller.bind, True)
            except security.KeysError as e:
                raise ConfigError(str(e)) from None
            if keys is not None:
                self.auth = security.start_authenticator(ctx, keys)
                security.make_server(router, keys)
            endpoint = _bind(router, bind or cfg.controller.bind)
            log.info("controller: %s policy on %s, family %s", cfg.policy.name, endpoint, cfg.scene.name)
            if ready_file:
                tmp = ready_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"controller": endpoint, "pid": os.getpid()}))
                tmp.replace(ready_file)  # atomic: the launcher never reads half a file
            self.router, self.plog = router, plog
            last_report = last_beat = time.monotonic()
            started = time.monotonic()
            try:
                while not self.finished:
                    if router.poll(int(cfg.controller.heartbeat_s * 1000 / 2)):
                        self._receive(router.recv_multipart(copy=False))
                        while router.poll(0):  # drain what is there before deciding anything
                            self._receive(router.recv_multipart(copy=False))
                    now = time.monotonic()
                    self._check_liveness(now)
                    self._dispatch(now)
                    if now - last_beat >= cfg.controller.heartbeat_s:
                        for ident in list(self.workers):  # welcomed or still waiting for a trainer
                            self._send(ident, "heartbeat")
                        last_beat = now
                    if now - last_report >= 5.0:
                        metrics.write(json.dumps(self._metrics()) + "\n")
                        last_report = now
                    if self.trainer is None and now - started > idle_timeout_s:
                        log.error("controller: no trainer registered within %.0f s", idle_timeout_s)
                        return 4
                    if self.trainer is not None and now - self.trainer_seen > idle_timeout_s:
                        log.error("controller: trainer silent for %.0f s", idle_timeout_s)
                        return 4
                    if self.ledger.consecutive_failures >= 20:
                        log.error("controller: the last 20 requests all failed to render; stopping")
                        return 5
                self._stop_workers("training finished")
                metrics.write(json.dumps(self._metrics()) + "\n")
                log.info("controller: finished; issued %d requests (%d re-issued, %d failed), "
                         "delivered %d; rejected %d messages %s", self.ledger.next_id, self.ledger.reissued,
                         self.ledger.failed, self.ledger.delivered, self.rejects.total, dict(self.rejects))
                if self.fed == 0 and cfg.policy.name != "uniform" and self.ledger.delivered:
                    log.warning("controller: policy=%s received no per-sample losses, so it never learned "
                                "and kept its starting distribution all run; a loop of your own feeds it with "
                                "stream.report(losses)", cfg.policy.name)
                return 0
            except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from a launcher stopping the run (main)
                self._stop_workers("controller stopped")  # else one started elsewhere waits out its silence
                log.warning("controller: interrupted; told %d worker(s) to stop", len(self.workers))
                raise
            finally:
                plog.close()
                metrics.close()

    def _stop_workers(self, reason: str) -> None:
        """Tell every worker to stop, and let the socket's close deliver that (it drops what is
        still queued otherwise: LINGER 0) for up to a second."""
        for ident in list(self.workers):
            self._send(ident, "stop", {"reason": reason})
        self.router.setsockopt(zmq.LINGER, 1000)

    def _send(self, ident: bytes, kind: str, fields=None, arrays=None) -> bool:
        try:
            self.router.send_multipart([ident, *protocol.encode(kind, fields, arrays)], copy=False)
            return True
        except zmq.ZMQError:  # EHOSTUNREACH: the peer is gone; liveness checks will clean up
            return False

    def _receive(self, frames) -> None:
        if len(frames) < 2:
            return
        ident = bytes(frames[0].buffer)
        try:
            msg = protocol.decode(frames[1:])
        except protocol.ProtocolError as e:
            self.rejects.add(e)
            if self.rejects.total <= 10 or self.rejects.total % 1000 == 0:
                log.warning("controller rejected a message from %r (%d so far): %s", ident[:32], self.rejects.total, e)
            return
        now = time.monotonic()
        handler = getattr(self, "_on_" + msg.kind, None)
        if ident in self.workers:
            self.workers[ident].last_seen = now
        if any(ident == t for t, _ in self.ranks.values()):  # every trainer rank (rank 0 included)
            self.trainer_seen = now
        if handler is None:
            self.rejects["unexpected_kind"] += 1
            return
        handler(ident, msg)

    # -- workers ---------------------------------------------------------------------------------
    def _on_hello(self, ident: bytes, msg) -> None:
        requeued = self.ledger.join(ident, msg["worker"], time.monotonic())
        if requeued is not None:  # a restarted worker with the same id: its old requests are lost
            log.warning("controller: worker %s rejoined; re-issuing its %d open requests", msg["worker"], requeued)
        log.info("controller: worker %s (pid %d) joined", msg["worker"], msg["pid"])
        self._welcome_waiting()

    def _welcome_waiting(self) -> None:
        if self.trainer_pull is None:
            return  # welcomed once the trainer says where to push
        for ident, w in self.workers.items():
            if not w.welcomed:
                w.welcomed = self._send(ident, "welcome", {
                    "family": self.cfg.scene.name, "space": self.space.to_mapping(), "render": dict(self.cfg.scene.render),
                    "heartbeat_s": self.cfg.controller.heartbeat_s,
                    "push": [self.ranks[r][1] for r in range(self.ledger.world)]})

    def _on_credit(self, ident: bytes, msg) -> None:
        self.ledger.credit(ident, msg["n"])

    def _on_heartbeat(self, ident: bytes, msg) -> None:
        pass

    def _on_done(self, ident: bytes, msg) -> None:
        self.ledger.done(ident, msg["id"], time.monotonic())

    def _on_failed(self, ident: bytes, msg) -> None:
        req = self.ledger.failed_render(ident, msg["id"])
        if req is not None:
            w = self.workers.get(ident)
            log.warning("controller: request %d failed on %s: %s", req.id, w.name if w else "?", msg["error"])

    def _check_liveness(self, now: float) -> None:
        cc = self.cfg.controller
        for name, n in self.ledger.check_liveness(now, cc.dead_after_s, cc.redeliver_after_s):
            log.warning("controller: worker %s silent for over %.1f s; re-issuing its %d open requests",
                        name, cc.dead_after_s, n)

    def _dispatch(self, now: float) -> None:
        for ident, req in self.ledger.dispatch(now, self._make_request):
            if req.issues == 1:
                rec = {"id": req.id, "family": self.cfg.scene.name, "n": req.n, "seed": req.seed,
                       "action": req.action, "worker": self.workers[ident].name, "step": req.step}
                if self.ledger.world > 1:
                    rec["rank"] = req.rank
                self.plog.append(rec)
            pfields, parrays = protocol.pack_params(req.params)
            if not self._send(ident, "request", {"id": req.id, "family": self.cfg.scene.name, "n": req.n,
                                                 "rank": req.rank, **pfields}, {"seeds": req.seeds, **parrays}):
                self.ledger.unsent(ident, req)

    def _make_request(self, rid: int, rank: int, n: int) -> Request:
        action = self.policy.act()
        seed = rng.request_seed(self.cfg.seed, rid)
        params, seeds = self.space.sample(action, seed, n)
        return Request(rid, seed, action, params, seeds, step=rid, rank=rank)

    # -- trainer ---------------------------------------------------------------------------------
    def _on_trainer(self, ident: bytes, msg) -> None:
        rank, world = msg["rank"], msg["world"]
        if not 0 <= rank < world <= 1024 or (self.ranks and world != self.ledger.world):
            self.rejects["bad_rank"] += 1
            log.warning("controller: trainer registration with rank %r of %r refused (world is %d)", rank, world,
                        self.ledger.world)
            return
        self.ledger.set_world(world)
        self.ranks[rank] = (ident, msg["pull"])
        self.trainer_seen = time.monotonic()
        if rank == 0:
            self.trainer = ident
        log.info("controller: trainer rank %d/%d registered, data to %s", rank, world, msg["pull"])
        # what the trainer must know and compute: it reads none of it from config or policy code
        fam = self.family
        self._send(ident, "info", {"family": self.cfg.scene.name, "space": self.space.to_mapping(),
                                   "num_classes": fam.NUM_CLASSES, "image_shape": list(fam.IMAGE_SHAPE),
                                   "label_param": fam.LABEL_PARAM, "signal": self.policy.signal})
        if len(self.ranks) < self.ledger.world:
            return  # workers are welcomed once every rank can receive
        self.trainer_pull = self.ranks[0][1]
        for w in self.workers.values():
            w.welcomed = False  # re-welcome: the push addresses may have changed
        self._welcome_waiting()

    def _on_delivered(self, ident: bytes, msg) -> None:
        req = self.ledger.deliver(msg["id"])
        if req is None:
            return  # a duplicate, or a request of an earlier controller
        losses, signal = msg.arrays.get("losses"), msg.arrays.get("signal")
        if losses is None:
            return  # consumed without feedback (e.g. a user's loop that reports no losses)
        # dtypes and lengths are the wire format's; what only this side knows is the request's size
        if msg["samples"] != req.n or not np.all(np.isfinite(losses)):
            self.rejects["bad_losses"] += 1
            return
        self.fed += 1
        self.policy.observe(req.action, req.params, losses, signal)

    def _on_metrics(self, ident: bytes, msg) -> None:
        self.policy.observe_validation(msg["metrics"])

    def _on_finished(self, ident: bytes, msg) -> None:
        ranks = [r for r, (t, _) in self.ranks.items() if t == ident] or [0]
        self.finished_ranks.update(ranks)
        self.finished = len(self.finished_ranks) >= self.ledger.world

    def _metrics(self) -> dict:
        # step: samples delivered to the trainer, the x axis of the trainer's rows too
        return {"step": self.ledger.delivered_samples, **self.ledger.summary(), "ctrl/rejected": self.rejects.total, "time": time.time(),
                **self.policy.summary()}


def _bind(sock: zmq.Socket, endpoint: str) -> str:
    """Bind; a tcp endpoint without a port gets a free one. Returns the resolved endpoint."""
    if endpoint.startswith("tcp://") and endpoint.count(":") == 1:
        port = sock.bind_to_random_port(endpoint)
        return f"{endpoint}:{port}"
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        raise ConfigError(f"controller.bind: cannot bind {endpoint}: {e}") from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def run(cfg: RunConfig, ready_file: Path | None = None) -> int:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return Controller(cfg, run_dir).serve(ready_file=ready_file)


def _interrupted(signum, frame) -> None:
    """Ctrl-C or a launcher's SIGTERM: stop once. A second signal (Ctrl-C reaches the whole process
    group, and the launcher then sends SIGTERM) must not cut short the stop sent to the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main() -> None:
    """``otfgen-controller``: either ``--config RUN/config.json`` (from the launcher) or Hydra overrides."""
    cli.setup_logging()
    cfg, extra = config_mod.from_argv(sys.argv[1:], "otfgen-controller", {
        "ready": "where to write the bound endpoints as JSON (default RUN/endpoints.json)"})
    ready = Path(extra["ready"]) if "ready" in extra else Path(cfg.run_dir) / "endpoints.json"
    for sig in (signal.SIGINT, signal.SIGTERM):  # stopped: tell the workers (Controller.serve)
        signal.signal(sig, _interrupted)
    cli.exit_with(lambda: run(cfg, ready_file=ready), (ConfigError, families.UnknownFamily, ValueError), log)


if __name__ == "__main__":
    main()
