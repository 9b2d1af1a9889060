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
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from blender_gen import families, protocol, rng, security
from blender_gen.space import ParamSpace
from controller import config as config_mod
from controller import policies
from controller.config import RunConfig
from controller.paramlog import ParamLog

log = logging.getLogger("otfgen.controller")


@dataclass
class Request:
    id: int
    seed: int
    action: dict
    params: dict
    seeds: np.ndarray
    step: int
    worker: bytes | None = None
    issued_at: float = 0.0
    rendered_at: float | None = None
    issues: int = 0
    rank: int = 0  # the trainer rank this request's batch goes to


@dataclass
class WorkerState:
    name: str
    credits: int = 0
    rendering: set = field(default_factory=set)  # sent, no done/failed yet: each holds one credit
    open: set = field(default_factory=set)  # sent, not yet delivered to the trainer: re-issued if it dies
    last_seen: float = 0.0
    welcomed: bool = False
    rendered: int = 0


def scene_space(cfg: RunConfig) -> ParamSpace:
    """The run's parameter space: the scene config (YAML plus overrides), checked against the family."""
    fam = families.load(cfg.scene.name)  # raises UnknownFamily with the list of families
    space = ParamSpace.from_mapping({k: {kk: vv for kk, vv in vars(v).items() if vv is not None}
                                     for k, v in cfg.scene.params.items()})
    declared = families.default_space(cfg.scene.name)
    unknown = set(space.params) - set(declared.params)
    missing = set(declared.params) - set(space.params)
    if unknown or missing:
        raise config_mod.ConfigError(f"scene.params for '{cfg.scene.name}': unknown {sorted(unknown)}, "
                                     f"missing {sorted(missing)}; declared: {sorted(declared.params)}")
    for p in space:
        d = declared[p.name]
        if p.kind != d.kind:
            raise config_mod.ConfigError(f"scene.params.{p.name}.kind: '{p.kind}', the family declares '{d.kind}'")
        if p.kind == "choice":
            extra = set(p.choices) - set(d.choices)
            if extra:
                raise config_mod.ConfigError(f"scene.params.{p.name}.choices: {sorted(extra)} not among {list(d.choices)}")
        elif p.low < d.low or p.high > d.high:
            # overrides may narrow a range, not widen it past what the family was built for
            raise config_mod.ConfigError(f"scene.params.{p.name}: [{p.low}, {p.high}] outside the family's "
                                         f"declared range [{d.low}, {d.high}]")
    if fam.LABEL_PARAM not in space.params:
        raise config_mod.ConfigError(f"scene '{cfg.scene.name}' has no label parameter '{fam.LABEL_PARAM}'")
    return space


def request_seed(run_seed: int, rid: int) -> int:
    """The request's seed: a hash of (run seed, id), so ids alone never repeat a sample."""
    with np.errstate(over="ignore"):
        return int(rng.mix64(rng.mix64(np.uint64(run_seed & (2**64 - 1))) + np.uint64(rid)))


class Controller:
    def __init__(self, cfg: RunConfig, run_dir: str | Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.space = scene_space(cfg)
        fam = families.load(cfg.scene.name)
        options = {"num_classes": fam.NUM_CLASSES,
                   "budget_requests": -(-cfg.budget.samples // cfg.controller.request_size), **cfg.policy.options}
        self.policy = policies.make(cfg.policy.name, self.space, cfg.policy.bins, options, cfg.seed)
        self.workers: dict[bytes, WorkerState] = {}
        self.open: dict[int, Request] = {}
        self.reissue: deque[int] = deque()
        self.next_id = 0
        self.issued_samples = 0
        self.delivered = 0
        self.delivered_samples = 0
        self.reissued = 0
        self.failed = 0
        self.consecutive_failures = 0
        self.trainer: bytes | None = None  # rank 0 (or the only trainer)
        self.trainer_pull: str | None = None  # set once every rank has registered
        self.trainer_seen = 0.0
        # data-parallel training: one trainer per rank, each fed a disjoint share of the budget
        self.world = 1
        self.ranks: dict[int, tuple[bytes, str]] = {}  # rank -> (identity, PULL endpoint)
        self.rank_issued: list[int] = [0]
        self.finished_ranks: set[int] = set()
        self.rejects = protocol.RejectCounter()
        self.finished = False
        self.awaiting_losses: dict[int, dict] = {}

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
                raise config_mod.ConfigError(str(e)) from None
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
                    if self.consecutive_failures >= 20:
                        log.error("controller: the last 20 requests all failed to render; stopping")
                        return 5
                for ident in list(self.workers):
                    self._send(ident, "stop", {"reason": "training finished"})
                metrics.write(json.dumps(self._metrics()) + "\n")
                log.info("controller: finished; issued %d requests (%d re-issued, %d failed), "
                         "delivered %d; rejected %d messages %s", self.next_id, self.reissued, self.failed,
                         self.delivered, self.rejects.total, dict(self.rejects))
                return 0
            finally:
                plog.close()
                metrics.close()

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
        old = self.workers.pop(ident, None)
        if old is not None:  # a restarted worker with the same id: its old requests are lost
            log.warning("controller: worker %s rejoined; re-issuing its %d open requests", old.name, len(old.open))
            self._requeue(old)
        self.workers[ident] = WorkerState(msg["worker"], last_seen=time.monotonic())
        log.info("controller: worker %s (pid %d) joined", msg["worker"], msg["pid"])
        self._welcome_waiting()

    def _welcome_waiting(self) -> None:
        if self.trainer_pull is None:
            return  # welcomed once the trainer says where to push
        for ident, w in self.workers.items():
            if not w.welcomed:
                w.welcomed = self._send(ident, "welcome", {
                    "family": self.cfg.scene.name, "space": self.space.to_mapping(), "render": dict(self.cfg.scene.render),
                    "push": self.trainer_pull, "heartbeat_s": self.cfg.controller.heartbeat_s,
                    "push_all": [self.ranks[r][1] for r in range(self.world)]})

    def _on_credit(self, ident: bytes, msg) -> None:
        w = self.workers.get(ident)
        if w is not None and 0 < msg["n"] <= 64:
            w.credits += msg["n"]

    def _on_heartbeat(self, ident: bytes, msg) -> None:
        pass

    def _on_done(self, ident: bytes, msg) -> None:
        w = self.workers.get(ident)
        req = self.open.get(msg["id"])
        if w is not None and msg["id"] in w.rendering:
            # the credit comes back now (the trainer's "delivered" may even have come first); the
            # request stays in w.open until the trainer has it, so a worker that dies with the
            # batch still in its send queue gets it re-issued
            w.rendering.discard(msg["id"])
            w.credits += 1
            w.rendered += 1
        if req is not None and req.worker == ident:
            req.rendered_at = time.monotonic()
            self.consecutive_failures = 0

    def _on_failed(self, ident: bytes, msg) -> None:
        w = self.workers.get(ident)
        req = self.open.pop(msg["id"], None)
        if w is not None and msg["id"] in w.rendering:
            w.rendering.discard(msg["id"])
            w.open.discard(msg["id"])
            w.credits += 1
        if req is not None:
            # a request that cannot be rendered is not retried (it would fail again); its
            # samples go back to the budget so the run still sees budget.samples
            self.failed += 1
            self.consecutive_failures += 1
            self.issued_samples -= len(req.seeds)
            log.warning("controller: request %d failed on %s: %s", req.id, w.name if w else "?", msg["error"])

    def _requeue(self, w: WorkerState) -> None:
        for rid in sorted(w.open):
            if rid in self.open:
                self.reissue.append(rid)
        w.open.clear()
        w.rendering.clear()

    def _check_liveness(self, now: float) -> None:
        dead_after = self.cfg.controller.dead_after_s
        for ident, w in list(self.workers.items()):
            if now - w.last_seen > dead_after:
                log.warning("controller: worker %s silent for %.1f s; re-issuing its %d open requests",
                            w.name, now - w.last_seen, len(w.open))
                self._requeue(w)
                del self.workers[ident]
        # rendered but never delivered (e.g. the worker died with the batch in its send queue)
        redeliver = self.cfg.controller.redeliver_after_s
        queued = set(self.reissue)
        for rid, req in self.open.items():
            if req.rendered_at is not None and now - req.rendered_at > redeliver and rid not in queued:
                req.rendered_at = None
                self.reissue.append(rid)

    def _dispatch(self, now: float) -> None:
        cc = self.cfg.controller
        # bound what is issued but not yet delivered: keeps the policy's feedback fresh and the
        # queues short (credits alone bound each worker, not the trainer's backlog)
        max_open = cc.max_open or (cc.credits * max(1, len(self.workers)) + 4)
        for ident, w in self.workers.items():
            while w.welcomed and w.credits > 0:
                if self.reissue:
                    req = self.open.get(self.reissue.popleft())
                    if req is None:
                        continue  # delivered meanwhile
                    self.reissued += 1
                elif self._remaining() > 0 and len(self.open) < max_open:
                    req = self._new_request()
                else:
                    return
                self._issue(ident, w, req, now)

    def _share(self, rank: int) -> int:
        """Samples for ``rank``: equal shares (ranks of a DDP job must take the same number of
        steps); a remainder of budget % world samples is not generated."""
        return self.cfg.budget.samples // self.world

    def _remaining(self) -> int:
        return sum(self._share(r) - self.rank_issued[r] for r in range(self.world))

    def _new_request(self) -> Request:
        # the rank furthest behind its share gets the next request (one rank: all of them)
        rank = min(range(self.world), key=lambda r: (self.rank_issued[r] - self._share(r), r))
        n = min(self.cfg.controller.request_size, self._share(rank) - self.rank_issued[rank])
        self.rank_issued[rank] += n
        rid = self.next_id
        self.next_id += 1
        action = self.policy.act()
        seed = request_seed(self.cfg.seed, rid)
        params, seeds = self.space.sample(action, seed, n)
        req = Request(rid, seed, action, params, seeds, step=rid, rank=rank)
        self.open[rid] = req
        self.issued_samples += n
        return req

    def _issue(self, ident: bytes, w: WorkerState, req: Request, now: float) -> None:
        if req.issues == 0:
            rec = {"id": req.id, "family": self.cfg.scene.name, "n": len(req.seeds), "seed": req.seed,
                   "action": req.action, "worker": w.name, "step": req.step}
            if self.world > 1:
                rec["rank"] = req.rank
            self.plog.append(rec)
        req.issues += 1
        req.worker, req.issued_at, req.rendered_at = ident, now, None
        pfields, parrays = protocol.pack_params(req.params)
        ok = self._send(ident, "request", {"id": req.id, "family": self.cfg.scene.name, "n": len(req.seeds),
                                           "rank": req.rank, **pfields}, {"seeds": req.seeds, **parrays})
        w.credits -= 1
        if ok:
            w.open.add(req.id)
            w.rendering.add(req.id)
        else:
            self.reissue.appendleft(req.id)

    # -- trainer ---------------------------------------------------------------------------------
    def _on_trainer(self, ident: bytes, msg) -> None:
        rank, world = msg.fields.get("rank", 0), msg.fields.get("world", 1)
        if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world <= 1024) or (
                self.ranks and world != self.world):
            self.rejects["bad_rank"] += 1
            log.warning("controller: trainer registration with rank %r of %r refused (world is %d)", rank, world,
                        self.world)
            return
        if world != self.world:
            self.world, self.rank_issued = world, [0] * world
        self.ranks[rank] = (ident, msg["pull"])
        self.trainer_seen = time.monotonic()
        if rank == 0:
            self.trainer = ident
        if self.policy.needs_realism and not msg.fields.get("realism"):
            log.warning("controller: policy %s needs feature distances the trainer does not send", self.policy.name)
        log.info("controller: trainer rank %d/%d registered, data to %s", rank, world, msg["pull"])
        fam = families.load(self.cfg.scene.name)
        self._send(ident, "info", {"family": self.cfg.scene.name, "space": self.space.to_mapping(),
                                   "num_classes": fam.NUM_CLASSES})
        if len(self.ranks) < self.world:
            return  # workers are welcomed once every rank can receive
        self.trainer_pull = self.ranks[0][1]
        for w in self.workers.values():
            w.welcomed = False  # re-welcome: the push addresses may have changed
        self._welcome_waiting()

    def _on_delivered(self, ident: bytes, msg) -> None:
        req = self.open.pop(msg["id"], None)
        if req is None:
            return  # a duplicate, or a request of an earlier controller
        w = self.workers.get(req.worker)
        if w is not None:
            w.open.discard(req.id)
        self.delivered += 1
        self.delivered_samples += len(req.seeds)
        self.awaiting_losses[req.id] = (req.action, req.params)
        while len(self.awaiting_losses) > 256:  # a trainer that never reports losses costs bounded memory
            self.awaiting_losses.pop(next(iter(self.awaiting_losses)))

    def _on_losses(self, ident: bytes, msg) -> None:
        entry = self.awaiting_losses.pop(msg["id"], None)
        if entry is None:
            return
        action, params = entry
        n = len(next(iter(params.values())))
        losses, realism = msg.arrays["losses"], msg.arrays.get("realism")
        if losses.dtype != np.float32 or losses.shape != (n,) or not np.all(np.isfinite(losses)):
            self.rejects["bad_losses"] += 1
            return
        if realism is not None and (realism.dtype != np.float32 or realism.shape != (n,)):
            realism = None
        self.policy.observe(action, params, losses, realism)

    def _on_metrics(self, ident: bytes, msg) -> None:
        self.policy.observe_validation(msg["metrics"])

    def _on_finished(self, ident: bytes, msg) -> None:
        ranks = [r for r, (t, _) in self.ranks.items() if t == ident] or [0]
        self.finished_ranks.update(ranks)
        self.finished = len(self.finished_ranks) >= self.world

    def _metrics(self) -> dict:
        return {"ctrl/requests": self.next_id, "ctrl/delivered": self.delivered,
                "ctrl/delivered_samples": self.delivered_samples, "ctrl/open": len(self.open),
                "ctrl/reissued": self.reissued, "ctrl/failed": self.failed, "ctrl/workers": len(self.workers),
                "ctrl/rejected": self.rejects.total, "time": time.time(), **self.policy.summary()}


def _bind(sock: zmq.Socket, endpoint: str) -> str:
    """Bind; a tcp endpoint without a port gets a free one. Returns the resolved endpoint."""
    if endpoint.startswith("tcp://") and endpoint.count(":") == 1:
        port = sock.bind_to_random_port(endpoint)
        return f"{endpoint}:{port}"
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        raise config_mod.ConfigError(f"controller.bind: cannot bind {endpoint}: {e}") from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def run(cfg: RunConfig, ready_file: Path | None = None) -> int:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return Controller(cfg, run_dir).serve(ready_file=ready_file)


def main() -> None:
    """``otfgen-controller``: either ``--config RUN/config.json`` (from the launcher) or Hydra overrides."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg, extra = config_mod.from_argv(sys.argv[1:], "otfgen-controller")
    ready = Path(extra["ready"]) if "ready" in extra else Path(cfg.run_dir) / "endpoints.json"
    try:
        code = run(cfg, ready_file=ready)
    except (config_mod.ConfigError, families.UnknownFamily, ValueError) as e:
        log.error("%s", e)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
