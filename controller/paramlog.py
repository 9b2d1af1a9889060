"""The parameter log: the dataset stored as parameters (append-only JSON lines, nothing executable).

Line 1 is a header: family, the run's parameter space, run seed, request size. Each following
line is one request as first issued: id, family, n, seed (the request seed every sample seed
derives from), the policy's action, the worker it went to, and the policy step. Because
``ParamSpace.sample(action, seed, n)`` and the family's ``render`` are pure, these few hundred
bytes regenerate the request's images bit for bit (``otfgen replay``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator


class ParamLog:
    def __init__(self, path: str | Path, header: dict[str, Any]):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if os.fstat(self._fd).st_size == 0:
            self._write({"kind": "header", **header})

    def _write(self, obj: dict[str, Any]) -> None:
        os.write(self._fd, (json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n").encode())

    def append(self, record: dict[str, Any]) -> None:
        self._write({"kind": "request", **record})

    def close(self) -> None:
        os.close(self._fd)


def read(path: str | Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """(header, iterator over request records). Raises ValueError on a malformed file."""
    path = Path(path)
    f = open(path)
    first = f.readline()
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        f.close()
        raise ValueError(f"{path}: first line is not a JSON header") from None
    if header.get("kind") != "header":
        f.close()
        raise ValueError(f"{path}: first line is not a parameter-log header")

    def records():
        with f:
            for n, line in enumerate(f, start=2):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    # a run killed mid-write leaves at most one torn last line
                    raise ValueError(f"{path}:{n}: not JSON") from None
                if rec.get("kind") == "request":
                    yield rec

    return header, records()


def index(path: str | Path) -> tuple[dict[str, Any], dict[int, int]]:
    """(header, request id -> byte offset of its line): what ``record_at`` needs to read one
    request back, so a reader of a long run keeps an offset per request, not every record."""
    header, _ = read(path)
    offsets: dict[int, int] = {}
    with open(path, "rb") as f:
        f.readline()
        while True:
            pos = f.tell()
            line = f.readline()
            if not line:
                break
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(f"{path}: byte {pos}: not JSON") from None
                if rec.get("kind") == "request":
                    offsets[rec["id"]] = pos  # the record itself is dropped: one int per request stays
    return header, offsets


def record_at(f, offset: int) -> dict[str, Any]:
    """The record whose line starts at ``offset`` of the open (binary) file ``f``."""
    f.seek(offset)
    return json.loads(f.readline())
