"""The run's schema: every setting of a run, typed and frozen. Hydra composes YAML into these.

This module is the ground floor: it imports nothing of otfgen, and everything else reads a
``RunConfig`` instead of a DictConfig. Facts about a scene family (image shape, class count,
which parameter is the label) are not here: the family module owns them.

The dataclasses are frozen so that no part of a run can change what another part was told;
``dataclasses.replace`` makes a changed copy where one is needed (e.g. the run directory).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, Optional

MISSING = "???"  # OmegaConf's marker for a value that must be given


class ConfigError(ValueError):
    """A configuration that cannot run: says which key and what is allowed."""


# the keys of one entry of scene.params: the family's declaration (its module's SPACE: kind, limits
# as low/high or choices, default, doc) with what the scene YAML and overrides narrow laid over it;
# blender_gen.families.scene_space refuses a kind or doc of the scene's own and a range past the limits
PARAM_KEYS = ("kind", "low", "high", "choices", "default", "doc")


@dataclass(frozen=True)
class SceneCfg:
    name: str = MISSING
    # plain mappings, not a frozen dataclass each: OmegaConf would make every entry read-only
    # while Hydra still merges overrides into it
    params: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    # how the family renders, not per sample (Blender families: device, samples, grid …); sent to
    # every worker in its welcome, so remote workers render like local ones
    render: Dict[str, Any] = field(default_factory=dict)
    # what to validate on when trainer.val_data is not given: a path, "sklearn-digits", or
    # "stream" (the first trainer.val_stream_samples generated samples, held out from training)
    val_data: Optional[str] = None
    # the blur (std, pixels) this family's images suggest for the CNN's input (model.input_blur
    # overrides it); null = none
    input_blur: Optional[float] = None


@dataclass(frozen=True)
class PolicyCfg:
    """``options`` is the policy's own ``Args`` dataclass once a policy config is composed (each
    policy registers ``PolicyCfg`` with its ``Args`` as the schema of ``configs/policy/<name>.yaml``)."""

    name: str = "uniform"
    bins: int = 8
    options: Any = field(default_factory=dict)

    def options_dict(self) -> dict[str, Any]:
        o = self.options
        return {f.name: getattr(o, f.name) for f in fields(o)} if is_dataclass(o) else dict(o or {})


@dataclass(frozen=True)
class ModelCfg:
    name: str = "cnn"
    width: int = 32
    dropout: float = 0.3
    hidden: int = 128
    # std in pixels of a fixed Gaussian blur of the input (0 = off); null = the scene's input_blur
    input_blur: Optional[float] = None


@dataclass(frozen=True)
class LauncherCfg:
    """``launcher=local``: the controller, the workers and the trainer as processes on this machine.
    Each launcher is a dataclass of its own (``configs/launcher/<name>.yaml`` names it as its
    schema), so a key of another launcher is refused as unknown."""

    name: str = "local"
    workers: int = 2
    max_restarts: int = 3  # a dead worker is started again this often; then it is given up on
    start_timeout_s: float = 60.0
    # the trainer's progress bar with an ETA when stderr is a terminal (tqdm); off, or not on a
    # terminal: a plain line every trainer.log_every_s (always in <run>/trainer.log)
    progress: bool = True
    # a Blender executable to run workers under (its bundled Python) instead of this Python's bpy
    blender: Optional[str] = None


@dataclass(frozen=True)
class _RemoteLauncherCfg(LauncherCfg):
    """What a worker placed by Ray or SLURM reserves, and the address it dials."""

    # Ray actor resources, SLURM cpus_per_task / gpus_per_node; num_gpus null = 1 when
    # scene.render.device is optix or cuda, else 0
    num_cpus: float = 1.0
    num_gpus: Optional[float] = None
    # the address workers dial to reach the controller and the trainer; null = loopback for a
    # cluster on this machine (a local Ray cluster, submitit's local executor), else this node's IP
    host: Optional[str] = None


@dataclass(frozen=True)
class RayLauncherCfg(_RemoteLauncherCfg):
    """``launcher=ray``: workers as Ray actors (Ray restarts a dead one up to max_restarts)."""

    name: str = "ray"
    address: Optional[str] = None  # "auto" (or host:port, ray://…) joins a running cluster; null starts one here
    cluster_cpus: Optional[int] = None  # CPUs of the local cluster started; null = workers × num_cpus


@dataclass(frozen=True)
class SlurmLauncherCfg(_RemoteLauncherCfg):
    """``launcher=slurm``: workers as a submitit job array, one job per worker (a job that dies is
    submitted again up to max_restarts)."""

    name: str = "slurm"
    # "slurm" submits with sbatch; "local" runs each job as a local process (submitit's
    # LocalExecutor: how the tests run it, as SLURM cannot run here)
    executor: str = "slurm"
    folder: Optional[str] = None  # submitit's job folder (logs, pickles); null = <run_dir>/submitit
    partition: Optional[str] = None
    timeout_min: int = 24 * 60  # each job's time limit
    mem_gb: Optional[float] = None
    slurm_args: Dict[str, Any] = field(default_factory=dict)  # more submitit slurm_* parameters, e.g. {account: X}


LAUNCHERS = {"local": LauncherCfg, "ray": RayLauncherCfg, "slurm": SlurmLauncherCfg}


def launcher_class(name: str) -> type[LauncherCfg]:
    if name not in LAUNCHERS:
        raise ConfigError(f"launcher.name: unknown launcher '{name}'; available: {', '.join(LAUNCHERS)}")
    return LAUNCHERS[name]


def unknown_key(key: str) -> str:
    """The one line for a key no schema declares; a launcher's key named under another launcher
    says whose it is."""
    section, _, name = key.partition(".")
    owners = [n for n, cls in LAUNCHERS.items() if name in {f.name for f in fields(cls)}] if section == "launcher" else []
    if owners:
        return f"unknown key '{key}': an option of launcher={' / '.join(owners)} only"
    near = did_you_mean(key.rpartition(".")[2], _known_keys(key.rpartition(".")[0]))
    prefix = key.rpartition(".")[0] + "." if "." in key else ""
    hint = f"did you mean {prefix}{near}? " if near else "check its spelling; "
    return f"unknown key '{key}' ({hint}`otfgen --help` lists the settings)"


def did_you_mean(name: str, known) -> str | None:
    """The known name closest to a mistyped one, if any is close."""
    import difflib

    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return match[0] if match else None


def _known_keys(section: str) -> list[str]:
    """The keys the schema declares under a dotted section ("" = the top level; "launcher": every
    launcher's); none where the section is not a dataclass of the schema (scene.params, policy.options)."""
    classes = [RunConfig]
    for part in section.split(".") if section else []:
        if part == "launcher" and classes == [RunConfig]:
            classes = list(LAUNCHERS.values())
            continue
        types = [f.default_factory for c in classes for f in fields(c) if f.name == part
                 and callable(getattr(f, "default_factory", None))]
        classes = [t for t in types if isinstance(t, type) and is_dataclass(t)]
        if not classes:
            return []
    return sorted({f.name for c in classes for f in fields(c)})


@dataclass(frozen=True)
class BudgetCfg:
    samples: int = 200_000


@dataclass(frozen=True)
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


# the values of trainer.val_data / trainer.real_data (and scene.val_data) that are not paths
BUILTIN = "sklearn-digits"  # scikit-learn's 1,797 real 8×8 digits, upscaled (otfgen.trainer.data)
STREAM = "stream"  # validate on the first trainer.val_stream_samples generated samples, held out
REWARD = "reward"  # trainer.real_data=reward: train on the reward split's images themselves


VAL_POINTS = 8  # validations a run makes at least when trainer.val_every is not given
VAL_EVERY_MAX = 25_000


def val_interval(val_every: int | None, budget: int) -> int:
    """Samples between validations: ``trainer.val_every`` as given, else scaled to the budget."""
    if val_every is not None:
        return val_every
    return max(1, min(VAL_EVERY_MAX, -(-budget // VAL_POINTS)))


@dataclass(frozen=True)
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
    # samples between validations; null = budget.samples / VAL_POINTS, at most VAL_EVERY_MAX, so a
    # short run still draws a curve and a long one is not slowed by validating often
    val_every: Optional[int] = None
    data_timeout_s: float = 60.0
    queue: int = 4  # decoded requests buffered ahead of the training step
    # few-real mode: k real labelled images per class mixed into every minibatch
    # .npz / IDX path (its images not picked for training are validated on), or "reward": the
    # reward split's images themselves (the real data a policy would see)
    real_data: Optional[str] = None
    real_per_class: int = 10
    real_fraction: float = 0.25  # share of each minibatch drawn (with replacement) from the real images
    log_every_s: float = 10.0
    # also write scalars and sample grids for TensorBoard to <run>/tensorboard (extra: tensorboard)
    tensorboard: bool = False
    # share of the validation set kept for the policy's feedback (per-class accuracy, real features);
    # val/... figures are then reported on the remaining part only
    reward_split: float = 0.0
    # training steps between refreshes of the reward split's mean gradient (the grad_alignment signal)
    signal_every: int = 25
    # share of each minibatch's generated samples trained on: those the policy's signal rates
    # highest (online batch selection, as in RHO-LOSS); 1 = all. Needs a policy with a signal.
    # Every generated sample still counts against budget.samples and still reaches the policy.
    select: float = 1.0


@dataclass(frozen=True)
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


def _writable(node):
    """OmegaConf marks nodes of frozen dataclasses read-only; Hydra must still merge into them."""
    from omegaconf import DictConfig, OmegaConf

    OmegaConf.set_readonly(node, False)
    if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
        for k in node.keys():
            child = node._get_node(k)
            if isinstance(child, DictConfig):
                _writable(child)
    return node


def structured(cls):
    """``cls`` as an OmegaConf node Hydra can merge overrides into."""
    from omegaconf import OmegaConf

    return _writable(OmegaConf.structured(cls))


def from_dict(data: dict) -> RunConfig:
    """Plain settings (a composed config, or a run's config.json) as a ``RunConfig``. ``policy.options``
    stays a mapping here: only the controller knows each policy's ``Args`` (controller.config types
    and checks them)."""
    import dataclasses

    from omegaconf import OmegaConf

    from omegaconf.errors import ConfigKeyError

    data = dict(data)
    data.pop("hydra", None)
    policy = data.pop("policy", None) or {}
    launcher = launcher_class((data.get("launcher") or {}).get("name", "local"))
    try:
        merged = OmegaConf.merge(structured(RunConfig), {"launcher": structured(launcher)}, data)
    except ConfigKeyError as e:
        raise ConfigError(unknown_key(e.full_key)) from None
    out = OmegaConf.to_object(merged)
    out = dataclasses.replace(out, policy=PolicyCfg(name=policy.get("name", "uniform"), bins=int(policy.get("bins", 8)),
                                                    options=dict(policy.get("options") or {})))
    if out.workers is not None:  # the shorthand `workers=N` is launcher.workers
        out = dataclasses.replace(out, workers=None, launcher=dataclasses.replace(out.launcher, workers=out.workers))
    return out


def save(cfg: RunConfig, path) -> None:
    """A run's resolved settings as JSON (<run>/config.json): what every process of the run reads."""
    import dataclasses
    import json
    from pathlib import Path

    Path(path).write_text(json.dumps(dataclasses.asdict(cfg), indent=1))


def load(path) -> RunConfig:
    """A run's config.json (``save``), already composed and checked by the process that wrote it."""
    import json
    from pathlib import Path

    return from_dict(json.loads(Path(path).read_text()))
