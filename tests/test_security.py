"""CurveZMQ: who may talk to a controller bound beyond loopback, and what strangers get."""

import json
import os
import subprocess
import sys
import time

import pytest
import zmq

from otfgen.blender_gen import protocol, security
from conftest import otfgen_cmd, start_against
from launch_helpers import ctrl_c, start


def test_keys_are_generated_owner_only_and_refused_when_readable_by_others(tmp_path):
    d = security.generate(tmp_path / "keys")
    for name in ("server.key_secret", "client.key_secret"):
        assert (os.stat(d / name).st_mode & 0o777) == 0o600
    assert (d / "authorized" / "client.key").exists()
    keys = security.load(d, server=True)
    assert keys.server_secret is not None and len(keys.client_public) == 40
    os.chmod(d / "server.key_secret", 0o644)
    with pytest.raises(security.KeysError, match="readable by others"):
        security.load(d, server=True)
    assert security.load(d, server=False).server_secret is None  # a render host needs no server secret


@pytest.mark.parametrize("endpoint,private", [("tcp://127.0.0.1", True), ("tcp://127.0.0.2:5555", True),
                                              ("ipc:///tmp/x", True), ("tcp://0.0.0.0", False),
                                              ("tcp://10.1.2.3:5555", False), ("tcp://example.org:1", False)])
def test_only_loopback_and_ipc_count_as_private(endpoint, private):
    assert security.is_private(endpoint) == private


@pytest.mark.slow
def test_public_bind_without_keys_is_a_one_line_error(tmp_path, env):
    p = subprocess.run(otfgen_cmd(f"hydra.run.dir={tmp_path / 'r'}", "controller.bind=tcp://0.0.0.0"), env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2  # README: 2, the configuration cannot run
    assert "controller.bind=tcp://0.0.0.0 is reachable from other machines: CurveZMQ keys are required" in p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr


def _dealer(ctx, endpoint, keys=None, server_public=None):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        s.curve_publickey, s.curve_secretkey = keys
        s.curve_serverkey = server_public
    s.connect(endpoint)
    return s


def _heard(sock, seconds):
    kinds, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.poll(100):
            kinds.append(protocol.decode(sock.recv_multipart()).kind)
    return kinds


@pytest.mark.slow
def test_strangers_get_nothing_in_and_nothing_out(tmp_path, env):
    """A controller on a second loopback address with CurveZMQ on: a peer without keys and a peer
    with keys the controller does not know are never registered and receive nothing; a peer with
    the authorised key is registered (and hears the controller's heartbeats)."""
    from otfgen.controller.config import compose, save

    keys = security.generate(tmp_path / "keys")
    strangers = security.generate(tmp_path / "other")
    cfg = compose([f"run_dir={tmp_path / 'run'}", "controller.bind=tcp://127.0.0.2", f"controller.keys={keys}"])
    (tmp_path / "run").mkdir()
    save(cfg, tmp_path / "run" / "config.json")
    ready = tmp_path / "run" / "endpoints.json"
    ctrl = subprocess.Popen([sys.executable, "-m", "otfgen.controller.server", "--config", str(tmp_path / "run" / "config.json"),
                             f"--ready={ready}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctx = zmq.Context()
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        endpoint = json.loads(ready.read_text())["controller"]
        assert endpoint.startswith("tcp://127.0.0.2:")
        server_public = security.load(keys, server=False).server_public
        good = security.load(keys, server=False)
        bad = security.load(strangers, server=False)
        peers = {"no keys": _dealer(ctx, endpoint),
                 "unknown key": _dealer(ctx, endpoint, (bad.client_public, bad.client_secret), server_public),
                 "authorised": _dealer(ctx, endpoint, (good.client_public, good.client_secret), server_public)}
        for name, s in peers.items():
            s.send_multipart(protocol.encode("hello", {"worker": name.replace(" ", "-"), "pid": 1}))
            s.send_multipart(protocol.encode("credit", {"n": 2}))
        heard = {name: _heard(s, 3.0) for name, s in peers.items()}
        assert heard["no keys"] == [] and heard["unknown key"] == []
        assert "heartbeat" in heard["authorised"]
        assert ctrl.poll() is None  # still serving
    finally:
        for s in locals().get("peers", {}).values():
            s.close()
        ctx.term()
        ctrl.terminate()
        out, _ = ctrl.communicate(timeout=30)
    assert "worker authorised (pid 1) joined" in out
    assert "no-keys" not in out and "unknown-key" not in out  # never registered
    assert "refused a peer with an unknown CURVE key" in out


def test_strangers_get_nothing_into_the_trainers_pull(tmp_path):
    """The trainer's PULL, bound beyond loopback with CurveZMQ: batches pushed without keys or with
    a key the run does not know never reach the stream; the authorised worker's do. A fake
    controller (a CURVE ROUTER) and workers (PUSH) drive a real Stream."""
    from otfgen.trainer.stream import Stream, StreamError

    keys = security.generate(tmp_path / "keys")
    own = security.load(keys, server=True)
    bad = security.load(security.generate(tmp_path / "other"), server=False)
    ctx = zmq.Context()
    auth = security.start_authenticator(ctx, own)
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    security.make_server(router, own)
    port = router.bind_to_random_port("tcp://127.0.0.2")
    stream = Stream(f"tcp://127.0.0.2:{port}", bind="tcp://127.0.0.2", keys=str(keys), batch_size=4, samples=8,
                    data_timeout_s=10)
    pushes = []

    def push(client=None):
        s = ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        if client is not None:
            s.curve_publickey, s.curve_secretkey = client
            s.curve_serverkey = own.server_public
        s.connect(stream.pull_endpoint)
        pushes.append(s)
        return s

    def batch(rid):
        fields, arrays = protocol.example("batch", n=4)
        return protocol.encode("batch", {**fields, "id": rid}, arrays)

    try:
        start_against(stream, router)
        push().send_multipart(batch(1), zmq.NOBLOCK)  # queued, never delivered
        push((bad.client_public, bad.client_secret)).send_multipart(batch(2), zmq.NOBLOCK)
        good = push((own.client_public, own.client_secret))
        good.send_multipart(batch(3))
        got = []
        try:
            for b in stream.iter_batches():
                got.append(b.request_id)
                if len(got) == 1:
                    time.sleep(1.0)  # the strangers' handshakes have long failed by now
                    good.send_multipart(batch(4))
        except StreamError:  # no data for data_timeout_s: fewer batches came than were sent by the worker
            pass
        assert got == [3, 4]
    finally:
        stream.close(finished=False)
        for s in pushes + [router]:
            s.close()
        auth.stop()
        ctx.term()


@pytest.mark.slow
def test_a_worker_started_elsewhere_joins_by_address_with_keys(tmp_path, env):
    """The multi-host shape on one machine: the controller binds a second loopback address with
    CurveZMQ; a worker started by hand (as on a render host) joins by that address with the keys
    and its batches reach the trainer."""
    keys = security.generate(tmp_path / "keys")
    run_dir = tmp_path / "run"
    # a budget the run never reaches: it is stopped once both workers' batches have arrived, so a
    # fast machine cannot finish it before the hand-started worker joins
    proc = start(run_dir, env, "controller.bind=tcp://127.0.0.2", f"controller.keys={keys}", "launcher.workers=1",
                 "budget.samples=10000000", "controller.credits=1")
    ext = None
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "endpoints.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        endpoint = json.loads((run_dir / "endpoints.json").read_text())["controller"]
        ext = subprocess.Popen([sys.executable, "-m", "otfgen.blender_gen.worker", f"controller={endpoint}", "id=remote-1",
                                f"keys={keys}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        workers = set()
        deadline = time.monotonic() + 120
        while not {"remote-1", "w0"} <= workers and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if (run_dir / "stream.jsonl").exists():
                workers = {json.loads(line)["worker"] for line in open(run_dir / "stream.jsonl") if line.strip()}
        out = ctrl_c(proc)
        ext_out, _ = ext.communicate(timeout=60)
    finally:
        for p in (proc, ext):
            if p is not None and p.poll() is None:
                p.kill()
    assert {"remote-1", "w0"} <= workers, out[-3000:]  # the hand-started worker's batches reached the trainer
    assert proc.returncode == 130, out[-3000:]
    assert ext.returncode == 0, ext_out[-2000:]  # told to stop by the controller it joined
