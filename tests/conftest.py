import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def otfgen_cmd(*args: str) -> list[str]:
    """The launcher as a subprocess, the way a user runs it (``otfgen …``)."""
    return [sys.executable, "-m", "otfgen.controller.main", *args]


def proc_cmdlines() -> dict[int, str]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                pass
    return out


@pytest.fixture
def env():
    e = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    # otfgen comes from the install (pip install -e .), as for a user: the checkout is not put on
    # the path, so a module still imported under an old top-level name fails here too
    e["PYTHONPATH"] = e.get("PYTHONPATH", "")
    return e
