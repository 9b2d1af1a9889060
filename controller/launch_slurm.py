"""``launcher=slurm``: workers as a SLURM job array, submitted with submitit.

    otfgen launcher=slurm workers=16 launcher.partition=gpu launcher.num_gpus=1
    otfgen launcher=slurm launcher.executor=local        # each job a local process (how it is tested)

One job per worker (an array of ``launcher.workers`` tasks, all allowed to run at once), each
with ``launcher.num_cpus`` CPUs (cpus_per_task) and ``launcher.num_gpus`` GPUs (gpus_per_node;
by default one when ``scene.render.device`` is optix or cuda), ``launcher.timeout_min``,
``launcher.mem_gb``, ``launcher.partition`` and any further ``launcher.slurm_args``. The
controller and the trainer run on the submitting node, which must be reachable from the compute
nodes (``launcher.host``, default this node's IP); every connection uses the run's CurveZMQ
keys, which travel in the job's pickle under ``launcher.folder`` (default ``<run_dir>/submitit``).

A job that ends before the run is done (killed, pre-empted, node lost, or the worker ended
unexpectedly) is submitted again under the same worker id, up to ``launcher.max_restarts``
times, and the controller re-issues its requests. Ctrl-C, a failed trainer or controller, and the
end of the run cancel every job (scancel; SIGINT to a local job).

SLURM itself cannot run on the machines this project is built on: the tests use submitit's
local executor (``launcher.executor=local``), which runs the same job function in local
processes.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from otfgen.configs.schema import RunConfig
from otfgen.controller import remote
from otfgen.controller.remote import EngineCluster, Task

log = logging.getLogger("otfgen.launcher")


class SlurmCluster(EngineCluster):
    def __init__(self, cfg: RunConfig):
        self.raw_cfg = cfg
        self.executor = None

    def run(self) -> int:
        remote.sigterm_as_interrupt()
        lc = self.raw_cfg.launcher
        try:
            host = lc.host
            if host is None and lc.executor == "slurm":
                host = remote.this_node_ip()  # where compute nodes find the submitting node
            run_dir = Path(self.raw_cfg.run_dir).resolve()
            run_dir.mkdir(parents=True, exist_ok=True)
            cfg = remote.for_cluster(self.raw_cfg, run_dir, host)
        except (RuntimeError, OSError) as e:
            log.error("launcher=slurm: %s", e)
            return 1
        super().__init__(cfg)
        return super().run()

    def _make_executor(self):
        import submitit

        lc = self.cfg.launcher
        folder = Path(lc.folder).expanduser() if lc.folder else self.run_dir / "submitit"
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)  # the job pickles hold the client's secret key
        ex = submitit.AutoExecutor(folder=folder, cluster=lc.executor)
        params = {"timeout_min": lc.timeout_min, "name": f"otfgen-{self.run_dir.name}",
                  "cpus_per_task": math.ceil(lc.num_cpus), "slurm_array_parallelism": lc.workers}
        gpus = math.ceil(remote.gpus_per_worker(self.cfg))
        if gpus:
            params["gpus_per_node"] = gpus
        if lc.mem_gb:
            params["mem_gb"] = lc.mem_gb
        if lc.partition:
            params["slurm_partition"] = lc.partition
        params.update({f"slurm_{k}": v for k, v in lc.slurm_args.items()})
        ex.update_parameters(**params)
        return ex

    def _start_workers(self) -> None:
        try:
            self.executor = self._make_executor()
            calls = [self.worker_call(t) for t in self.tasks]
            jobs = self.executor.map_array(remote.run_worker, *zip(*calls))
        except Exception as e:  # no sbatch, a refused parameter …: one line, as RuntimeError for run()
            raise RuntimeError(f"launcher=slurm: cannot submit the workers: {str(e).splitlines()[0] if str(e) else e}")
        for task, job in zip(self.tasks, jobs):
            task.handle = job
        log.info("launcher=slurm: %d worker job(s) (%s executor), first job %s, logs in %s", len(jobs),
                 self.cfg.launcher.executor, jobs[0].job_id if jobs else "-", self.executor.folder)

    def _poll_worker(self, task: Task):
        job = task.handle
        if not job.done():
            return None
        error = job.exception()
        if error is not None:
            return "died", f"job {job.job_id} {job.state}: {str(error).strip().splitlines()[-1] if str(error) else ''}"[:300]
        return "exit", job.result()

    def _restart_worker(self, task: Task) -> None:
        task.handle = self.executor.submit(remote.run_worker, *self.worker_call(task))

    def _stop_workers(self) -> None:
        for task in self.tasks:
            job = task.handle
            if job is not None and not job.done():
                try:
                    job.cancel(check=False)
                except Exception as e:  # scancel failed: say so, the jobs end once the controller is gone
                    log.warning("launcher=slurm: cancelling job %s failed: %s", job.job_id, e)
