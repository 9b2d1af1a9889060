"""Property tests of protocol.decode: whatever the frames, it returns a well-formed Message or raises
ProtocolError, never anything else; and encode -> decode round-trips every whitelisted dtype."""

from __future__ import annotations

import json

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from otfgen.blender_gen import protocol  # noqa: E402
from otfgen.blender_gen.protocol import ProtocolError  # noqa: E402

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_decode(frames) -> protocol.Message | None:
    """The property: a Message whose arrays match their frames byte for byte, or a ProtocolError."""
    try:
        msg = protocol.decode(frames)
    except ProtocolError as e:
        assert e.reason != "malformed", f"an unexpected exception reached the catch-all: {e}"
        return None
    assert isinstance(msg, protocol.Message) and msg.kind in protocol.KINDS
    assert len(msg.arrays) == len(frames) - 1
    for a, frame in zip(msg.arrays.values(), frames[1:]):
        assert isinstance(a, np.ndarray)
        assert a.nbytes == len(frame)
        assert a.dtype.name in protocol.DTYPES or a.dtype == np.bool_
        assert a.tobytes() == bytes(frame)
    return msg


# -- arbitrary frames ----------------------------------------------------------------------------

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
_json = st.recursive(_json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                     max_leaves=12)
_descs = st.lists(st.fixed_dictionaries({
    "name": st.text(max_size=5) | st.integers(),
    "dtype": st.sampled_from(sorted(protocol.DTYPES) + ["object", "<U4", "complex64", ">f8", ""]) | _json_scalars,
    "shape": st.lists(st.integers(-2, 6), max_size=4) | _json_scalars}), max_size=3)


@st.composite
def headerish(draw) -> bytes:
    """Headers that get past JSON parsing: a known or unknown kind, right or wrong fields and arrays."""
    kind = draw(st.sampled_from(sorted(protocol.KINDS)) | st.text(max_size=6) | _json_scalars)
    obj = {"v": draw(st.sampled_from([1, 1, 1, 0, 2, "1", None, 1.0, True])), "kind": kind}
    if isinstance(kind, str) and kind in protocol.SCHEMA:
        for key in protocol.SCHEMA[kind][0]:
            if draw(st.booleans()):
                obj[key] = draw(_json)
    obj.update(draw(st.dictionaries(st.text(max_size=6), _json, max_size=3)))
    if draw(st.booleans()):
        obj["arrays"] = draw(_descs)
    return json.dumps(obj).encode()


@FAST
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_arbitrary_frames(frames):
    check_decode(frames)


@FAST
@given(headerish(), st.lists(st.binary(max_size=64), max_size=4))
def test_arbitrary_json_headers(head, bufs):
    check_decode([head, *bufs])


# -- valid messages, then one mutation -----------------------------------------------------------

def _valid_frames(kind: str, n: int) -> list[bytes]:
    fields, arrays = protocol.example(kind, n=max(n, 1) if kind == "request" else n)
    return [bytes(memoryview(f)) for f in protocol.encode(kind, fields, arrays)]


_MUTATIONS = ["truncate", "extend", "flip_header", "dtype", "shape", "version", "drop_frame", "add_frame"]


@FAST
@given(st.sampled_from(sorted(protocol.KINDS)), st.integers(0, 6), st.sampled_from(_MUTATIONS), st.data())
def test_mutated_valid_messages(kind, n, mutation, data):
    frames = _valid_frames(kind, n)
    assert check_decode(frames) is not None  # the baseline is valid
    head = json.loads(frames[0])
    if mutation in ("truncate", "extend"):
        if len(frames) == 1:
            frames.append(b"")
        i = data.draw(st.integers(1, len(frames) - 1))
        if mutation == "truncate":
            frames[i] = frames[i][: data.draw(st.integers(0, len(frames[i])))]
        else:
            frames[i] = frames[i] + data.draw(st.binary(min_size=1, max_size=16))
    elif mutation == "flip_header":
        raw = bytearray(frames[0])
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        frames[0] = bytes(raw)
    elif mutation in ("dtype", "shape") and head["arrays"]:
        d = head["arrays"][data.draw(st.integers(0, len(head["arrays"]) - 1))]
        if mutation == "dtype":
            d["dtype"] = data.draw(st.sampled_from(sorted(protocol.DTYPES) + ["object", "float128", "<i8"]))
        else:
            d["shape"] = data.draw(st.lists(st.integers(0, 8) | st.integers(-1, 1 << 40), max_size=7))
        frames[0] = json.dumps(head).encode()
    elif mutation == "version":
        head["v"] = data.draw(st.sampled_from([0, 2, -1, "1", None, 1.5, 1 << 64]))
        frames[0] = json.dumps(head).encode()
        with pytest.raises(ProtocolError) as e:
            protocol.decode(frames)
        assert e.value.reason == "version"
        return
    elif mutation == "drop_frame" and len(frames) > 1:
        del frames[data.draw(st.integers(1, len(frames) - 1))]
    else:
        frames.insert(data.draw(st.integers(1, len(frames))), data.draw(st.binary(max_size=32)))
    check_decode(frames)


# -- round trips ---------------------------------------------------------------------------------

@st.composite
def arrays(draw) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(sorted(protocol.DTYPES))))
    # ndim >= 1: a 0-d array comes back as shape (1,), see test_zero_d_array_keeps_its_shape
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=protocol.MAX_NDIM)))
    raw = draw(st.binary(min_size=int(np.prod(shape, dtype=np.int64)) * dtype.itemsize,
                         max_size=int(np.prod(shape, dtype=np.int64)) * dtype.itemsize))
    a = np.frombuffer(raw, dtype=np.uint8).view(dtype) if dtype != np.bool_ else np.frombuffer(raw, np.uint8) > 127
    a = a.reshape(shape)
    if draw(st.booleans()) and a.ndim >= 2:
        a = a.T  # not C-contiguous: encode must copy
    if draw(st.booleans()) and a.dtype.itemsize > 1:
        a = a.astype(a.dtype.newbyteorder(">"))  # encode sends native order
    return a


@FAST
@given(st.dictionaries(st.text(min_size=1, max_size=protocol.MAX_NAME).filter(lambda s: s not in ("losses", "signal")),
                       arrays(), max_size=5),
       st.integers(-(1 << 62), 1 << 62))
def test_round_trip_random_arrays(named, rid):
    named = {"losses": np.zeros(2, np.float32), **named}
    frames = protocol.encode("delivered", {"id": rid, "samples": 2}, named)
    msg = check_decode([bytes(memoryview(f)) for f in frames])
    assert msg is not None and msg.kind == "delivered" and msg["id"] == rid
    assert list(msg.arrays) == list(named)
    for name, a in named.items():
        got = msg.arrays[name]
        assert got.shape == a.shape and got.dtype == a.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got, a)  # NaNs compare equal here, and -0.0 == 0.0 (bytes checked above)


def test_zero_d_array_keeps_its_shape():
    frames = protocol.encode("heartbeat", {}, {"scalar": np.array(3.5)})
    assert protocol.decode([bytes(memoryview(f)) for f in frames]).arrays["scalar"].shape == ()
