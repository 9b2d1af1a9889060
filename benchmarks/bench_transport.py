"""Transport throughput: otfgen's validated wire format against a pickle baseline and raw frames.

Two processes (multiprocessing 'spawn') over ipc:// in a temporary directory, PUSH → PULL, the
shape of otfgen's ``batch`` message: B images + labels int64 + seeds uint64 + 14 float32 params.

    otfgen   protocol.encode("batch", ...) + send_multipart(copy=False) →
             recv_multipart(copy=False) + protocol.decode (every check the services run)
    pickle   pickle.dumps(dict of the same arrays) + send(copy=False) → recv(copy=False) + pickle.loads
    raw      the same frames, zero-copy, np.frombuffer with a known layout and no checks (upper bound)

Throughput is measured at the receiver over a few seconds per case; "recv µs" is the receiver's own
time per message inside decode / loads / frombuffer. Both processes compete for the same cores, as a
worker and a trainer on one machine do. Figures only: nothing here asserts a speed.

    python benchmarks/bench_transport.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle  # the *baseline* only: otfgen never unpickles what it receives (DESIGN.md)
import tempfile
import time

import numpy as np
import zmq

from otfgen.blender_gen import protocol

N_PARAMS = 14
END = b"END"
WARMUP = 5
CASES = [("28x28 gray", (256, 28, 28)), ("64x64 RGB", (256, 64, 64, 3))]
METHODS = ["otfgen", "pickle", "raw"]


def make_batch(shape: tuple[int, ...]) -> tuple[dict, dict[str, np.ndarray]]:
    gen = np.random.default_rng(0)
    b = shape[0]
    arrays = {
        "images": gen.integers(0, 256, size=shape, dtype=np.uint8),
        "labels": gen.integers(0, 10, size=b).astype(np.int64),
        "seeds": gen.integers(0, 2**63, size=b, dtype=np.int64).astype(np.uint64),
    }
    pfields, parrays = protocol.pack_params({f"param{i}": gen.random(b, dtype=np.float32) for i in range(N_PARAMS)})
    arrays.update(parrays)
    fields = {"id": 0, "worker": "bench", "family": "mnist2d", "ms": 1.5, **pfields}
    return fields, arrays


def payload_bytes(arrays: dict[str, np.ndarray]) -> int:
    return sum(a.nbytes for a in arrays.values())


# -- sender process -------------------------------------------------------------------------------

def sender(endpoint: str, seconds: float) -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 8)
    push.setsockopt(zmq.LINGER, -1)
    push.connect(endpoint)
    for _, shape in CASES:
        fields, arrays = make_batch(shape)
        raw_header = protocol.encode("batch", fields, arrays)[0]
        raw_frames = [raw_header, *arrays.values()]
        for method in METHODS:
            deadline = time.perf_counter() + seconds
            i = 0
            while time.perf_counter() < deadline or i < WARMUP + 2:
                fields["id"] = i
                if method == "otfgen":
                    push.send_multipart(protocol.encode("batch", fields, arrays), copy=False)
                elif method == "pickle":
                    push.send(pickle.dumps({**fields, **arrays}, protocol=pickle.HIGHEST_PROTOCOL), copy=False)
                else:
                    push.send_multipart(raw_frames, copy=False)
                i += 1
            push.send(END)
    push.close()
    ctx.term()


# -- receiver (this process) ---------------------------------------------------------------------

def receive(pull: zmq.Socket, method: str, shape: tuple[int, ...], layout: list[tuple[str, np.dtype, tuple]]):
    n = 0
    work = 0.0
    t0 = t1 = None
    while True:
        if not pull.poll(30_000):
            raise SystemExit(f"bench_transport: no message for 30 s ({method} {shape})")
        if method == "pickle":
            frame = pull.recv(copy=False)
            if len(frame) == len(END) and frame.bytes == END:
                break
            w0 = time.perf_counter()
            d = pickle.loads(frame.buffer)
            images = d["images"]
        else:
            frames = pull.recv_multipart(copy=False)
            if len(frames) == 1 and frames[0].bytes == END:
                break
            w0 = time.perf_counter()
            if method == "otfgen":
                msg = protocol.decode(frames)
                images = msg.arrays["images"]
            else:  # trusts the layout it was told out of band: nothing checked
                arrs = {name: np.frombuffer(f.buffer, dtype=dt).reshape(shp)
                        for (name, dt, shp), f in zip(layout, frames[1:])}
                images = arrs["images"]
        now = time.perf_counter()
        assert images.shape == shape
        n += 1
        if n == WARMUP:
            t0 = now
        elif n > WARMUP:
            work += now - w0
            t1 = now
    counted = n - WARMUP
    return counted, (t1 - t0), work


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="sending time per case and method")
    args = ap.parse_args()

    results = []
    with tempfile.TemporaryDirectory(prefix="otfgen-bench-") as tmp:
        endpoint = f"ipc://{os.path.join(tmp, 'batches.sock')}"
        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 8)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind(endpoint)
        proc = mp.get_context("spawn").Process(target=sender, args=(endpoint, args.seconds), daemon=True)
        proc.start()
        try:
            for case, shape in CASES:
                _, arrays = make_batch(shape)
                layout = [(k, a.dtype, a.shape) for k, a in arrays.items()]
                nbytes = payload_bytes(arrays)
                for method in METHODS:
                    n, dt, work = receive(pull, method, shape, layout)
                    results.append((case, method, nbytes, n, dt, work))
                    print(f"  {case:11s} {method:7s} {n / dt:9.1f} msg/s", flush=True)
        finally:
            proc.join(30)
            if proc.is_alive():
                proc.terminate()
            pull.close()
            ctx.term()

    print()
    print(f"{'case':11s} {'method':7s} {'payload':>9s} {'msg/s':>9s} {'MB/s':>9s} {'recv µs':>9s} "
          f"{'÷pickle':>8s} {'÷raw':>6s}")
    print("-" * 75)
    for case, _ in CASES:
        rate = {m: n / dt for c, m, _, n, dt, _ in results if c == case}
        for c, m, nbytes, n, dt, work in results:
            if c != case:
                continue
            mbs = n * nbytes / dt / 1e6
            print(f"{c:11s} {m:7s} {nbytes / 1e6:7.3f}MB {rate[m]:9.1f} {mbs:9.1f} {work / n * 1e6:9.1f} "
                  f"{rate[m] / rate['pickle']:8.2f} {rate[m] / rate['raw']:6.2f}")
    print("\nmsg/s and MB/s at the receiver (payload bytes: images, labels, seeds and params); "
          "recv µs: receiver time per message in decode / loads / frombuffer.")


if __name__ == "__main__":
    main()
