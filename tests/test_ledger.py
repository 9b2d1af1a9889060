"""The controller's bookkeeping without sockets or processes: budget, credits, re-issue, ranks."""

import numpy as np
import pytest

from otfgen.controller.ledger import Ledger, Request


def make(rid: int, rank: int, n: int) -> Request:
    return Request(rid, seed=rid, action={}, params={"label": np.zeros(n, np.int64)},
                   seeds=np.arange(n, dtype=np.uint64), step=rid, rank=rank)


def ledger(budget=1024, request_size=256, world=1, workers=("w",), credits=2, max_open=0) -> Ledger:
    led = Ledger(budget, request_size, world=world, max_open=max_open, credits=credits)
    for name in workers:
        led.join(name.encode(), name, now=0.0)
        led.workers[name.encode()].welcomed = True
        led.credit(name.encode(), credits)
    return led


def run_to_completion(led: Ledger, fail: set[int] = frozenset(), now: float = 0.0, max_rounds: int = 1000):
    """Workers render everything they get (failing the ids in ``fail``), the trainer delivers each
    rendered request once; returns the delivered requests in order."""
    delivered = []
    for _ in range(max_rounds):
        sent = led.dispatch(now, make)
        if not sent and not led.open:
            return delivered
        for ident, req in sent:
            if req.id in fail:
                led.failed_render(ident, req.id)
            else:
                led.done(ident, req.id, now)
                got = led.deliver(req.id)
                assert got is req
                delivered.append(req)
    raise AssertionError("the ledger never finished")


def test_failed_render_returns_its_samples_to_the_budget():
    led = ledger(budget=1024, request_size=256)
    delivered = run_to_completion(led, fail={1})
    # request 1 failed: a fifth request takes its 256 samples, so the trainer still gets 1024
    assert sum(r.n for r in delivered) == 1024
    assert [r.id for r in delivered] == [0, 2, 3, 4]
    assert led.failed == 1 and led.remaining() == 0 and led.issued_samples == 1024
    assert led.workers[b"w"].credits == 2 and not led.workers[b"w"].rendering


def test_failed_render_on_a_rank_refills_that_rank():
    led = ledger(budget=1024, request_size=256, world=2)
    delivered = run_to_completion(led, fail={0, 3})
    per_rank = [sum(r.n for r in delivered if r.rank == k) for k in (0, 1)]
    assert per_rank == [512, 512]


def test_consecutive_failures_are_counted_and_reset_by_a_success():
    led = ledger(budget=256 * 10, request_size=256)
    for ident, req in led.dispatch(0.0, make):
        led.failed_render(ident, req.id)
    assert led.consecutive_failures == 2
    (ident, req), *_ = led.dispatch(0.0, make)
    led.done(ident, req.id, 0.0)
    assert led.consecutive_failures == 0


def test_dead_worker_requests_are_reissued_with_the_same_id_to_another_worker():
    led = ledger(budget=1024, request_size=256, workers=("a", "b"), credits=1)
    first = dict((req.id, ident) for ident, req in led.dispatch(0.0, make))
    assert first == {0: b"a", 1: b"b"}
    led.done(b"a", 0, 0.0)  # rendered, but its batch never reached the trainer
    led.workers[b"b"].last_seen = 9.0
    dead = led.check_liveness(now=10.0, dead_after_s=5.0, redeliver_after_s=300.0)
    assert dead == [("a", 1)] and b"a" not in led.workers
    # b gets request 0 again (same id, params and seeds) before anything new
    led.done(b"b", 1, 10.0)
    led.deliver(1)
    again = led.dispatch(10.0, make)
    assert [(ident, req.id, req.issues) for ident, req in again] == [(b"b", 0, 2)]
    assert led.reissued == 1


def test_restarted_worker_with_the_same_id_gets_its_requests_reissued():
    led = ledger(budget=1024, request_size=256, credits=2)
    led.dispatch(0.0, make)
    assert led.join(b"w", "w", now=1.0) == 2
    assert led.join(b"w", "w", now=2.0) == 0 and led.join(b"new", "new", now=2.0) is None
    assert list(led.reissue) == [0, 1]


def test_rendered_but_never_delivered_is_reissued_after_the_safety_net():
    led = ledger()
    (ident, req), _ = led.dispatch(0.0, make)
    led.done(ident, req.id, now=0.0)
    led.workers[ident].last_seen = 400.0
    led.check_liveness(now=301.0, dead_after_s=1e9, redeliver_after_s=300.0)
    assert list(led.reissue) == [req.id]


def test_exactly_once_across_ranks_with_duplicates_and_reissues():
    led = ledger(budget=4096, request_size=256, world=4, workers=("a", "b"), credits=2)
    seen_by_rank: dict[int, list[int]] = {r: [] for r in range(4)}
    rng = np.random.default_rng(0)
    now = 0.0
    while led.remaining() > 0 or led.open:
        now += 1.0
        for ident, req in led.dispatch(now, make):
            led.done(ident, req.id, now)
            if rng.random() < 0.2:
                continue  # lost on the way: the safety net re-issues it
            for _ in range(1 + (rng.random() < 0.3)):  # sometimes delivered twice
                if led.deliver(req.id) is not None:
                    seen_by_rank[req.rank].append(req.id)
        for w in led.workers.values():
            w.last_seen = now
        led.check_liveness(now, dead_after_s=5.0, redeliver_after_s=3.0)
    ids = [i for r in seen_by_rank.values() for i in r]
    assert len(ids) == len(set(ids)) == led.next_id  # each request delivered exactly once
    assert led.delivered_samples == 4096 and led.reissued > 0


def test_uneven_rank_shares_are_equal_and_the_remainder_is_not_generated():
    led = ledger(budget=1000, request_size=256, world=3)
    delivered = run_to_completion(led)
    per_rank = [sum(r.n for r in delivered if r.rank == k) for k in range(3)]
    assert per_rank == [333, 333, 333]
    assert sorted({r.n for r in delivered}) == [77, 256]


def test_open_requests_are_bounded():
    led = ledger(budget=100_000, request_size=256, workers=("a", "b", "c"), credits=8, max_open=5)
    sent = led.dispatch(0.0, make)
    assert len(sent) == 5 and len(led.open) == 5


def test_credit_grants_are_bounded_and_only_for_known_workers():
    led = ledger(credits=0)
    assert not led.credit(b"w", 0) and not led.credit(b"w", 65) and not led.credit(b"nobody", 1)
    assert led.credit(b"w", 64) and led.workers[b"w"].credits == 64


def test_world_cannot_change_mid_run():
    led = ledger()
    led.dispatch(0.0, make)
    with pytest.raises(ValueError, match="ranks changed"):
        led.set_world(2)
