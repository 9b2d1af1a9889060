"""The controller's bookkeeping, without sockets: open requests, credits, re-issue, rank shares, budget.

A request is *open* from its first issue until the trainer reports it delivered. Each worker
holds credits (requests it will take); a request sent to it is *rendering* until the worker says
done or failed, which returns the credit, and stays in the worker's *open* set until delivered,
so a worker that dies with a batch still in its send queue gets that request re-issued — with
the same id, params and seeds; the trainer drops a second copy. A request that fails to render is
not retried (it would fail again): its samples go back to its rank's share, so the trainers
still receive the whole budget.

Data-parallel trainers (``world`` ranks) each get an equal share, ``budget // world`` samples
(ranks of a DDP job must take the same number of steps; the remainder is not generated), and a
new request goes to the rank furthest behind its share.

``Ledger`` never sends anything: ``dispatch`` says what to send to whom, and the server reports
back what happened. Tests drive it directly (tests/test_ledger.py).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


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

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass
class WorkerState:
    name: str
    credits: int = 0
    rendering: set = field(default_factory=set)  # sent, no done/failed yet: each holds one credit
    open: set = field(default_factory=set)  # sent, not yet delivered to the trainer: re-issued if it dies
    last_seen: float = 0.0
    welcomed: bool = False
    rendered: int = 0


MAX_CREDIT_GRANT = 64  # credits one message may grant: a bound on what a confused worker can claim


class Ledger:
    def __init__(self, budget: int, request_size: int, world: int = 1, max_open: int = 0, credits: int = 2):
        self.budget, self.request_size = budget, request_size
        self.max_open_cfg, self.credits_cfg = max_open, credits
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
        self.world = 1
        self.rank_issued: list[int] = [0]
        self.set_world(world)

    # -- budget and ranks ------------------------------------------------------------------------
    def set_world(self, world: int) -> None:
        if world != self.world:
            if self.next_id:
                raise ValueError(f"the number of trainer ranks changed from {self.world} to {world} mid-run")
            self.world, self.rank_issued = world, [0] * world

    def share(self, rank: int) -> int:
        """Samples for ``rank``: equal shares; a remainder of budget % world is not generated."""
        return self.budget // self.world

    def remaining(self) -> int:
        return sum(self.share(r) - self.rank_issued[r] for r in range(self.world))

    def max_open(self) -> int:
        # bound what is issued but not yet delivered: keeps the policy's feedback fresh and the
        # queues short (credits alone bound each worker, not the trainer's backlog)
        return self.max_open_cfg or (self.credits_cfg * max(1, len(self.workers)) + 4)

    # -- workers ---------------------------------------------------------------------------------
    def join(self, ident: bytes, name: str, now: float) -> int | None:
        """A worker said hello; returns how many requests of an earlier worker of that id are
        re-issued, or None when no worker of that id was known."""
        old = self.workers.pop(ident, None)
        requeued = self._requeue(old) if old is not None else None
        self.workers[ident] = WorkerState(name, last_seen=now)
        return requeued

    def credit(self, ident: bytes, n: int) -> bool:
        w = self.workers.get(ident)
        if w is None or not 0 < n <= MAX_CREDIT_GRANT:
            return False
        w.credits += n
        return True

    def done(self, ident: bytes, rid: int, now: float) -> None:
        w = self.workers.get(ident)
        req = self.open.get(rid)
        if w is not None and rid in w.rendering:
            # the credit comes back now (the trainer's "delivered" may even have come first); the
            # request stays in w.open until the trainer has it
            w.rendering.discard(rid)
            w.credits += 1
            w.rendered += 1
        if req is not None and req.worker == ident:
            req.rendered_at = now
            self.consecutive_failures = 0

    def failed_render(self, ident: bytes, rid: int) -> Request | None:
        """The worker could not render ``rid``: the credit comes back, the samples go back to the
        rank's share (so a new request is issued in its place), the request is closed."""
        w = self.workers.get(ident)
        if w is not None and rid in w.rendering:
            w.rendering.discard(rid)
            w.open.discard(rid)
            w.credits += 1
        req = self.open.pop(rid, None)
        if req is None:
            return None
        self.failed += 1
        self.consecutive_failures += 1
        self.issued_samples -= req.n
        self.rank_issued[req.rank] -= req.n
        return req

    def _requeue(self, w: WorkerState) -> int:
        rids = [rid for rid in sorted(w.open) if rid in self.open]
        self.reissue.extend(rids)
        w.open.clear()
        w.rendering.clear()
        return len(rids)

    def check_liveness(self, now: float, dead_after_s: float, redeliver_after_s: float) -> list[tuple[str, int]]:
        """Forget workers silent for ``dead_after_s`` and queue their open requests again; also
        queue requests rendered ``redeliver_after_s`` ago and never delivered. Returns the dead
        workers' (name, requests re-issued)."""
        dead = []
        for ident, w in list(self.workers.items()):
            if now - w.last_seen > dead_after_s:
                dead.append((w.name, self._requeue(w)))
                del self.workers[ident]
        queued = set(self.reissue)
        for rid, req in self.open.items():
            if req.rendered_at is not None and now - req.rendered_at > redeliver_after_s and rid not in queued:
                req.rendered_at = None
                self.reissue.append(rid)
        return dead

    # -- issuing ---------------------------------------------------------------------------------
    def dispatch(self, now: float, make: Callable[[int, int, int], Request]) -> list[tuple[bytes, Request]]:
        """What to send now: (worker, request) pairs, re-issues first, then new requests made by
        ``make(id, rank, n)`` while budget and the open bound allow. Credits are spent here; a
        request whose send fails is handed back with ``unsent``."""
        out = []
        for ident, w in self.workers.items():
            while w.welcomed and w.credits > 0:
                if self.reissue:
                    req = self.open.get(self.reissue.popleft())
                    if req is None:
                        continue  # delivered meanwhile
                    self.reissued += 1
                elif self.remaining() > 0 and len(self.open) < self.max_open():
                    req = self._new(make)
                else:
                    return out
                req.issues += 1
                req.worker, req.issued_at, req.rendered_at = ident, now, None
                w.credits -= 1
                w.open.add(req.id)
                w.rendering.add(req.id)
                out.append((ident, req))
        return out

    def _new(self, make: Callable[[int, int, int], Request]) -> Request:
        # the rank furthest behind its share gets the next request (one rank: all of them)
        rank = min(range(self.world), key=lambda r: (self.rank_issued[r] - self.share(r), r))
        n = min(self.request_size, self.share(rank) - self.rank_issued[rank])
        rid = self.next_id
        self.next_id += 1
        req = make(rid, rank, n)
        if req.n != n or req.rank != rank or req.id != rid:
            raise ValueError(f"request {rid}: made with n={req.n}, rank={req.rank}; asked for n={n}, rank={rank}")
        self.rank_issued[rank] += n
        self.issued_samples += n
        self.open[rid] = req
        return req

    def unsent(self, ident: bytes, req: Request) -> None:
        """The send to ``ident`` failed (the peer is gone): issue the request again first."""
        w = self.workers.get(ident)
        if w is not None:
            w.open.discard(req.id)
            w.rendering.discard(req.id)
        self.reissue.appendleft(req.id)

    # -- delivery --------------------------------------------------------------------------------
    def deliver(self, rid: int) -> Request | None:
        """The trainer has ``rid``: close it. None for a duplicate or an unknown id."""
        req = self.open.pop(rid, None)
        if req is None:
            return None
        w = self.workers.get(req.worker)
        if w is not None:
            w.open.discard(rid)
        self.delivered += 1
        self.delivered_samples += req.n
        return req

    def summary(self) -> dict:
        return {"ctrl/requests": self.next_id, "ctrl/delivered": self.delivered,
                "ctrl/delivered_samples": self.delivered_samples, "ctrl/open": len(self.open),
                "ctrl/reissued": self.reissued, "ctrl/failed": self.failed, "ctrl/workers": len(self.workers)}
