import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def otfgen_cmd(*args: str) -> list[str]:
    """The launcher as a subprocess, the way a user runs it (``otfgen …``)."""
    return [sys.executable, "-m", "otfgen.controller.main", *args]


def drive_policy(policy, space, signal, requests: int, n: int = 256, seed: int = 0):
    """Feed a policy ``requests`` requests of ``n`` samples with a crafted per-sample signal (plus
    noise), as the trainer would report it: what the policy learns from, without a trainer."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for i in range(requests):
        action = policy.act()
        params, _ = space.sample(action, 1000 + i, n)
        s = signal(params) + 0.3 * rng.standard_normal(n)
        policy.observe(action, params, np.ones(n, np.float32), s.astype(np.float32))
    return policy


def start_against(stream, router) -> None:
    """Start ``stream`` against a bare ROUTER socket playing its controller: take the trainer's
    registration and answer with an example info, as a controller would."""
    import threading

    from otfgen.blender_gen import protocol

    starting = threading.Thread(target=stream.start)
    starting.start()
    assert router.poll(10_000), "the stream did not register with the controller"
    ident, *frames = router.recv_multipart()
    assert protocol.decode(frames).kind == "trainer"
    router.send_multipart([ident, *protocol.encode("info", *protocol.example("info"))])
    starting.join(10)


def assert_renders_sampled_params_exactly(space, fam, params, seeds) -> None:
    """A 2D family's own draws are valid, are exactly the declared parameters, render as drawn (uint8
    28×28, no blank image, labels as drawn), and render the same bytes after the wire (one float64
    array each) and a worker's cast."""
    import numpy as np

    n = len(seeds)
    space.check_params(params, n)
    assert set(params) == set(space.params)
    images, labels = fam.render(params, seeds)
    assert images.dtype == np.uint8 and images.shape == (n, 28, 28) and images.std(axis=(1, 2)).min() > 0
    np.testing.assert_array_equal(labels, params["label"])
    wire = space.cast({k: np.asarray(v, np.float64) for k, v in params.items()})
    assert {k: v.dtype for k, v in wire.items()} == {k: v.dtype for k, v in params.items()}
    assert fam.render(wire, seeds)[0].tobytes() == images.tobytes()


def proc_cmdlines() -> dict[int, str]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                pass
    return out


# CI (.ci/run) installs every extra on purpose: there, a test skipped because an extra's module
# does not import (pytest.importorskip) is a failure, not a silent skip
REQUIRE_EXTRAS = os.environ.get("OTFGEN_REQUIRE_EXTRAS") == "1"


def needs_extra(module: str, extra: str) -> None:
    """Skip the calling test where an extra's module is not installed, without importing it (ray
    takes seconds); the message is pytest.importorskip's, so CI's REQUIRE_EXTRAS fails it."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"could not import '{module}': needs the {extra} extra (pip install -e '.[{extra}]')")


def _fail_missing_extra(report) -> None:
    if REQUIRE_EXTRAS and report.skipped and isinstance(report.longrepr, tuple):
        why = str(report.longrepr[2])
        if why.startswith(("could not import", "Skipped: could not import")):
            report.outcome = "failed"
            report.longrepr = f"OTFGEN_REQUIRE_EXTRAS=1 and an extra is missing: {why}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _fail_missing_extra(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _fail_missing_extra(report)
    return report


@pytest.fixture
def env():
    e = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    # otfgen comes from the install (pip install -e .), as for a user: the checkout is not put on
    # the path, so a module still imported under an old top-level name fails here too
    e["PYTHONPATH"] = e.get("PYTHONPATH", "")
    return e


def cycles_gpus(kind: str) -> list[str]:
    """The GPUs of ``kind`` (OPTIX, CUDA) Cycles finds on this machine, asked of Cycles directly
    (needs bpy): tests that expect a device error expect it only where there is no such GPU."""
    import bpy

    prefs = bpy.context.preferences.addons["cycles"].preferences
    try:
        prefs.compute_device_type = kind
    except TypeError:  # this Blender build has no such backend
        return []
    prefs.refresh_devices()
    return [d.name for d in prefs.devices if d.type == kind]
