"""Fuzz every listening socket with malformed multipart messages, then check real traffic still flows.

One process, threads, loopback tcp (as in tests/test_protocol.py's flood test):

    controller   a real ``Controller`` (its ROUTER)             <- a DEALER sends garbage
    stream       a real trainer-side ``Stream`` (its PULL)      <- a PUSH sends garbage
    worker       a real ``worker.serve`` connected to a fake     <- the fake controller's ROUTER says a
                 controller (a ROUTER this script owns)            valid welcome, then sends garbage

The garbage comes from a seeded numpy Generator and a mix of generators: truncated (or extended)
array frames, oversized headers (rare: each is > 1 MiB) and oversized declared shapes, wrong
version, wrong / non-whitelisted dtype, unknown kind, missing fields, random bytes, and a random
number of frames against what the header declares. Every message is invalid by construction, so
each one must be counted as a rejection.

Afterwards: the fake controller sends the fuzzed worker one valid request (it must render it and
push a valid batch to the stream), and a fresh real worker joins the real controller and a few
real requests go controller -> worker -> stream end to end. Rejections are read from each
component's ``RejectCounter`` (the worker's is local to ``serve``, so it is read from the count its
own warning carries, via a logging filter that also keeps 100k warnings off the terminal).
Resident memory is the process's VmRSS (all components share this process).

    python benchmarks/fuzz_sockets.py [--messages 100000] [--requests 4] [--seed 0]

"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from otfgen.blender_gen import families, protocol, worker
from otfgen.blender_gen.space import ParamSpace
from otfgen.controller.config import compose
from otfgen.controller.server import Controller
from otfgen.trainer.stream import Stream

FAMILY = "mnist2d"
FAKE_ID = 1_000_000  # the id of the fake controller's one valid request


def rss_kib(pid: str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


# -- malformed messages ----------------------------------------------------------------------------

def _header(kind: str, fields: dict, descs: list, v=protocol.VERSION) -> bytes:
    return json.dumps({"v": v, "kind": kind, **fields, "arrays": descs}).encode()


def _valid(gen: np.random.Generator) -> tuple[str, dict, list[dict], list[bytes]]:
    """A valid message (kind, fields, array descriptions, array frames), to damage."""
    kind = ("request", "batch", "credit", "done", "hello", "delivered")[gen.integers(6)]
    n = int(gen.integers(1, 9))
    arrays: dict[str, np.ndarray] = {}
    fields, arrays = protocol.example(kind, n)  # the wire format's own valid message of that kind
    if "family" in fields:
        fields["family"] = FAMILY
    if "id" in fields:
        fields["id"] = int(gen.integers(1 << 20))
    frames = protocol.encode(kind, fields, arrays)
    descs = json.loads(bytes(frames[0]))["arrays"]
    return kind, fields, descs, [bytes(memoryview(f)) for f in frames[1:]]


def _truncated(gen):
    kind, fields, descs, bufs = _valid(gen)
    if not bufs:  # give it an array to cut
        descs, bufs = [{"name": "x", "dtype": "float32", "shape": [4]}], [bytes(16)]
    i = int(gen.integers(len(bufs)))
    if gen.random() < 0.8 or not bufs[i]:
        bufs[i] = bufs[i][: int(gen.integers(len(bufs[i])))] if bufs[i] else b"x"  # shorter (or 1 byte too many)
    else:
        bufs[i] = bufs[i] + gen.bytes(int(gen.integers(1, 9)))  # longer than its shape
    return [_header(kind, fields, descs)] + bufs


def _oversized(gen):
    kind, fields, descs, bufs = _valid(gen)
    r = gen.random()
    if r < 0.01:  # a header past MAX_HEADER_BYTES (1 MiB each: rare, or 100k of them is 100 GiB)
        return [_header(kind, {**fields, "pad": "x" * protocol.MAX_HEADER_BYTES}, descs)] + bufs
    if r < 0.5:  # a declared shape that would need terabytes, with a tiny frame
        return [_header(kind, fields, [{"name": "a", "dtype": "float64", "shape": [1 << 20] * 6}]), b"12345678"]
    # sizes past the limit, negative, float or bool
    bad = (protocol.MAX_MESSAGE_BYTES + 1, -1, 2.5, True, "7", None)[gen.integers(6)]
    return [_header(kind, fields, [{"name": "a", "dtype": "uint8", "shape": [bad]}]), b"1234"]


def _wrong_version(gen):
    kind, fields, descs, bufs = _valid(gen)
    v = (0, 2, -1, "1", 1.5, None, [1], 1 << 70)[gen.integers(8)]  # (True and 1.0 == 1 pass: not "wrong")
    return [_header(kind, fields, descs, v=v)] + bufs


def _wrong_dtype(gen):
    kind, fields, descs, bufs = _valid(gen)
    if not descs:
        descs, bufs = [{"name": "x", "dtype": "uint8", "shape": [4]}], [b"abcd"]
    i = int(gen.integers(len(descs)))
    descs[i]["dtype"] = ("object", "<U4", "complex128", "O", "V8", ">f8", "float128", "", 7, None,
                         "|S4", "datetime64[s]", "float32 ")[gen.integers(13)]
    return [_header(kind, fields, descs)] + bufs


def _unknown_kind(gen):
    kind, fields, descs, bufs = _valid(gen)
    k = ("nonsense", "", "HELLO", "__init__", "_on_hello", None, 5, ["batch"], {"k": 1},
         "x" * 10_000)[gen.integers(10)]
    return [_header(k, fields, descs)] + bufs


def _missing_field(gen):
    kind, fields, descs, bufs = _valid(gen)
    required, needed = protocol.SCHEMA[kind]
    if required and gen.random() < 0.6:
        key = list(required)[gen.integers(len(required))]
        if gen.random() < 0.5:
            del fields[key]
        else:  # present, wrong type
            wrong = [x for x in (True, None, "1", ["1"], {"a": 1}, 1.5, 7)
                     if isinstance(x, bool) or not isinstance(x, required[key])]
            fields[key] = wrong[gen.integers(len(wrong))]
        return [_header(kind, fields, descs)] + bufs
    if needed:  # a required array left out (header and frame both)
        drop = [i for i, d in enumerate(descs) if d["name"] in needed][0]
        del descs[drop], bufs[drop]
        return [_header(kind, fields, descs)] + bufs
    return [_header(kind, {}, descs)] + bufs if kind != "heartbeat" else [b"{}"]


def _random_bytes(gen):
    frames = [gen.bytes(int(gen.integers(0, 512))) for _ in range(int(gen.integers(1, 6)))]
    if gen.random() < 0.3:  # look like a header's start, so decoding goes further
        frames[0] = b'{"v":1,"kind":"' + frames[0]
    return frames


def _frame_count(gen):
    kind, fields, descs, bufs = _valid(gen)
    k = int(gen.integers(0, 140))  # up to past MAX_ARRAYS + 1 frames
    if k == len(bufs):
        k += 1
    extra = [gen.bytes(int(gen.integers(0, 32))) for _ in range(max(0, k - len(bufs)))]
    return [_header(kind, fields, descs)] + (bufs + extra)[:k]


GENERATORS = {"truncated": _truncated, "oversized": _oversized, "version": _wrong_version,
              "dtype": _wrong_dtype, "kind": _unknown_kind, "fields": _missing_field,
              "random": _random_bytes, "frame_count": _frame_count}


def malformed(gen: np.random.Generator):
    names = list(GENERATORS)
    while True:
        name = names[gen.integers(len(names))]
        yield name, GENERATORS[name](gen)


# -- the fake controller the fuzzed worker talks to ------------------------------------------------

class WorkerRejects(logging.Filter):
    """Reads the worker's RejectCounter total from its warning's arguments; drops the record."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg.startswith("worker %s rejected a message"):
            self.total = record.args[1]
            return False
        return True


def _recv_kind(router: zmq.Socket, want: str, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if router.poll(100):
            frames = router.recv_multipart()
            msg = protocol.decode(frames[1:])
            if msg.kind == want:
                return frames[0], msg
    raise TimeoutError(f"fake controller: no '{want}' within {timeout_s} s")


def _drain(router: zmq.Socket) -> None:
    while router.poll(0):
        router.recv_multipart()


# -- the floods ------------------------------------------------------------------------------------

def flood(send, count, n: int, gen: np.random.Generator, window: int | None = None, tick=None) -> dict:
    """Send n malformed messages; with ``window``, keep at most that many unread (a ROUTER drops at HWM)."""
    mix = dict.fromkeys(GENERATORS, 0)
    it = malformed(gen)
    t0 = time.perf_counter()
    for i in range(n):
        name, frames = next(it)
        mix[name] += 1
        if window is not None:
            while i - count() >= window:
                time.sleep(0.001)
        send(frames)
        if tick is not None and i % 256 == 0:
            tick()
    sent_s = time.perf_counter() - t0
    deadline = time.monotonic() + 120
    while count() < n and time.monotonic() < deadline:
        if tick is not None:
            tick()
        time.sleep(0.01)
    return {"mix": mix, "seconds": time.perf_counter() - t0, "send_s": sent_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000, help="malformed messages per socket")
    ap.add_argument("--requests", type=int, default=4, help="real requests (256 samples) end to end afterwards")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    wlog = logging.getLogger("otfgen.worker")
    wlog.setLevel(logging.WARNING)
    wrejects = WorkerRejects()
    wlog.addFilter(wrejects)
    ctx = zmq.Context.instance()
    gen = np.random.default_rng(args.seed)
    rss = {"start": rss_kib()}
    results: dict[str, object] = {}

    def run(name, fn):
        try:
            results[name] = fn()
        except BaseException as e:
            results[name] = e

    tmp = Path(tempfile.mkdtemp(prefix="otfgen-fuzz-"))
    cfg = compose([f"budget.samples={args.requests * 256}", "controller.request_size=256"])
    cfg.run_dir = str(tmp)
    ctrl = Controller(cfg, tmp)
    ready = tmp / "endpoints.json"
    ct = threading.Thread(target=run, daemon=True, args=("controller", lambda: ctrl.serve("tcp://127.0.0.1", ready, 300)))
    ct.start()
    while not ready.exists():
        time.sleep(0.02)
    endpoint = json.loads(ready.read_text())["controller"]
    stream = Stream(endpoint, batch_size=256, samples=None, data_timeout_s=30).start()

    # the fuzzed worker, welcomed by a fake controller
    fake = ctx.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    fake.setsockopt(zmq.ROUTER_MANDATORY, 1)
    fake_ep = f"tcp://127.0.0.1:{fake.bind_to_random_port('tcp://127.0.0.1')}"
    fwt = threading.Thread(target=run, daemon=True, args=("fuzzed worker", lambda: worker.serve(
        fake_ep, "fuzzed-w", credits=2, silent_after_s=300)))
    fwt.start()
    space_map = families.default_space(FAMILY).to_mapping()
    wid, _ = _recv_kind(fake, "hello", 20)
    fake.send_multipart([wid, *protocol.encode("welcome", {"family": FAMILY, "space": space_map, "render": {},
                                                           "push": stream.pull_endpoint, "heartbeat_s": 1.0})])
    _recv_kind(fake, "credit", 20)
    rss["ready"] = rss_kib()
    print(f"controller {endpoint}, stream PULL {stream.pull_endpoint}, fake controller {fake_ep}; "
          f"{args.messages:,} malformed messages per socket")

    floods = {}
    with ctx.socket(zmq.DEALER) as d:
        d.setsockopt(zmq.LINGER, 0)
        d.connect(endpoint)
        floods["controller ROUTER"] = flood(d.send_multipart, lambda: ctrl.rejects.total, args.messages, gen)
    rss["after controller flood"] = rss_kib()
    with ctx.socket(zmq.PUSH) as p:
        p.setsockopt(zmq.LINGER, 0)
        p.connect(stream.pull_endpoint)
        floods["stream PULL"] = flood(p.send_multipart, lambda: stream.rejects.total, args.messages, gen)
    rss["after stream flood"] = rss_kib()
    floods["worker DEALER"] = flood(lambda f: fake.send_multipart([wid, *f]), lambda: wrejects.total,
                                    args.messages, gen, window=500, tick=lambda: _drain(fake))
    rss["after worker flood"] = rss_kib()

    # -- afterwards: real traffic ---------------------------------------------------------------
    alive = {"controller ROUTER": ct.is_alive(), "stream PULL": stream._owned.rx is not None and stream._owned.rx.alive(),
             "worker DEALER": fwt.is_alive()}
    space = ParamSpace.from_mapping(space_map)
    params, seeds = space.sample(None, 12345, 256)
    pf, pa = protocol.pack_params(params)
    fake.send_multipart([wid, *protocol.encode("request", {"id": FAKE_ID, "family": FAMILY, "n": 256, **pf},
                                               {"seeds": seeds, **pa})])
    try:
        _, done = _recv_kind(fake, "done", 30)
        fuzzed_worker_ok = done["id"] == FAKE_ID
    except TimeoutError:
        fuzzed_worker_ok = False
    rwt = threading.Thread(target=run, daemon=True, args=("real worker", lambda: worker.serve(
        endpoint, "real-w", credits=2, silent_after_s=30)))
    rwt.start()
    want = set(range(args.requests)) | ({FAKE_ID} if fuzzed_worker_ok else set())
    got: dict[int, int] = {}
    t0 = time.perf_counter()
    e2e_error = None
    try:
        for b in stream.iter_batches():
            assert b.images.dtype == np.uint8 and b.images.shape[1:] == (28, 28), b.images.shape
            assert b.labels.dtype == np.int64 and 0 <= b.labels.min() and b.labels.max() <= 9
            got[b.request_id] = got.get(b.request_id, 0) + len(b.labels)
            if set(got) >= want and all(got[i] == 256 for i in want):
                break
    except Exception as e:
        e2e_error = f"{type(e).__name__}: {e}"
    e2e_s = time.perf_counter() - t0
    # the controller's view before it stops (read from this thread: diagnostics only)
    ctrl_view = {"issued": ctrl.next_id, "delivered": ctrl.delivered, "open": sorted(ctrl.open),
                 "workers": {w.name: {"credits": w.credits, "open": sorted(w.open), "rendered": w.rendered}
                             for w in list(ctrl.workers.values())}}
    stream.close()  # "finished": the controller stops the real worker and returns
    fake.send_multipart([wid, *protocol.encode("stop", {"reason": "fuzz over"})])
    for t in (ct, rwt, fwt):
        t.join(15)
    fake.close()
    rss["after real traffic"] = rss_kib()

    real_ok = (e2e_error is None and all(got.get(i) == 256 for i in range(args.requests))
               and ctrl.delivered_samples == args.requests * 256 and results.get("controller") == 0
               and results.get("real worker") == 0)
    stream_ok = fuzzed_worker_ok and got.get(FAKE_ID) == 256
    serves = {"controller ROUTER": real_ok, "stream PULL": real_ok and stream_ok,
              "worker DEALER": fuzzed_worker_ok and stream_ok and results.get("fuzzed worker") == 0}
    rejected = {"controller ROUTER": ctrl.rejects.total, "stream PULL": stream.rejects.total,
                "worker DEALER": wrejects.total}
    reasons = {"controller ROUTER": dict(ctrl.rejects), "stream PULL": dict(stream.rejects)}

    print()
    print(f"{'socket':<18} {'sent':>9} {'rejected':>9} {'msg/s':>8} {'alive':>6} {'serves after':>13}")
    for name, f in floods.items():
        print(f"{name:<18} {args.messages:>9,} {rejected[name]:>9,} {args.messages / f['seconds']:>8,.0f} "
              f"{'yes' if alive[name] else 'NO':>6} {'yes' if serves[name] else 'NO':>13}")
    print()
    print("generator mix (per socket):", {k: v for k, v in floods['controller ROUTER']['mix'].items()})
    for name, r in reasons.items():
        print(f"{name} rejections by reason: {dict(sorted(r.items()))}")
    print(f"end to end afterwards: {args.requests} real requests controller -> real worker -> stream "
          f"{'OK' if real_ok else 'FAILED'} ({e2e_s:.1f} s); fuzzed worker rendered request {FAKE_ID}: "
          f"{'OK' if stream_ok else 'FAILED'}; stream duplicates {stream.duplicates}"
          + (f"; error {e2e_error}" if e2e_error else ""))
    print(f"thread results: {results}")
    if not real_ok:
        print(f"controller state when the end-to-end check gave up: {ctrl_view}")
    print()
    print("resident memory of this process (controller, stream, both workers, fuzzers):")
    base = rss["ready"]
    for k, v in rss.items():
        print(f"  {k:<24} {v / 1024:8.1f} MiB  ({(v - base) / 1024:+.1f} MiB vs ready)")


if __name__ == "__main__":
    main()
