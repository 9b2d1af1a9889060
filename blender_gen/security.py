"""CurveZMQ for endpoints that leave the machine.

Endpoints bind to loopback or ``ipc://`` by default. Any other address needs keys: ``otfgen keys
DIR`` writes a server key pair (the controller's ROUTER and the trainer's PULL use it), a client
key pair (workers and the trainer's DEALER use it) and ``DIR/authorized/`` (the client public keys
the servers accept). Secret key files are owner-only (0600) and are refused otherwise. A peer
whose key is not authorised never completes the handshake: nothing it sends is delivered and it
receives nothing; each refusal is logged by the ``otfgen.auth`` logger and counted.

Copy to a render host: ``server.key`` (public) and ``client.key`` + ``client.key_secret``.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("otfgen.auth")

_PRIVATE = ("ipc://", "inproc://", "tcp://127.", "tcp://localhost", "tcp://[::1]")


class KeysError(ValueError):
    """Keys missing, unreadable or not owner-only."""


def is_private(endpoint: str) -> bool:
    """True for endpoints only this machine can reach (loopback, ipc, inproc)."""
    return endpoint.startswith(_PRIVATE)


@dataclass
class Keys:
    directory: Path
    client_public: bytes
    client_secret: bytes
    server_public: bytes
    server_secret: bytes | None  # None on a render host, which only connects


def generate(directory: str | Path) -> Path:
    """Write a fresh server and client key pair and the authorised-clients folder."""
    d = Path(directory).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    for name in ("server", "client"):
        for suffix in (".key", ".key_secret"):
            (d / f"{name}{suffix}").unlink(missing_ok=True)
        zmq.auth.create_certificates(str(d), name)
        os.chmod(d / f"{name}.key_secret", 0o600)
    auth = d / "authorized"
    auth.mkdir(exist_ok=True)
    os.chmod(auth, 0o700)
    (auth / "client.key").write_bytes((d / "client.key").read_bytes())
    return d


def _secret(path: Path) -> tuple[bytes, bytes]:
    if not path.exists():
        raise KeysError(f"key file {path} does not exist (create keys with `otfgen keys DIR`)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeysError(f"secret key {path} is readable by others (mode {mode:o}); chmod 600 it")
    public, secret = zmq.auth.load_certificate(str(path))
    return public, secret


def load(directory: str | Path, server: bool) -> Keys:
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise KeysError(f"keys directory {d} does not exist (create it with `otfgen keys {d}`)")
    client_public, client_secret = _secret(d / "client.key_secret")
    if server:
        server_public, server_secret = _secret(d / "server.key_secret")
    else:
        if not (d / "server.key").exists():
            raise KeysError(f"{d / 'server.key'} (the controller's public key) is missing")
        server_public, server_secret = zmq.auth.load_certificate(str(d / "server.key"))[0], None
    return Keys(d, client_public, client_secret, server_public, server_secret)


def for_endpoint(keys_dir: str | None, setting: str, endpoint: str, server: bool) -> Keys | None:
    """Keys when a keys directory is given; an error when ``endpoint`` leaves the machine without."""
    if keys_dir:
        return load(keys_dir, server)
    if not is_private(endpoint):
        raise KeysError(f"{setting}={endpoint} is reachable from other machines: CurveZMQ keys are required "
                        "(run `otfgen keys DIR`, then set controller.keys=DIR; keys=DIR for otfgen-worker)")
    return None


class _Allowlist:
    """The authenticator's callback: accept known client keys, log and count the others."""

    def __init__(self, directory: Path):
        self.allowed = set()
        for f in sorted(directory.glob("*.key")):
            self.allowed.add(zmq.auth.load_certificate(str(f))[0])
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.allowed:
            return True
        self.refused += 1
        log.warning("refused a peer with an unknown CURVE key %s… (%d refused so far)", key[:8].decode(errors="replace"),
                    self.refused)
        return False


def start_authenticator(ctx: zmq.Context, keys: Keys) -> ThreadAuthenticator:
    """Start the context's ZAP handler; call before binding a server socket."""
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("otfgen.auth.zap"))
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_Allowlist(keys.directory / "authorized"))
    return auth


def make_server(sock: zmq.Socket, keys: Keys) -> None:
    sock.curve_secretkey = keys.server_secret
    sock.curve_publickey = keys.server_public
    sock.curve_server = True


def make_client(sock: zmq.Socket, keys: Keys) -> None:
    sock.curve_secretkey = keys.client_secret
    sock.curve_publickey = keys.client_public
    sock.curve_serverkey = keys.server_public


def keys_main(argv: list[str]) -> int:
    """``otfgen keys DIR``: create CurveZMQ keys for a run that binds beyond loopback."""
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: otfgen keys DIR   (writes server/client key pairs and DIR/authorized/)")
        return 0 if argv in (["-h"], ["--help"]) else 2
    d = generate(argv[0])
    print(f"wrote CurveZMQ keys to {d}: server.key(+_secret) for the controller and trainer, "
          f"client.key(+_secret) for workers; authorised clients in {d / 'authorized'}. "
          f"Use controller.keys={d} (and keys={d} for otfgen-worker on other hosts).")
    return 0
