"""``otfgen``: the command line. It composes and checks a run's configuration, then hands it to
the launcher ``launcher=`` names; its subcommands are the tools around a run.

    otfgen [hydra overrides]          # the whole loop (default: mnist2d, uniform policy, 2 workers)
    otfgen preview scene=NAME n=64 [sweep=PARAM]   # a labelled PNG grid of a scene, no trainer
    otfgen export RUN_DIR --out DIR --format webdataset|npz   # the run's stream as shards on disk
    otfgen launcher=ray …             # workers as Ray actors (controller.launch_ray)
    otfgen launcher=slurm …           # workers as a SLURM job array via submitit (controller.launch_slurm)
    otfgen replay RUN_DIR             # regenerate the run's stream from params.jsonl and check its bytes
    otfgen keys DIR                   # CurveZMQ keys for endpoints beyond loopback (controller.keys=DIR)
    otfgen compare policies=[...] …   # several policies over several seeds, paired (otfgen-compare)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from otfgen.configs import cli
from otfgen.configs.schema import RunConfig
from otfgen.controller import config as config_mod
from otfgen.controller.launcher import LocalCluster

log = logging.getLogger("otfgen.launcher")


def make_cluster(cfg: RunConfig) -> LocalCluster:
    """The launcher ``cfg.launcher.name`` names: local processes, Ray actors or SLURM jobs."""
    if cfg.launcher.name == "ray":
        from otfgen.controller.launch_ray import RayCluster

        return RayCluster(cfg)
    if cfg.launcher.name == "slurm":
        from otfgen.controller.launch_slurm import SlurmCluster

        return SlurmCluster(cfg)
    return LocalCluster(cfg)


def _hydra_main() -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    config_mod.register()
    result = {"code": None}  # None: Hydra answered a flag of its own (--cfg job, --info) and ran no task

    # Hydra's own errors are several lines and exit 1: compose once first, so that every start-up
    # error is one line and exit code 2 (Hydra's flags, e.g. --help, and hydra.* keys are its own)
    overrides = [a for a in sys.argv[1:] if not a.startswith("-") and not a.startswith("hydra.")]
    if not any(a.startswith("-") for a in sys.argv[1:]):
        try:
            config_mod.compose(overrides)
        except config_mod.ConfigError as e:
            return _startup_error(e)

    @hydra.main(version_base=None, config_path="pkg://otfgen.configs", config_name="config")
    def app(dcfg) -> None:
        try:
            cfg = config_mod.with_run_dir(config_mod.from_hydra(dcfg), HydraConfig.get().runtime.output_dir)
            config_mod.check(cfg)  # fail here, with the key's name, not inside a child process
            cli.setup_logging(Path(cfg.run_dir) / "launcher.log")  # as every child: <run>/<name>.log
        except (config_mod.ConfigError, ValueError, LookupError) as e:
            result["code"] = _startup_error(e)
            _remove_unstarted(Path(HydraConfig.get().runtime.output_dir))
            return
        result["code"] = make_cluster(cfg).run()

    app()
    return 0 if result["code"] is None else result["code"]


def _remove_unstarted(run_dir: Path) -> None:
    """A run that never started leaves no directory: Hydra made it and its .hydra/ before the checks."""
    import shutil

    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra"}:
        shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
        try:
            run_dir.rmdir()
        except OSError:
            pass


def _startup_error(e: Exception) -> int:
    """Every configuration error found before a process starts: one line, exit code 2."""
    cli.setup_logging()
    log.error("configuration error: %s", e)
    return cli.CANNOT_RUN


SUBCOMMANDS = {  # otfgen SUBCOMMAND ARGS: module, function taking the remaining argv
    "keys": ("otfgen.blender_gen.security", "keys_main"),
    "replay": ("otfgen.controller.replay", "main"),
    "compare": ("otfgen.controller.study.compare", "main"),  # also installed as otfgen-compare
    "preview": ("otfgen.controller.preview", "main"),
    "export": ("otfgen.controller.export", "main"),
    "serve": ("otfgen.controller.launcher", "serve_main"),  # what Stream.local starts
}


def train_main() -> None:
    """``otfgen-train [hydra overrides] [--controller=tcp://…]``: a trainer started on its own,
    against a controller started elsewhere (controller.connect), on settings composed here."""
    cfg, extra = config_mod.from_argv(sys.argv[1:], "otfgen-train", {
        "controller": "the controller's endpoint, tcp://HOST:PORT (else controller.connect, else RUN/endpoints.json)"})
    from otfgen.trainer import train

    train.run(cfg, extra.get("controller"))


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        module, fn = SUBCOMMANDS[argv[0]]
        sys.exit(getattr(importlib.import_module(module), fn)(argv[1:]))
    if "-h" in argv or "--help" in argv:  # otfgen's own help, not Hydra's
        from otfgen.controller import usage

        try:
            print(usage.otfgen_help([a for a in argv if not a.startswith("-")]))
        except config_mod.ConfigError as e:
            sys.exit(_startup_error(e))
        sys.exit(0)
    sys.exit(_hydra_main())


if __name__ == "__main__":
    main()
