"""What ``launcher=ray`` and ``launcher=slurm`` share: per-run keys, reachable endpoints, a worker
run inside an engine's process, and supervision of workers that the engine places and restarts.

The controller and the trainer stay processes on this machine (``LocalCluster``'s); only the
workers move to the engine. The data path stays ZeroMQ, so the exactly-once bookkeeping is the
controller's as with ``launcher=local``: a worker that dies, whoever restarts it, has its open
requests re-issued (at once when it rejoins under the same id, else once it is silent for
``controller.dead_after_s``).

Keys: unless ``controller.keys`` is given, a fresh CurveZMQ key pair is written to
``<run_dir>/keys`` for each run. A worker gets the public server key and the client key pair as
bytes in its arguments (through the engine's own channel: Ray's object store, submitit's job
pickle in its folder, which only the user can read) and writes them to a private temporary
folder on its node, so there are no keys to copy by hand. Those job files are the engine's own,
written by the user's process and read by the engine; otfgen unpickles nothing, and nothing
from a socket.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from otfgen.blender_gen import security
from otfgen.configs.schema import RunConfig
from otfgen.controller.launcher import LocalCluster

log = logging.getLogger("otfgen.launcher")

CLIENT_KEY_FILES = ("server.key", "client.key", "client.key_secret")
GPU_DEVICES = ("optix", "cuda")


def gpus_per_worker(cfg: RunConfig) -> float:
    """``launcher.num_gpus``, or 1 when the scene renders on an explicitly named GPU device."""
    if cfg.launcher.num_gpus is not None:
        return float(cfg.launcher.num_gpus)
    return 1.0 if str(cfg.scene.render.get("device", "")).lower() in GPU_DEVICES else 0.0


def sigterm_as_interrupt() -> None:
    """SIGTERM (a scheduler's or ``timeout``'s stop) takes Ctrl-C's path, so that an engine's
    workers are stopped and a Ray cluster started here is shut down, not left to time out."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def this_node_ip() -> str:
    """An address of this machine that other nodes can dial (not 127.x, which some hosts map
    their own name to)."""
    import socket

    try:
        ip = socket.gethostbyname(socket.getfqdn())
    except OSError:
        ip = "127.0.0.1"
    if not ip.startswith("127."):
        return ip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # picks the outgoing interface; UDP sends nothing
            ip = s.getsockname()[0]
        except OSError:
            raise RuntimeError("cannot tell this node's address for the workers: set launcher.host") from None
    return ip


def for_cluster(cfg: RunConfig, run_dir: Path, host: str | None) -> RunConfig:
    """The run's config with a key pair and, when workers are elsewhere (``host`` given),
    controller and trainer bound where they can reach them."""
    keys = cfg.controller.keys
    if not keys:
        keys = str(security.generate(run_dir / "keys"))
    controller, trainer = cfg.controller, cfg.trainer
    if host:
        if security.is_private(controller.bind):
            controller = dataclasses.replace(controller, bind=f"tcp://{host}")
        if security.is_private(trainer.bind):
            trainer = dataclasses.replace(trainer, bind=f"tcp://{host}")
    return dataclasses.replace(cfg, controller=dataclasses.replace(controller, keys=keys), trainer=trainer)


def client_keys(keys_dir: str) -> dict[str, bytes]:
    """What a render node needs of the keys directory (never the server's secret)."""
    d = Path(keys_dir).expanduser()
    return {name: (d / name).read_bytes() for name in CLIENT_KEY_FILES}


def run_worker(endpoint: str, worker_id: str, credits: int, key_files: dict[str, bytes]) -> int:
    """One worker in this (engine-started) process, until the controller says stop.

    Returns the worker's exit code as ``otfgen-worker`` would: 0 stopped, 2 cannot run as
    configured, 3 controller silent, 130 interrupted; 1 for anything unexpected (logged)."""
    from otfgen.blender_gen import families
    from otfgen.blender_gen import worker as worker_mod
    from otfgen.blender_gen.space import SpaceError
    from otfgen.configs import cli

    cli.setup_logging()
    d = Path(tempfile.mkdtemp(prefix="otfgen-keys-"))  # mkdtemp: 0700, this user only
    try:
        for name, data in key_files.items():
            (d / name).write_bytes(data)
            os.chmod(d / name, 0o600)
        return worker_mod.serve(endpoint, worker_id, credits, keys=str(d)) or 0
    except (families.UnknownFamily, SpaceError, worker_mod.RenderSetupError, security.KeysError) as e:
        log.error("worker %s: %s", worker_id, e)
        return cli.CANNOT_RUN
    except KeyboardInterrupt:
        return 130
    except Exception:
        log.exception("worker %s failed", worker_id)
        return 1
    finally:
        shutil.rmtree(d, ignore_errors=True)


@dataclass
class Task:
    """One worker slot; the engine's handle to it lives in the subclass."""

    index: int
    deaths: int = 0
    finished: bool = False
    given_up: bool = False
    handle: object = None


class EngineCluster(LocalCluster):
    """Controller and trainer as local processes (``LocalCluster``), workers started, restarted
    and stopped by an engine. Subclasses implement the four ``_*_worker(s)`` methods."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.tasks: list[Task] = []

    def worker_name(self, i: int) -> str:
        return f"w{i}"  # the same id across restarts: the controller re-issues at once on rejoin

    # -- what an engine provides -----------------------------------------------------------------
    def _start_workers(self) -> None:
        raise NotImplementedError

    def _poll_worker(self, task: Task) -> tuple[str, object] | None:
        """None while running; ("exit", code) once it returned; ("died", why) once it died."""
        raise NotImplementedError

    def _restart_worker(self, task: Task) -> None:
        raise NotImplementedError

    def _stop_workers(self) -> None:
        raise NotImplementedError

    # -- LocalCluster's steps --------------------------------------------------------------------
    def start_controller_and_workers(self) -> str:
        self.start_controller()
        self.tasks = [Task(i) for i in range(self.cfg.launcher.workers)]
        self._start_workers()
        return self.endpoint

    def worker_call(self, task: Task) -> tuple:
        """The arguments of ``run_worker`` for this task."""
        return (self.endpoint, self.worker_name(task.index), self.cfg.controller.credits,
                client_keys(self.cfg.controller.keys))

    def supervise(self) -> int:
        while True:
            time.sleep(0.2)
            code = self.check_trainer_and_controller()
            if code is not None:
                return code
            for task in self.tasks:
                if task.finished or task.given_up:
                    continue
                state = self._poll_worker(task)
                if state is None:
                    continue
                kind, detail = state
                if kind == "exit" and detail == 0:
                    task.finished = True  # told to stop: the trainer is about to finish
                    continue
                if kind == "exit" and detail == 2:
                    log.error("worker %s cannot run as configured (see its error above); stopping",
                              self.worker_name(task.index))
                    return 1
                task.deaths += 1
                why = f"exit code {detail}" if kind == "exit" else detail
                if task.deaths > self.cfg.launcher.max_restarts:
                    task.given_up = True
                    log.error("worker %s ended (%s) and has died %d times; giving up on it",
                              self.worker_name(task.index), why, task.deaths)
                    continue
                log.warning("worker %s ended (%s); its requests will be re-issued; restart %d of %d",
                            self.worker_name(task.index), why, task.deaths, self.cfg.launcher.max_restarts)
                self._restart_worker(task)
            if self.tasks and all(t.given_up for t in self.tasks):
                log.error("no worker left alive; stopping")
                return 1

    def stop(self, timeout: float = 5.0) -> None:
        try:
            if self.tasks:
                self._stop_workers()
        finally:
            super().stop(timeout)
