"""The wire format: every kind round-trips, anything malformed is a ProtocolError with its reason,
and a controller under a flood of garbage keeps serving real workers and a real trainer."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import zmq

from otfgen.blender_gen import protocol
from otfgen.blender_gen.protocol import ProtocolError

# -- valid messages of every kind -------------------------------------------------------------

def valid(kind: str) -> tuple[dict, dict]:
    return protocol.example(kind, n=4)


def assert_same(msg: protocol.Message, kind: str, fields: dict, arrays: dict) -> None:
    assert msg.kind == kind
    assert msg.fields == fields
    assert set(msg.arrays) == set(arrays)
    for name, a in arrays.items():
        got = msg.arrays[name]
        assert got.dtype == a.dtype and got.shape == a.shape, name
        assert got.tobytes() == np.ascontiguousarray(a).tobytes(), name


@pytest.mark.parametrize("kind", sorted(protocol.SCHEMA))
def test_round_trip_every_kind(kind):
    fields, arrays = valid(kind)
    frames = protocol.encode(kind, fields, arrays)
    assert len(frames) == 1 + len(arrays)
    assert_same(protocol.decode([bytes(memoryview(f)) for f in frames]), kind, fields, arrays)
    assert_same(protocol.decode(frames), kind, fields, arrays)  # buffers as they are, unsent


def test_round_trip_every_dtype_and_awkward_shapes():
    rng = np.random.default_rng(0)
    arrays = {}
    for dt in sorted(protocol.DTYPES):
        raw = rng.integers(0, 256, size=24, dtype=np.uint8)
        arrays[dt] = raw.view(np.uint8).astype(bool) if dt == "bool" else raw.view(dt)
    arrays["empty"] = np.zeros((0, 28, 28), dtype=np.uint8)
    arrays["scalar"] = np.array(3.5, dtype=np.float64)
    arrays["strided"] = np.arange(60, dtype=np.int32).reshape(6, 10)[::2, ::3]  # not contiguous
    arrays["fortran"] = np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4))
    arrays["six_dims"] = np.ones((1, 2, 1, 2, 1, 2), dtype=np.uint16)
    msg = protocol.decode([bytes(memoryview(f)) for f in protocol.encode("heartbeat", {}, arrays)])
    for name, a in arrays.items():
        np.testing.assert_array_equal(msg.arrays[name], a)
        assert msg.arrays[name].dtype == a.dtype, name


def test_big_endian_arrays_keep_their_values():
    a = np.arange(5, dtype=">i4")
    msg = protocol.decode([bytes(memoryview(f)) for f in protocol.encode("heartbeat", {}, {"a": a})])
    np.testing.assert_array_equal(msg.arrays["a"], a)


def test_params_helpers_round_trip():
    fields, arrays = valid("request")
    msg = protocol.decode(protocol.encode("request", fields, arrays))
    assert set(protocol.params_of(msg)) == {"label", "slant"}
    np.testing.assert_array_equal(protocol.params_of(msg)["slant"], np.linspace(-0.3, 0.6, 4, dtype=np.float32))
    np.testing.assert_array_equal(protocol.params_of(msg)["label"], [0, 1, 2, 3])


@pytest.mark.parametrize("endpoint", ["inproc://otfgen-test-protocol", "ipc"])
def test_round_trip_over_zmq_zero_copy(endpoint, tmp_path):
    if endpoint == "ipc":
        endpoint = f"ipc://{tmp_path}/p.sock"
    ctx = zmq.Context.instance()
    with ctx.socket(zmq.PAIR) as a, ctx.socket(zmq.PAIR) as b:
        for s in (a, b):
            s.setsockopt(zmq.LINGER, 0)
        a.bind(endpoint)
        b.connect(endpoint)
        for kind in sorted(protocol.SCHEMA):
            fields, arrays = valid(kind)
            a.send_multipart(protocol.encode(kind, fields, arrays), copy=False)
            assert b.poll(5000), f"{kind} never arrived"
            frames = b.recv_multipart(copy=False)
            assert all(isinstance(f, zmq.Frame) for f in frames)
            assert_same(protocol.decode(frames), kind, fields, arrays)


def test_encode_refuses_what_decode_would_reject():
    with pytest.raises(ProtocolError) as e:
        protocol.encode("heartbeat", {}, {"x": np.array([1, None], dtype=object)})
    assert e.value.reason == "dtype"
    with pytest.raises(ProtocolError) as e:
        protocol.encode("heartbeat", {}, {"x": np.array(["abcd"])})
    assert e.value.reason == "dtype"
    with pytest.raises(ProtocolError) as e:
        protocol.encode("nonsense")
    assert e.value.reason == "kind"
    with pytest.raises(ProtocolError) as e:
        protocol.encode("credit", {"n": True})
    assert e.value.reason == "bad_field"
    with pytest.raises(ProtocolError) as e:
        protocol.encode("request", {"id": 1, "family": "f", "n": 1, "rank": 0, "param_names": []})
    assert e.value.reason == "missing_array"
    with pytest.raises(ValueError):  # a NaN never leaves: the header is strict JSON
        protocol.encode("done", {"id": 1, "ms": float("nan")})


# -- rejections, each with its reason -----------------------------------------------------------

def header(kind="credit", arrays=(), v=protocol.VERSION, **fields) -> bytes:
    if kind == "credit" and not fields:
        fields = {"n": 1}
    return json.dumps({"v": v, "kind": kind, **fields, "arrays": list(arrays)}).encode()


def desc(name="a", dtype="uint8", shape=(4,)) -> dict:
    return {"name": name, "dtype": dtype, "shape": list(shape)}


def reject(frames, reason: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as e:
        protocol.decode(frames)
    assert e.value.reason == reason, str(e.value)
    return e.value


def test_valid_baseline_of_the_rejection_cases():
    # the rejection cases below differ from this accepted message in one thing each
    msg = protocol.decode([header(arrays=[desc()]), b"abcd"])
    assert msg.kind == "credit" and msg["n"] == 1 and msg.arrays["a"].tobytes() == b"abcd"


def test_truncated_array_frame():
    reject([header(arrays=[desc()]), b"abc"], "length")
    frames = [bytes(memoryview(f)) for f in protocol.encode("batch", *valid("batch"))]
    frames[2] = frames[2][:-1]
    reject(frames, "length")


def test_frame_too_long_for_its_shape():
    reject([header(arrays=[desc(dtype="float32", shape=(2, 2))]), bytes(17)], "length")


def test_extra_and_missing_frames():
    reject([header(arrays=[desc()]), b"abcd", b"more"], "frame_count")
    reject([header(arrays=[desc(), desc("b")]), b"abcd"], "frame_count")
    reject([header(), b"stray"], "frame_count")
    reject([], "empty")
    reject([header()] + [b""] * (protocol.MAX_ARRAYS + 1), "too_many_frames")


def test_oversized_header():
    big = header(pad="x" * protocol.MAX_HEADER_BYTES)
    assert len(big) > protocol.MAX_HEADER_BYTES
    err = reject([big], "oversized")
    assert str(protocol.MAX_HEADER_BYTES) in str(err)


def test_message_over_max_message_bytes(monkeypatch):
    monkeypatch.setattr(protocol, "MAX_MESSAGE_BYTES", 1000)
    ok = protocol.decode([header(arrays=[desc(shape=(500,))]), bytes(500)])
    assert ok.arrays["a"].shape == (500,)
    reject([header(arrays=[desc(shape=(999,))]), bytes(999)], "oversized")
    reject([header(arrays=[desc(shape=(600,)), desc("b", shape=(600,))]), bytes(600), bytes(600)], "oversized")


@pytest.mark.parametrize("dtype", ["object", "<U4", "O", "S4", "V8", "complex128", "datetime64[s]",
                                   "<i4", ">f4", "float128", 7, None, ["uint8"]])
def test_wrong_dtype(dtype):
    reject([header(arrays=[desc(dtype=dtype)]), b"abcd"], "dtype")


@pytest.mark.parametrize("v", [0, 2, "1", None, [1]])
def test_wrong_version(v):
    reject([header(v=v)], "version")


def test_missing_version():
    reject([json.dumps({"kind": "credit", "n": 1}).encode()], "version")


@pytest.mark.parametrize("kind", ["nonsense", "", None, 3, ["batch"], "BATCH"])
def test_unknown_kind(kind):
    reject([header(kind=kind, n=1)], "kind")


def test_missing_required_field():
    reject([header("credit", x=1)], "bad_field")
    reject([header("batch", id=1, worker="w", family="f")], "bad_field")  # no ms


@pytest.mark.parametrize("kind, fields", [
    ("credit", {"n": True}),            # bool is an int in Python, not on this wire
    ("credit", {"n": False}),
    ("credit", {"n": 1.0}),
    ("credit", {"n": "1"}),
    ("credit", {"n": None}),
    ("done", {"id": 1, "ms": True}),
    ("done", {"id": 1, "ms": "3"}),
    ("hello", {"worker": 5, "pid": 1}),
    ("welcome", {"family": "f", "space": [], "render": {}, "push": "p", "heartbeat_s": 1}),
    ("metrics", {"metrics": "acc=1"}),
])
def test_wrong_field_type(kind, fields):
    err = reject([header(kind, **fields)], "bad_field")
    assert kind in str(err)


def test_missing_required_array():
    fields, arrays = valid("batch")
    del arrays["labels"]
    descs = [desc(k, a.dtype.name, a.shape) for k, a in arrays.items()]
    reject([header("batch", descs, **fields), *[a.tobytes() for a in arrays.values()]], "missing_array")


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_nan_in_header(bad):
    raw = b'{"v":1,"kind":"done","id":1,"ms":%s,"arrays":[]}' % bad.encode()
    reject([raw], "bad_header")


@pytest.mark.parametrize("raw", [b'\xff\xfe{"v":1}', b'{"v":1,"kind":"stop","reason":"\xc3\x28"}', b"\x80"])
def test_non_utf8_header(raw):
    reject([raw], "bad_header")


@pytest.mark.parametrize("raw", [b"", b"[]", b"1", b'"credit"', b"null", b"{", b'{"v":1}{}'])
def test_header_not_a_json_object(raw):
    reject([raw], "bad_header")


@pytest.mark.parametrize("d", [
    "a", [], {"name": "a", "dtype": "uint8"}, {"name": "a", "dtype": "uint8", "shape": [4], "x": 1},
    {"name": "", "dtype": "uint8", "shape": [4]}, {"name": "a" * (protocol.MAX_NAME + 1), "dtype": "uint8", "shape": [4]},
    {"name": 3, "dtype": "uint8", "shape": [4]}, {"name": "a", "dtype": "uint8", "shape": 4},
    {"name": "a", "dtype": "uint8", "shape": [-4]}, {"name": "a", "dtype": "uint8", "shape": [4.0]},
    {"name": "a", "dtype": "uint8", "shape": [True] * 4}, {"name": "a", "dtype": "uint8", "shape": [1] * 7},
    {"name": "a", "dtype": "uint8", "shape": [2 ** 40]},
])
def test_bad_array_description(d):
    reject([header(arrays=[d]), b"abcd"], "bad_array")


def test_repeated_array_name():
    reject([header(arrays=[desc(), desc()]), b"abcd", b"abcd"], "bad_array")


def test_arrays_not_a_list():
    reject([header(arrays=[]).replace(b'"arrays":[]', b'"arrays":{"a":1}'), b"x"], "frame_count")


def test_huge_declared_shape_is_rejected_before_any_allocation():
    # the declared size alone (2^123 bytes) is refused, whatever the frame holds
    reject([header(arrays=[desc(dtype="float64", shape=[1 << 20] * 6)]), b"abcdefgh"], "bad_array")


def test_empty_array_with_an_impossible_shape_is_rejected():
    # zero bytes match a zero-size frame, but numpy cannot even describe this shape (hypothesis found it)
    reject([header(kind="delivered", id=3, samples=0, arrays=[desc(name="losses", dtype="float32",
                                                     shape=[0, 3, 41895, 561025, 32701229])]), b""], "bad_array")


def test_deeply_nested_header_is_a_protocol_error():
    raw = b'{"v":1,"kind":"metrics","metrics":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_001
    reject([raw], "too_deep")  # its own reason: the catch-all "malformed" is what the fuzz tests call a bug


def _mutations(gen: np.random.Generator, n: int):
    """Valid messages with random damage: byte flips, cuts, swapped, dropped or extra frames."""
    kinds = sorted(protocol.SCHEMA)
    for _ in range(n):
        kind = kinds[gen.integers(len(kinds))]
        frames = [bytearray(memoryview(f)) for f in protocol.encode(kind, *valid(kind))]
        op = gen.integers(5)
        i = int(gen.integers(len(frames)))
        if op == 0 and frames[i]:
            for _ in range(int(gen.integers(1, 4))):
                frames[i][gen.integers(len(frames[i]))] = int(gen.integers(256))
        elif op == 1:
            frames[i] = frames[i][: gen.integers(len(frames[i]) + 1)]
        elif op == 2 and len(frames) > 1:
            del frames[i]
        elif op == 3:
            frames.insert(i, bytearray(gen.bytes(int(gen.integers(0, 64)))))
        else:
            j = int(gen.integers(len(frames)))
            frames[i], frames[j] = frames[j], frames[i]
        yield [bytes(f) for f in frames]


def test_random_messages_raise_protocol_error_only():
    gen = np.random.default_rng(20240601)
    reasons = protocol.RejectCounter()
    for _ in range(2000):
        n_frames = int(gen.integers(1, 6))
        frames = [gen.bytes(int(gen.integers(0, 300))) for _ in range(n_frames)]
        if gen.random() < 0.3:  # make the header start like JSON so the fuzz reaches further
            frames[0] = b'{"v":1,"kind":"' + frames[0]
        try:
            protocol.decode(frames)
        except ProtocolError as e:
            reasons.add(e)
        else:
            pytest.fail(f"random bytes decoded: {frames!r:.200}")
    assert reasons.total == 2000
    accepted = 0
    for frames in _mutations(gen, 1000):
        try:
            msg = protocol.decode(frames)
        except ProtocolError as e:
            reasons.add(e)
        else:  # damage in a payload byte is not detectable; the message must still be well-formed
            accepted += 1
            assert msg.kind in protocol.KINDS
    assert reasons.total + accepted == 3000
    assert reasons["malformed"] == 0, f"a check let an unexpected exception through: {dict(reasons)}"


def test_reject_counter_counts_by_reason():
    c = protocol.RejectCounter()
    for frames in ([], [b"{"], [b"{"], [header(v=2)]):
        try:
            protocol.decode(frames)
        except ProtocolError as e:
            c.add(e)
    assert c == {"empty": 1, "bad_header": 2, "version": 1} and c.total == 4


# -- a controller under a flood of garbage keeps serving ------------------------------------------

def malformed_messages(n: int) -> list[list[bytes]]:
    gen = np.random.default_rng(7)
    fixed = [
        [header(arrays=[desc()]), b"abc"],
        [header(arrays=[desc()]), b"abcd", b"extra"],
        [header(arrays=[desc(), desc("b")]), b"abcd"],
        [header(v=2)],
        [header(kind="nonsense")],
        [header("credit")[:-1]],
        [header("credit", n=True)],
        [header("done", id=1)],
        [b'{"v":1,"kind":"done","id":1,"ms":NaN,"arrays":[]}'],
        [b"\xff\xfe\xfd"],
        [header(arrays=[desc(dtype="object")]), b"abcd"],
        [header(arrays=[desc(dtype="<U4")]), b"abcd"],
        [header(pad="x" * protocol.MAX_HEADER_BYTES)],
        [header("request", id=0, family="mnist2d", n=1)],  # no seeds array
        [header("trainer", pull=5)],
        [b""],
    ]
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(fixed[(i // 2) % len(fixed)])
        else:
            out.append([gen.bytes(int(gen.integers(1, 200))) for _ in range(int(gen.integers(1, 4)))])
    return out


def _wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_controller_keeps_serving_under_malformed_flood(tmp_path):
    from otfgen.blender_gen import worker
    from otfgen.controller.config import compose, with_run_dir
    from otfgen.controller.server import Controller
    from otfgen.trainer.stream import Stream

    cfg = with_run_dir(compose(["budget.samples=512", "controller.request_size=256"]), tmp_path)
    ctrl = Controller(cfg, tmp_path)
    ready = tmp_path / "endpoints.json"
    results: dict[str, object] = {}

    def run(name, fn):
        try:
            results[name] = fn()
        except BaseException as e:  # surfaced by the assertions below
            results[name] = e

    ct = threading.Thread(target=run, daemon=True, name="test-controller",
                          args=("controller", lambda: ctrl.serve("tcp://127.0.0.1", ready, idle_timeout_s=30)))
    ct.start()
    wt = None
    stream = None
    try:
        _wait_for(lambda: ready.exists() or not ct.is_alive(), 20, "the controller's ready file")
        endpoint = json.loads(ready.read_text())["controller"]
        assert endpoint.startswith("tcp://127.0.0.1:")

        flood = malformed_messages(500)
        with zmq.Context.instance().socket(zmq.DEALER) as attacker:
            attacker.setsockopt(zmq.LINGER, 0)
            attacker.setsockopt(zmq.SNDTIMEO, 5000)
            attacker.connect(endpoint)
            for frames in flood:
                attacker.send_multipart(frames)
            _wait_for(lambda: ctrl.rejects.total >= len(flood) or not ct.is_alive(), 20, "the flood to be read")
            assert attacker.poll(0) == 0  # garbage gets no answer

        wt = threading.Thread(target=run, daemon=True, name="test-worker",
                              args=("worker", lambda: worker.serve(endpoint, "w0", credits=2, silent_after_s=20)))
        wt.start()
        stream = Stream(endpoint, batch_size=128, samples=512, data_timeout_s=20)
        got = 0
        ids = set()
        for b in stream.iter_batches():
            assert b.images.dtype == np.uint8 and b.images.shape[1:] == (28, 28)
            got += len(b.labels)
            assert b.labels.dtype == np.int64 and b.labels.min() >= 0 and b.labels.max() <= 9
            ids.add(b.request_id)
        assert got == 512 and ids == {0, 1}
        assert stream.rejects.total == 0
    finally:
        if stream is not None:
            stream.close()  # sends "finished": the controller stops its workers and returns
        ct.join(15)
        if wt is not None:
            wt.join(15)
    assert not ct.is_alive(), "controller did not stop"
    assert wt is not None and not wt.is_alive(), "worker did not stop"
    assert results.get("controller") == 0, results
    assert results.get("worker") == 0, results
    assert ctrl.rejects.total >= 500, dict(ctrl.rejects)
    assert ctrl.ledger.delivered_samples == 512 and ctrl.ledger.reissued == 0
    assert len((tmp_path / "params.jsonl").read_text().splitlines()) >= 2
