"""The local launcher: the controller, N workers and the trainer as processes on this machine,
watched and stopped together (``launcher=local``; the Ray and SLURM launchers extend it in
controller/remote.py).

A dead worker is restarted with back-off (its open requests are re-issued by the controller);
one that keeps dying is given up on. If the controller or the trainer fails, or on Ctrl-C, every
process is stopped and the exit code says which failed. Children get SIGTERM if the launcher
dies, so no process outlives it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from otfgen.configs import cli
from otfgen.configs.schema import ConfigError, RunConfig
from otfgen.controller import config as config_mod

log = logging.getLogger("otfgen.launcher")


def _die_with_parent() -> None:  # runs in the child between fork and exec (Linux)
    # Ctrl-C must reach every child the way it reaches the launcher: never inherit a blocked SIGINT
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    restart_at: float | None = None
    given_up: bool = False
    finished: bool = False  # exited 0: stopped by the controller at the end of training


class LocalCluster:
    """Processes of one run on this machine; also what ``otfgen serve`` (``Stream.local``) starts."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.run_dir / "config.json"
        config_mod.save(cfg, self.config_path)
        self.children: dict[str, Child] = {}
        self.endpoint: str | None = None

    def _spawn(self, child: Child) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{cli.LOG_FILE_ENV: str(self.run_dir / f"{child.name}.log")})
        if child.name != "trainer":
            # one BLAS thread per controller and worker process (unless the user chose): each is
            # one process per core's worth of work already, and OpenBLAS threads spinning against
            # the trainer's made a 145×145 solve take 19 ms instead of 0.3 on 2 cores
            for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env.setdefault(var, "1")
        child.proc = subprocess.Popen(child.argv, env=env, preexec_fn=_die_with_parent)
        self.children[child.name] = child

    def start_controller_and_workers(self) -> str:
        self.start_controller()
        for i in range(self.cfg.launcher.workers):
            self._spawn(Child(f"worker-{i}", worker_argv(self.cfg.launcher.blender, self.worker_args(i))))
        return self.endpoint

    def worker_args(self, i: int) -> list[str]:
        """Worker ``i``'s ``key=value`` arguments (its id stays the same across restarts)."""
        args = [f"controller={self.endpoint}", f"id=w{i}", f"credits={self.cfg.controller.credits}"]
        if self.cfg.controller.keys:
            args.append(f"keys={Path(self.cfg.controller.keys).expanduser().resolve()}")
        return args

    def start_controller(self) -> str:
        ready = self.run_dir / "endpoints.json"
        ready.unlink(missing_ok=True)
        py = sys.executable
        self._spawn(Child("controller", [py, "-m", "otfgen.controller.server", "--config", str(self.config_path),
                                         f"--ready={ready}"]))
        deadline = time.monotonic() + self.cfg.launcher.start_timeout_s
        while not ready.exists():
            code = self.children["controller"].proc.poll()
            if code is not None:
                raise RuntimeError(f"controller exited with code {code} before it was ready (see its log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"controller not ready within {self.cfg.launcher.start_timeout_s:.0f} s")
            time.sleep(0.05)
        self.endpoint = json.loads(ready.read_text())["controller"]
        return self.endpoint

    def start_trainer(self) -> None:
        args = ["otfgen.trainer.train", "--config", str(self.config_path), f"--controller={self.endpoint}"]
        ranks = self.cfg.trainer.ranks
        if ranks > 1:  # PyTorch DDP: torchrun starts one trainer per rank
            argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                    "-m", *args]
        else:
            argv = [sys.executable, "-m", *args]
        self._spawn(Child("trainer", argv))

    def supervise(self) -> int:
        """Wait for the trainer to finish; restart dead workers; fail fast on the others."""
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            code = self.check_trainer_and_controller()
            if code is not None:
                return code
            alive = 0
            for child in self.children.values():
                if not child.name.startswith("worker") or child.given_up:
                    continue
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        child.restart_at = None
                        log.warning("%s: restarting (attempt %d)", child.name, child.restarts)
                        self._spawn(child)
                    alive += 1
                    continue
                code = child.proc.poll()
                if code is None:
                    alive += 1
                    continue
                if code == 0:  # a worker exits 0 only when the controller told it training is over
                    child.given_up = child.finished = True
                    log.info("%s: stopped (training finished)", child.name)
                    continue
                if code == 2:  # the worker's "cannot run as configured" (its log says why): no retry helps
                    log.error("%s cannot start as configured (exit 2, see its error above); stopping", child.name)
                    return 1
                if child.restarts >= self.cfg.launcher.max_restarts:
                    child.given_up = True
                    log.error("%s exited (%s) and has died %d times; giving up on it", child.name,
                              _describe(code), child.restarts + 1)
                    continue
                child.restarts += 1
                delay = min(30.0, 2.0 ** (child.restarts - 1))
                child.restart_at = now + delay
                log.warning("%s exited (%s); its requests will be re-issued; restart in %.0f s",
                            child.name, _describe(code), delay)
                alive += 1
            finished = any(c.finished for c in self.children.values())
            if alive == 0 and self.cfg.launcher.workers > 0 and not finished:
                log.error("no worker left alive; stopping")
                return 1

    def check_trainer_and_controller(self) -> int | None:
        """The run's exit code once the trainer or the controller has ended, else None."""
        trainer = self.children["trainer"]
        code = trainer.proc.poll()
        if code is not None:
            if code != 0:
                log.error("trainer failed (%s); stopping everything", _describe(code))
                return 1
            ctrl = self.children["controller"].proc
            try:
                code = ctrl.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.error("controller did not stop after the trainer finished")
                return 1
            return 0 if code == 0 else 1
        code = self.children["controller"].proc.poll()
        if code == 0:  # the trainer said "finished" and is writing its checkpoint
            try:
                code = trainer.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                log.error("trainer did not exit within 120 s after finishing")
                return 1
            if code != 0:
                log.error("trainer failed (%s); stopping everything", _describe(code))
            return 0 if code == 0 else 1
        if code is not None:
            log.error("controller exited (%s) before training finished; stopping everything", _describe(code))
            return 1
        return None

    def stop(self, timeout: float = 5.0) -> None:
        procs = [c.proc for c in self.children.values() if c.proc is not None and c.proc.poll() is None]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def run(self) -> int:
        try:
            self.start_controller_and_workers()
            log.info("otfgen: controller %s, %d worker(s), run dir %s", self.endpoint, self.cfg.launcher.workers,
                     self.run_dir)
            self.start_trainer()
            code = self.supervise()
        except RuntimeError as e:
            log.error("%s", e)
            code = 1
        except KeyboardInterrupt:
            log.warning("interrupted; stopping all processes")
            code = 130
        finally:
            self.stop()
        if code == 0:
            log.info("otfgen: done. Run directory: %s", self.run_dir)
        return code


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def worker_argv(blender: str | None, args: list[str]) -> list[str]:
    """A worker's command line: this Python, or a Blender executable's bundled Python."""
    if not blender:
        return [sys.executable, "-m", "otfgen.blender_gen.worker", *args]
    entry = Path(__file__).resolve().parents[1] / "blender_gen" / "blender" / "entry.py"
    return [blender, "--background", "--factory-startup", "--python-exit-code", "2", "--python", str(entry),
            "--", *args]


def serve_main(argv: list[str]) -> int:
    """``otfgen serve [overrides]``: a run's controller and workers, for a training loop of one's own
    (what ``Stream.local`` starts). Prints one JSON line on stdout (the controller's endpoint, the
    run directory, trainer.batch_size, budget.samples), then runs until its standard input closes:
    the stream was closed, or the process that owns it died. Then it stops them."""
    if "-h" in argv or "--help" in argv:
        print("usage: otfgen serve [KEY=VALUE ...]\n\nStart a run's controller and workers for a training loop of "
              "your own (what Stream.local starts), print one JSON line\n(controller, run_dir, batch_size, "
              "samples), and run until standard input closes; then stop them.")
        return 0
    cli.setup_logging()
    try:
        cfg = config_mod.compose(argv)
    except ConfigError as e:
        log.error("configuration error: %s", e)
        return cli.CANNOT_RUN
    cfg = config_mod.with_run_dir(cfg, cfg.run_dir or config_mod.default_run_dir("stream"))
    cli.setup_logging(Path(cfg.run_dir) / "launcher.log")  # as every child: <run>/<name>.log
    cluster = LocalCluster(cfg)
    try:
        endpoint = cluster.start_controller_and_workers()
        print(json.dumps({"controller": endpoint, "run_dir": str(cluster.run_dir),
                          "batch_size": cfg.trainer.batch_size, "samples": cfg.budget.samples}), flush=True)
        log.info("otfgen serve: controller %s, %d worker(s), run dir %s", endpoint, cfg.launcher.workers,
                 cluster.run_dir)
        sys.stdin.read()  # until the owner closes the pipe, or dies
    except RuntimeError as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        return cli.INTERRUPTED
    finally:
        cluster.stop()
    return 0
