"""``launcher=ray``: workers as Ray actors, placed and restarted by Ray.

    otfgen launcher=ray workers=8                        # starts a Ray cluster on this machine
    otfgen launcher=ray launcher.address=auto workers=64 # joins the cluster `ray start` made

Each worker is one actor reserving ``launcher.num_cpus`` CPUs and ``launcher.num_gpus`` GPUs (by
default one GPU when ``scene.render.device`` is optix or cuda); Ray picks its node. The actor
runs the worker in its own process (``remote.run_worker``). When that process dies — killed,
its node lost, or the worker ended unexpectedly, in which case the actor exits on purpose — Ray
restarts it, up to ``launcher.max_restarts`` times (the actor's ``max_restarts``); the launcher
then calls the new incarnation again and the controller re-issues the dead one's requests.

The controller and the trainer run on the driver (this machine), as with ``launcher=local``.
Running them as actors pinned to a GPU node is not built; start ``otfgen`` on that node instead.

A cluster started here (``launcher.address`` null) has ``launcher.cluster_cpus`` CPUs (default
workers × num_cpus), no dashboard, and its own temporary folder; it is shut down at the end.
Joining a cluster (``launcher.address=auto``) binds the controller and the trainer to this
node's IP (or ``launcher.host``) so that the actors reach them, always with CurveZMQ keys.
``<run_dir>/ray.json`` names the cluster, the namespace and the actors (for tools and tests).

Ctrl-C, a failed trainer or controller, and the end of the run kill every actor.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

from otfgen.configs.schema import RunConfig
from otfgen.controller import remote
from otfgen.controller.remote import EngineCluster, Task

log = logging.getLogger("otfgen.launcher")


class WorkerActor:
    """One worker; Ray makes it an actor (``ray.remote`` with the run's resources)."""

    def __init__(self, call: tuple):
        self.call = call

    def run(self) -> int:
        code = remote.run_worker(*self.call)
        if code in (0, 2, 130):
            return code
        # ended unexpectedly (e.g. controller silent): die, so that Ray restarts this actor
        os._exit(1)

    def pid(self) -> int:
        return os.getpid()


class RayCluster(EngineCluster):
    def __init__(self, cfg: RunConfig):
        self.raw_cfg = cfg
        self.started_cluster = False
        self.temp_dir: str | None = None
        self.actors: list = []
        self.calls: dict[int, object] = {}  # task index -> its pending run() (an ObjectRef)

    def run(self) -> int:
        remote.sigterm_as_interrupt()
        try:
            cfg = self._connect()
        except KeyboardInterrupt:
            self._disconnect()
            return 130
        except Exception as e:  # ray.init's errors (no cluster at the address, …): one line
            log.error("launcher=ray: cannot start or join a Ray cluster: %s", str(e).splitlines()[0] if str(e) else e)
            self._disconnect()
            return 1
        super().__init__(cfg)
        return super().run()

    def _connect(self) -> RunConfig:
        import ray

        lc = self.raw_cfg.launcher
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing phones home from a run
        self.namespace = f"otfgen-{os.getpid()}-{os.urandom(3).hex()}"
        if lc.address:
            ray.init(address=lc.address, namespace=self.namespace, log_to_driver=True)
            host = lc.host or ray.util.get_node_ip_address()
        else:
            # short: Ray's unix sockets live under it (paths over 107 bytes fail)
            self.temp_dir = tempfile.mkdtemp(prefix="otfgen-ray-", dir="/tmp")
            cpus = lc.cluster_cpus or max(1, math.ceil(lc.workers * lc.num_cpus))
            ray.init(num_cpus=cpus, include_dashboard=False, namespace=self.namespace, _temp_dir=self.temp_dir,
                     log_to_driver=True)
            self.started_cluster = True
            host = lc.host
        remote.sigterm_as_interrupt()  # again: ray.init installs its own SIGTERM handler
        run_dir = Path(self.raw_cfg.run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        return remote.for_cluster(self.raw_cfg, run_dir, host)

    def _disconnect(self) -> None:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()  # stops the cluster's processes too when this driver started it
        finally:
            if self.temp_dir:
                shutil.rmtree(self.temp_dir, ignore_errors=True)
                self.temp_dir = None

    def _start_workers(self) -> None:
        import ray

        lc = self.cfg.launcher
        gpus = remote.gpus_per_worker(self.cfg)
        actor_cls = ray.remote(WorkerActor)
        for task in self.tasks:
            task.handle = actor_cls.options(name=self.worker_name(task.index), num_cpus=lc.num_cpus, num_gpus=gpus,
                                            max_restarts=lc.max_restarts, max_task_retries=0).remote(
                self.worker_call(task))
            self.actors.append(task.handle)
            self.calls[task.index] = task.handle.run.remote()
        (self.run_dir / "ray.json").write_text(json.dumps({
            "address": ray.get_runtime_context().gcs_address, "namespace": self.namespace,
            "actors": [self.worker_name(t.index) for t in self.tasks], "temp_dir": self.temp_dir,
            "started_cluster": self.started_cluster}))
        log.info("launcher=ray: %d worker actor(s) with %g CPU and %g GPU each, namespace %s", len(self.tasks),
                 lc.num_cpus, gpus, self.namespace)

    def _poll_worker(self, task: Task):
        import ray

        ref = self.calls[task.index]
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:
            return None
        try:
            return "exit", ray.get(ref)
        except ray.exceptions.RayActorError as e:
            return "died", f"actor died: {type(e).__name__}"
        except ray.exceptions.RayError as e:
            return "died", type(e).__name__

    def _restart_worker(self, task: Task) -> None:
        # Ray restarts the actor's process itself; the call waits for the new incarnation
        self.calls[task.index] = task.handle.run.remote()

    def _stop_workers(self) -> None:
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already dead
                pass
        self.actors = []

    def stop(self, timeout: float = 5.0) -> None:
        try:
            super().stop(timeout)
        finally:
            self._disconnect()
