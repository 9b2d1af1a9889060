"""Typed, frozen run configuration: Hydra composes YAML into these, code below never sees a DictConfig.

The dataclasses are registered as the schema of ``configs/config.yaml``, so a typo in a YAML
file or an override (``trainer.lrr=1``) fails at start-up with the key's name.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, OmegaConf


@dataclass
class ParamCfg:
    kind: str = MISSING
    low: Optional[float] = None
    high: Optional[float] = None
    choices: Optional[List[Any]] = None
    default: Any = None
    doc: str = ""


@dataclass
class SceneCfg:
    name: str = MISSING
    image_shape: List[int] = field(default_factory=lambda: [28, 28])
    num_classes: int = 10
    label_param: str = "label"
    params: Dict[str, ParamCfg] = field(default_factory=dict)
    # how the family renders, not per sample (Blender families: device, samples, grid …); sent to
    # every worker in its welcome, so remote workers render like local ones
    render: Dict[str, Any] = field(default_factory=dict)
    # what to validate on when trainer.val_data is not given: a path, "sklearn-digits", or
    # "stream" (the first trainer.val_stream_samples generated samples, held out from training)
    val_data: Optional[str] = None
    # the blur (std, pixels) this family's images suggest for the CNN's input (model.input_blur
    # overrides it); null = none
    input_blur: Optional[float] = None


@dataclass
class PolicyCfg:
    name: str = "uniform"
    bins: int = 8
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelCfg:
    name: str = "cnn"
    width: int = 32
    dropout: float = 0.3
    hidden: int = 128
    # std in pixels of a fixed Gaussian blur of the input (0 = off); null = the scene's input_blur
    input_blur: Optional[float] = None


@dataclass
class LauncherCfg:
    workers: int = 2
    max_restarts: int = 3
    start_timeout_s: float = 60.0
    progress: bool = True
    # a Blender executable to run workers under (its bundled Python) instead of this Python's bpy
    blender: Optional[str] = None


@dataclass
class BudgetCfg:
    samples: int = 200_000


@dataclass
class ControllerCfg:
    bind: str = "tcp://127.0.0.1"  # a loopback or ipc:// endpoint; port chosen at random when absent
    connect: Optional[str] = None  # where the trainer finds a controller started elsewhere
    request_size: int = 256
    credits: int = 2  # requests in flight per worker
    heartbeat_s: float = 0.5
    dead_after_s: float = 5.0  # a worker silent this long is gone; its requests are re-issued
    redeliver_after_s: float = 300.0  # rendered, worker alive, never delivered: issue again (a safety net)
    max_open: int = 0  # issued but undelivered requests at most; 0 = credits × workers + 4
    keys: Optional[str] = None  # CurveZMQ keys directory (`otfgen keys DIR`); required beyond loopback


@dataclass
class TrainerCfg:
    batch_size: int = 128
    bind: str = "tcp://127.0.0.1"  # where workers push batches; beyond loopback needs controller.keys
    advertise: Optional[str] = None  # host workers use to reach bind (default: bind's host, or this host's name)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 = torch's default
    ranks: int = 1  # data-parallel trainer processes (torchrun, PyTorch DDP), each fed a disjoint share
    val_data: Optional[str] = None  # .npz / IDX path; None = the scene's val_data, else scikit-learn's real 8×8 digits
    val_stream_samples: int = 1024  # held out from the stream when validating on "stream"
    val_every: int = 25_000  # samples between validations
    data_timeout_s: float = 60.0
    queue: int = 4  # decoded requests buffered ahead of the training step
    # few-real mode: k real labelled images per class mixed into every minibatch
    real_data: Optional[str] = None  # .npz / IDX path; its images not picked for training are validated on
    real_per_class: int = 10
    real_fraction: float = 0.25  # share of each minibatch drawn (with replacement) from the real images
    log_every_s: float = 10.0
    # share of the validation set kept for the policy's feedback (per-class accuracy, real features);
    # val/... figures are then reported on the remaining part only
    reward_split: float = 0.0


@dataclass
class RunConfig:
    seed: int = 0
    workers: Optional[int] = None  # shorthand for launcher.workers (`otfgen scene=digits3d workers=4`)
    run_dir: Optional[str] = None  # the launcher sets Hydra's output dir; else outputs/<date>/<time>
    scene: SceneCfg = field(default_factory=SceneCfg)
    policy: PolicyCfg = field(default_factory=PolicyCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    launcher: LauncherCfg = field(default_factory=LauncherCfg)
    budget: BudgetCfg = field(default_factory=BudgetCfg)
    controller: ControllerCfg = field(default_factory=ControllerCfg)
    trainer: TrainerCfg = field(default_factory=TrainerCfg)


class ConfigError(ValueError):
    """A configuration that cannot run: says which key and what is allowed."""


def register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="run_schema", node=RunConfig)


def from_hydra(cfg) -> RunConfig:
    """DictConfig -> RunConfig (validated against the schema once, here)."""
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
    return _resolve_aliases(OmegaConf.to_object(merged))


def _resolve_aliases(cfg: "RunConfig") -> "RunConfig":
    if cfg.workers is not None:
        cfg.launcher.workers, cfg.workers = cfg.workers, None
    return cfg


def save(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(asdict(cfg), indent=1))


def load(path: str | Path) -> RunConfig:
    data = json.loads(Path(path).read_text())
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), data))


def compose(overrides: list[str]) -> RunConfig:
    """Compose configs/config.yaml with Hydra overrides, outside of @hydra.main."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf.errors import OmegaConfBaseException

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="configs", version_base=None):
            cfg = hydra_compose(config_name="config", overrides=overrides)
        return from_hydra(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    except Exception as e:  # Hydra's own override/missing-group errors
        if type(e).__module__.startswith("hydra"):
            raise ConfigError(str(e).splitlines()[0]) from None
        raise


def default_run_dir(prog: str) -> str:
    import time

    return time.strftime(f"outputs/%Y-%m-%d/%H-%M-%S-{prog}")


def from_argv(argv: list[str], prog: str) -> tuple[RunConfig, dict[str, str]]:
    """``--config PATH`` (a resolved config written by the launcher) or Hydra overrides.

    Other ``--key=value`` flags are returned as extras (e.g. ``--ready`` for the controller).
    """
    extra, overrides, path = {}, [], None
    it = iter(argv)
    for a in it:
        if a == "--config":
            path = next(it, None)
        elif a.startswith("--config="):
            path = a.split("=", 1)[1]
        elif a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            extra[k] = v
        elif a in ("-h", "--help"):
            print(f"usage: {prog} [--config RUN/config.json | hydra overrides such as scene=mnist2d budget.samples=1000]")
            raise SystemExit(0)
        else:
            overrides.append(a)
    try:
        if path:
            if overrides:
                raise ConfigError("give either --config or overrides, not both")
            cfg = load(path)
        else:
            cfg = compose(overrides)
    except (ConfigError, FileNotFoundError, json.JSONDecodeError) as e:
        raise SystemExit(f"{prog}: configuration error: {e}") from None
    if cfg.run_dir is None:
        cfg.run_dir = default_run_dir(prog)
    return cfg, extra
