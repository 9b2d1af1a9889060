"""The wire format, in one place: multipart messages of a JSON header and raw array frames.

Frame 0 is a UTF-8 JSON object: ``{"v": 1, "kind": ..., <kind's fields>, "arrays": [{"name",
"dtype", "shape"}, ...]}``; frame i+1 holds array i's bytes, C order, sent zero-copy. Decoding
trusts nothing: it checks the version, the kind, each field's type, the dtype whitelist, that
shape × itemsize equals the frame's length, and size limits, and raises ``ProtocolError``
(with a short ``reason`` for counters) on anything else. Only JSON and raw arrays are ever
decoded: a data service must not execute what it receives (cf. pyzmq's examples/serialization,
minus its generic Python-object helper).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

VERSION = 1
MAX_HEADER_BYTES = 1 << 20  # the action of a policy over many bins still fits easily
MAX_ARRAYS = 128
MAX_NDIM = 6
MAX_NAME = 64
MAX_MESSAGE_BYTES = 1 << 30  # 1 GiB: e.g. 4,096 RGB 256×256 images; bounded so no peer exhausts memory
# per-frame limit that libzmq enforces before allocating (a larger frame disconnects the peer):
# control sockets carry requests, credits, losses — never images
MAX_CONTROL_FRAME_BYTES = 64 << 20
DTYPES = frozenset({"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                    "float16", "float32", "float64", "bool"})

_NAME_OF = {np.dtype(n): n for n in DTYPES}  # dtype.name is slow in numpy 2; a dict lookup is not
_DTYPE_OF = {n: np.dtype(n) for n in DTYPES}

# Every field and array of every message, here and nowhere else. Per kind:
#   SCHEMA[kind] = (required fields with their JSON types, required array names)
#   ARRAYS[kind] = array name -> (dtype, allowed ndims), of required and optional arrays
#   _CHECKS[kind] = what ties fields and arrays together (lengths, ranges, list elements)
# Receivers read a decoded message without checking it again.
_INT = (int,)
_NUM = (int, float)
_STR = (str,)
_DICT = (dict,)
_LIST = (list,)
_BOOL = (bool,)
MAX_RANKS = 1024
SCHEMA: dict[str, tuple[dict[str, tuple], frozenset[str]]] = {
    # worker -> controller
    "hello": ({"worker": _STR, "pid": _INT}, frozenset()),
    "credit": ({"n": _INT}, frozenset()),
    "done": ({"id": _INT, "ms": _NUM}, frozenset()),
    "failed": ({"id": _INT, "error": _STR}, frozenset()),
    "heartbeat": ({}, frozenset()),
    # controller -> worker; push: the PULL endpoint of each trainer rank, in rank order
    "welcome": ({"family": _STR, "space": _DICT, "render": _DICT, "push": _LIST, "heartbeat_s": _NUM}, frozenset()),
    "request": ({"id": _INT, "family": _STR, "n": _INT, "rank": _INT, "param_names": _LIST},
                frozenset({"seeds", "params"})),
    "stop": ({"reason": _STR}, frozenset()),
    # worker -> trainer
    "batch": ({"id": _INT, "worker": _STR, "family": _STR, "ms": _NUM}, frozenset({"images", "labels"})),
    # trainer -> controller
    "trainer": ({"pull": _STR, "rank": _INT, "world": _INT}, frozenset()),
    # one per request the trainer consumed, with its per-sample losses (and the per-sample signal
    # the controller's info asked for, measured against the real reward split) if the loop reported them
    "delivered": ({"id": _INT, "samples": _INT}, frozenset()),
    "metrics": ({"metrics": _DICT}, frozenset()),
    "finished": ({"samples": _INT}, frozenset()),
    # controller -> trainer: everything the trainer must know about the run's family and policy
    "info": ({"family": _STR, "space": _DICT, "num_classes": _INT, "image_shape": _LIST, "label_param": _STR,
              "signal": _STR}, frozenset()),
}
ARRAYS: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {
    "request": {"seeds": ("uint64", (1,)), "params": ("float64", (2,))},
    "batch": {"images": ("uint8", (3, 4)), "labels": ("int64", (1,))},
    "delivered": {"losses": ("float32", (1,)), "signal": ("float32", (1,))},
}


def _check_request(f, a):
    n = f["n"]
    if not 0 < n or a["seeds"].shape != (n,) or a["params"].shape[1:] != (n,):
        raise ProtocolError("bad_array", f"request: seeds {list(a['seeds'].shape)} and params "
                            f"{list(a['params'].shape)} do not hold n={n} samples")
    if not 0 <= f["rank"] < MAX_RANKS:
        raise ProtocolError("bad_field", f"request: rank {f['rank']} outside [0, {MAX_RANKS})")


def _check_batch(f, a):
    n = a["labels"].shape[0]
    if a["images"].shape[0] != n:
        raise ProtocolError("bad_batch", f"images {list(a['images'].shape)} for {n} labels")


def _check_welcome(f, a):
    push = f["push"]
    if not 0 < len(push) <= MAX_RANKS or not all(isinstance(p, str) and p for p in push):
        raise ProtocolError("bad_field", f"welcome: 'push' must list 1 to {MAX_RANKS} endpoints")


def _check_trainer(f, a):
    if not 0 <= f["rank"] < f["world"] <= MAX_RANKS:
        raise ProtocolError("bad_field", f"trainer: rank {f['rank']} of world {f['world']}")


def _check_delivered(f, a):
    for name in ("losses", "signal"):
        if name in a and a[name].shape != (f["samples"],):
            raise ProtocolError("bad_array", f"delivered: {name} {list(a[name].shape)} for {f['samples']} samples")
    if "signal" in a and "losses" not in a:
        raise ProtocolError("missing_array", "delivered: signal without losses")


# the one list of what a policy may ask the trainer to compute per sample: a policy names one
# (controller.policies), the trainer's judges compute each (trainer.judges)
SIGNALS = ("none", "feature_distance", "grad_alignment", "realism", "reducible_loss")


def _check_info(f, a):
    if f["signal"] not in SIGNALS:
        raise ProtocolError("bad_field", f"info: signal {str(f['signal'])[:40]!r} not one of {list(SIGNALS)}")
    shape = f["image_shape"]
    if not 2 <= len(shape) <= 3 or not all(type(s) is int and 0 < s <= 65536 for s in shape):
        raise ProtocolError("bad_field", f"info: image_shape {str(shape)[:40]} is not 2 or 3 positive sizes")
    if not 0 < f["num_classes"] <= 1 << 20:
        raise ProtocolError("bad_field", f"info: num_classes {f['num_classes']}")


_CHECKS = {"request": _check_request, "batch": _check_batch, "welcome": _check_welcome, "trainer": _check_trainer,
           "delivered": _check_delivered, "info": _check_info}
KINDS = frozenset(SCHEMA)


class ProtocolError(ValueError):
    """A message that does not follow the wire format; ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class Message:
    kind: str
    fields: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-finite number {name}")


def encode(kind: str, fields: Mapping[str, Any] | None = None,
           arrays: Mapping[str, np.ndarray] | None = None) -> list:
    """Build the frames of a message: [header bytes, array buffers...]. Send with copy=False."""
    fields = dict(fields or {})
    arrays = arrays or {}
    # the sender fails loudly on what a receiver would reject
    _check_fields(kind, fields, set(arrays))
    _check_arrays(kind, fields, {k: np.asarray(v) for k, v in arrays.items()})
    descs, bufs = [], []
    for name, a in arrays.items():
        a = np.asarray(a)
        a = a if a.flags.c_contiguous else np.ascontiguousarray(a)  # (ascontiguousarray makes 0-d 1-d)
        a = a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))  # dtype.name drops the byte order
        dname = _NAME_OF.get(a.dtype)
        if dname is None:
            raise ProtocolError("dtype", f"array '{name}' has dtype {a.dtype} outside {sorted(DTYPES)}")
        descs.append({"name": name, "dtype": dname, "shape": list(a.shape)})
        bufs.append(a if a.nbytes else b"")
    header = {"v": VERSION, "kind": kind, **fields, "arrays": descs}
    return [json.dumps(header, separators=(",", ":"), allow_nan=False).encode()] + bufs


def _buffer(frame) -> memoryview:
    """bytes, a zmq.Frame (copy=False), or any buffer -> memoryview."""
    buf = getattr(frame, "buffer", frame)
    return memoryview(buf)


def decode(frames: Sequence) -> Message:
    """Validate and decode a multipart message; raises ProtocolError, never anything else."""
    try:
        return _decode(frames)
    except ProtocolError:
        raise
    except Exception as e:  # defensive: any surprise is still a rejection, not a crash
        raise ProtocolError("malformed", f"{type(e).__name__}: {e}") from None


def _decode(frames: Sequence) -> Message:
    if not frames:
        raise ProtocolError("empty", "no frames")
    if len(frames) > MAX_ARRAYS + 1:
        raise ProtocolError("too_many_frames", f"{len(frames)} frames > {MAX_ARRAYS + 1}")
    head = _buffer(frames[0])
    if head.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError("oversized", f"header of {head.nbytes} bytes > {MAX_HEADER_BYTES}")
    try:
        header = json.loads(head.tobytes().decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError("bad_header", f"header is not JSON: {e}") from None
    except RecursionError:  # e.g. {"a":{"a":... 100,000 deep: a hostile header, not a surprise
        raise ProtocolError("too_deep", "header nests deeper than the JSON parser's recursion limit") from None
    if not isinstance(header, dict):
        raise ProtocolError("bad_header", "header is not a JSON object")
    v = header.pop("v", None)
    if v != VERSION:
        raise ProtocolError("version", f"version {v!r}, this build speaks {VERSION}")
    kind = header.pop("kind", None)
    if not isinstance(kind, str) or kind not in KINDS:  # a list or dict kind is unhashable
        raise ProtocolError("kind", f"unknown kind {kind!r}")
    descs = header.pop("arrays", [])
    if not isinstance(descs, list) or len(descs) != len(frames) - 1:
        raise ProtocolError("frame_count", f"header lists {len(descs) if isinstance(descs, list) else '?'} arrays, "
                            f"message has {len(frames) - 1} array frames")
    arrays: dict[str, np.ndarray] = {}
    total = head.nbytes
    for desc, frame in zip(descs, frames[1:]):
        name, dtype, shape = _check_desc(desc, arrays)
        buf = _buffer(frame)
        total += buf.nbytes
        if total > MAX_MESSAGE_BYTES:
            raise ProtocolError("oversized", f"message exceeds {MAX_MESSAGE_BYTES} bytes")
        expected = math.prod(shape) * dtype.itemsize
        if buf.nbytes != expected:
            raise ProtocolError("length", f"array '{name}': frame has {buf.nbytes} bytes, "
                                f"{dtype.name}{shape} needs {expected}")
        arrays[name] = np.frombuffer(buf, dtype=dtype).reshape(shape)
    _check_fields(kind, header, set(arrays))
    _check_arrays(kind, header, arrays)
    return Message(kind, header, arrays)


def _check_desc(desc: Any, seen: Mapping[str, Any]) -> tuple[str, np.dtype, tuple[int, ...]]:
    if not isinstance(desc, dict) or set(desc) != {"name", "dtype", "shape"}:
        raise ProtocolError("bad_array", f"array description {str(desc)[:80]!r} needs exactly name, dtype, shape")
    name, dtype, shape = desc["name"], desc["dtype"], desc["shape"]
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or name in seen:
        raise ProtocolError("bad_array", f"array name {str(name)[:80]!r} empty, too long or repeated")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ProtocolError("dtype", f"array '{name}': dtype {str(dtype)[:40]!r} not in {sorted(DTYPES)}")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(type(s) is int and 0 <= s <= MAX_MESSAGE_BYTES for s in shape)):
        raise ProtocolError("bad_array", f"array '{name}': shape {str(shape)[:80]} is not a list of <= {MAX_NDIM} sizes")
    # an empty array may not hide an impossible shape: numpy refuses [0, 3, 41895, 561025, 32701229]
    if math.prod(s for s in shape if s) * _DTYPE_OF[dtype].itemsize > MAX_MESSAGE_BYTES:
        raise ProtocolError("bad_array", f"array '{name}': shape {str(shape)[:80]} exceeds {MAX_MESSAGE_BYTES} bytes")
    return name, _DTYPE_OF[dtype], tuple(shape)


def _check_fields(kind: str, fields: Mapping[str, Any], array_names: set[str]) -> None:
    if kind not in SCHEMA:
        raise ProtocolError("kind", f"unknown kind {kind!r}")
    required, arrays_needed = SCHEMA[kind]
    for key, types in required.items():
        val = fields.get(key)
        if not isinstance(val, types) or isinstance(val, bool) != (types == _BOOL):
            raise ProtocolError("bad_field", f"{kind}: field '{key}' must be {'/'.join(t.__name__ for t in types)}, "
                                f"got {type(val).__name__}")
    missing = arrays_needed - array_names
    if missing:
        raise ProtocolError("missing_array", f"{kind}: missing arrays {sorted(missing)}")


def _check_arrays(kind: str, fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    for name, (dtype, ndims) in ARRAYS.get(kind, {}).items():
        a = arrays.get(name)
        if a is not None and (a.dtype != _DTYPE_OF[dtype] or a.ndim not in ndims):
            raise ProtocolError("bad_array", f"{kind}: '{name}' must be {dtype} with {' or '.join(map(str, ndims))} "
                                f"dims, got {a.dtype.name}{list(a.shape)}")
    if "params" in SCHEMA[kind][1]:
        _check_params_frame(kind, fields, arrays)
    check = _CHECKS.get(kind)
    if check is not None:
        check(fields, arrays)


class RejectCounter(Counter):
    """Counts rejected messages by reason; each process exposes it in its logs and metrics."""

    def add(self, err: ProtocolError) -> None:
        self[err.reason] += 1

    @property
    def total(self) -> int:
        return sum(self.values())


# -- the parameters a request and a batch carry -------------------------------------------------
# One float64 [P, n] array (float32 and int64 values are exact in float64) plus the names in the
# header: per-message cost grows with the number of frames, so 15 parameters cost one frame, not 15.

def pack_params(params: Mapping[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header fields, arrays) to merge into a request or batch message."""
    names = list(params)
    n = len(next(iter(params.values()))) if names else 0
    packed = np.empty((len(names), n), dtype=np.float64)
    for i, k in enumerate(names):
        packed[i] = params[k]
    return {"param_names": names}, {"params": packed}


def params_of(msg: Message) -> dict[str, np.ndarray]:
    """name -> float64 row view; a space's ``cast`` turns them back into declared dtypes."""
    arr = msg.arrays["params"]
    return {k: arr[i] for i, k in enumerate(msg.fields["param_names"])}


def example(kind: str, n: int = 4) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A valid message of ``kind`` holding ``n`` samples: (fields, arrays), for tests and fuzzers."""
    values = {_INT: 7, _NUM: 2.5, _STR: "w-1", _DICT: {"a": [1, 2.5], "b": {"c": "d"}}, _LIST: [1, "x"],
              _BOOL: True}
    required, _ = SCHEMA[kind]
    fields: dict[str, Any] = {k: values[t] for k, t in required.items()}
    specific = {"request": {"n": n, "rank": 0}, "welcome": {"push": ["tcp://127.0.0.1:5556"]},
                "trainer": {"rank": 0, "world": 1}, "delivered": {"samples": n},
                "info": {"num_classes": 10, "image_shape": [28, 28], "signal": "none"}}
    fields.update(specific.get(kind, {}))
    arrays: dict[str, np.ndarray] = {}
    if kind == "request":
        arrays["seeds"] = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    if kind == "request":
        pf, pa = pack_params({"label": np.arange(n, dtype=np.int64) % 10,
                              "slant": np.linspace(-0.3, 0.6, n, dtype=np.float32)})
        fields.update(pf)
        arrays.update(pa)
    if kind == "batch":
        arrays["images"] = np.arange(n * 28 * 28, dtype=np.int64).astype(np.uint8).reshape(n, 28, 28)
        arrays["labels"] = np.arange(n, dtype=np.int64) % 10
    if kind == "delivered":
        arrays["losses"] = np.linspace(-1.25, 7.0, n, dtype=np.float32)
    return fields, arrays


def _check_params_frame(kind: str, fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    names, arr = fields.get("param_names"), arrays["params"]
    if (not isinstance(names, list) or not all(isinstance(k, str) and 0 < len(k) <= MAX_NAME for k in names)
            or len(set(names)) != len(names)):
        raise ProtocolError("bad_field", f"{kind}: 'param_names' must be a list of distinct short names")
    if arr.dtype != np.float64 or arr.ndim != 2 or arr.shape[0] != len(names):
        raise ProtocolError("bad_array", f"{kind}: 'params' must be float64 [{len(names)}, n], "
                            f"got {arr.dtype.name}{list(arr.shape)}")
