"""How a run's configuration is made: Hydra composes ``configs/`` into ``configs.schema.RunConfig``.

The schema's dataclasses are registered with Hydra (``run_schema``), and each policy's ``Args``
dataclass as the schema of its ``configs/policy/<name>.yaml`` (``schema/policy/<name>``), so
``policy.options.floor=0.3`` works and ``otfgen --help`` lists every option. A key that is not
in the schema — ``trainer.lrr=1``, ``+trainer.lrr=1``, ``+foo=1`` — fails at start-up with one
line naming it. ``check`` then tests what would otherwise fail late inside a child process.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from otfgen.configs import cli, schema
from otfgen.configs.schema import ConfigError, PolicyCfg, RunConfig, structured

__all__ = ["ConfigError", "RunConfig", "register", "compose", "from_hydra", "from_argv", "check", "save", "load",
           "with_run_dir", "default_run_dir"]


def policy_args() -> dict[str, type | None]:
    """Policy name -> its ``Args`` dataclass (None for a policy without options)."""
    from otfgen.controller import policies

    out = {}
    for name in policies.names():
        try:
            out[name] = policies.args_class(name)
        except ValueError as e:  # an installed policy that cannot load must not stop every run
            print(f"otfgen: warning: {e}", file=sys.stderr)
    return out


def scene_names() -> list[str]:
    """What ``scene=NAME`` accepts: the packaged scene YAMLs and the entry-point families."""
    from otfgen.blender_gen import families

    packaged = [p.stem for p in (Path(__file__).resolve().parents[1] / "configs" / "scene").glob("*.yaml")]
    return sorted({*packaged, *families.external()})


def register() -> None:
    from hydra.core.config_store import ConfigStore

    from otfgen.controller import policies

    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=structured(RunConfig))
    for name, cls in schema.LAUNCHERS.items():  # configs/launcher/<name>.yaml: defaults /schema/launcher/<name>
        cs.store(group="schema/launcher", name=name, node=structured(cls))
    for name, args in policy_args().items():
        fields = [("name", str, name)]
        if args is not None:
            fields.append(("options", args, dataclasses.field(default_factory=args)))
        node = dataclasses.make_dataclass(f"{name.capitalize()}PolicyCfg", fields, bases=(PolicyCfg,), frozen=True)
        cs.store(group="schema/policy", name=name, node=structured(node))
        if name not in policies.NAMES:  # an installed policy has no YAML in configs/policy: its schema is its config
            cs.store(group="policy", name=name, node=structured(node))
    from otfgen.blender_gen import families

    for name in families.builtin():  # what configs/scene/*.yaml narrow: defaults /schema/scene/<family>
        cs.store(group="schema/scene", name=name, node=families.scene_schema(name))
    for name, scene in families.external_scenes().items():  # installed families: scene=NAME
        cs.store(group="scene", name=name, node=scene)


def _check_policy_options(policy: dict) -> None:
    name = policy.get("name")
    known = policy_args()
    if name not in known:
        raise ConfigError(f"policy.name: unknown policy '{name}'; available: {list(known)}")
    options = policy.get("options") or {}
    args = known[name]
    allowed = {f.name for f in dataclasses.fields(args)} if args is not None else set()
    for key in options:
        if key not in allowed:
            raise ConfigError(f"unknown key 'policy.options.{key}' for policy={name}; allowed: {sorted(allowed)}")


def from_hydra(cfg) -> RunConfig:
    """DictConfig -> RunConfig (validated against the schema once, here)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    _check_policy_options(data.get("policy", {}))
    out = schema.from_dict(data)
    args = policy_args()[out.policy.name]
    return dataclasses.replace(out, policy=dataclasses.replace(
        out.policy, options=args(**out.policy.options) if args is not None else {}))


def with_run_dir(cfg: RunConfig, run_dir: str | Path | None) -> RunConfig:
    return dataclasses.replace(cfg, run_dir=None if run_dir is None else str(run_dir))


save = schema.save


def load(path: str | Path) -> RunConfig:
    """A run's config.json with its policy's options typed and checked (what the controller needs)."""
    return from_hydra(OmegaConf.create(json.loads(Path(path).read_text())))


def compose(overrides: list[str]) -> RunConfig:
    """Compose configs/config.yaml with Hydra overrides, outside of @hydra.main."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="otfgen.configs", version_base=None):
            cfg = hydra_compose(config_name="config", overrides=overrides)
    except Exception as e:  # Hydra's and OmegaConf's override / missing-group errors
        raise ConfigError(one_line(e)) from None
    return from_hydra(cfg)


def one_line(e: BaseException) -> str:
    """Hydra's errors span several lines and hide the detail in ``__cause__``: one line that names
    the key and what is wrong with it."""
    import re

    text = str(e)
    cause = str(e.__cause__ or "")
    m = re.match(r"Could not override '([^']+)'", text)
    if m and ("not in" in cause or "not in struct" in text):
        return schema.unknown_key(m.group(1))
    m = re.match(r"In '[^']*': Could not find '([^/']+)/([^']+)'", text)
    if m:
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        near = schema.did_you_mean(m.group(2), options)
        return (f"{m.group(1)}={m.group(2)}: no such config; available: {', '.join(options)}"
                + (f"; did you mean {m.group(1)}={near}?" if near else ""))
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
    detail = next((ln.strip() for ln in cause.splitlines() if ln.strip()), "")
    if e.__cause__ is not None and "raised while composing" in first:
        return one_line(e.__cause__)
    return f"{first}: {detail}" if detail else first


def default_run_dir(prog: str) -> str:
    import time

    return time.strftime(f"outputs/%Y-%m-%d/%H-%M-%S-{prog}")


def from_argv(argv: list[str], prog: str, flags: dict[str, str] | None = None) -> tuple[RunConfig, dict[str, str]]:
    """``--config PATH`` (a resolved config written by the launcher) or Hydra overrides.

    Other ``--key=value`` flags are returned as extras (e.g. ``--ready`` for the controller);
    ``flags`` describes them for ``--help``.
    """
    path, extra, overrides, help_asked = cli.split_argv(argv)
    if help_asked:
        from otfgen.controller import usage

        try:
            print(usage.process_help(prog, flags or {}, overrides))
        except ConfigError as e:
            raise SystemExit(f"{prog}: configuration error: {e}") from None
        raise SystemExit(0)
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
        cfg = with_run_dir(cfg, default_run_dir(prog))
    return cfg, extra


def check_device(name: str) -> None:
    """``trainer.device``: fail before any process starts, not in the trainer seconds later."""
    if name in ("auto", "cpu"):
        return
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"trainer.device={name}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return
    if dev.type != "cuda":
        raise ConfigError(f"trainer.device={name}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name}: CUDA is not available on this machine (use auto or cpu)")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"trainer.device={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def check(cfg: RunConfig) -> None:
    """Start-up checks of what would otherwise fail late inside a child process."""
    from otfgen.blender_gen import security
    from otfgen.blender_gen.families import scene_space

    scene_space(cfg)
    _check_launcher(cfg.launcher)
    _check_backend(cfg)
    check_device(cfg.trainer.device)
    for setting, endpoint in (("controller.bind", cfg.controller.bind), ("trainer.bind", cfg.trainer.bind)):
        if cfg.launcher.name != "local" and not cfg.controller.keys:
            break  # launcher=ray / slurm make a key pair for the run
        try:
            security.for_endpoint(cfg.controller.keys, setting, endpoint, server=True)
        except security.KeysError as e:
            raise ConfigError(str(e) if setting in str(e) else f"controller.keys: {e}") from None
    for key in ("val_data", "real_data"):
        path = getattr(cfg.trainer, key)
        if path not in (None, schema.BUILTIN, schema.STREAM, schema.REWARD) and not Path(path).expanduser().exists():
            raise ConfigError(f"trainer.{key}: data path '{path}' does not exist")
    if cfg.trainer.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("trainer.tensorboard=true needs the tensorboard package (pip install 'otfgen[tensorboard]')")
    if not 0.0 <= cfg.trainer.reward_split < 1.0:
        raise ConfigError("trainer.reward_split must be in [0, 1)")
    if cfg.trainer.real_data == schema.REWARD and cfg.trainer.reward_split <= 0:
        raise ConfigError(f"trainer.real_data={schema.REWARD} trains on the reward split: set trainer.reward_split")
    from otfgen.controller import policies

    if policies.signal_of(cfg.policy.name) != "none" and cfg.trainer.reward_split <= 0:
        raise ConfigError(f"policy={cfg.policy.name} learns from real data: set trainer.reward_split (e.g. 0.5) so "
                          "that results are reported on a part it never saw")
    from otfgen.trainer.judges import check_select

    check_select(cfg.trainer.select, policies.signal_of(cfg.policy.name), cfg.policy.name)
    if not 0.0 <= cfg.trainer.real_fraction < 1.0:
        raise ConfigError("trainer.real_fraction must be in [0, 1)")
    for key, blur in (("model.input_blur", cfg.model.input_blur), ("scene.input_blur", cfg.scene.input_blur)):
        if blur is not None and not 0.0 <= blur <= 3.0:
            raise ConfigError(f"{key}={blur}: expected a blur std in pixels in [0, 3] (0 = off)")
    for key in ("launcher.workers", "controller.request_size", "controller.credits", "budget.samples",
                "trainer.batch_size", "trainer.ranks"):
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) < 1:
            raise ConfigError(f"{key} must be >= 1")


def _check_launcher(lc) -> None:
    """What a launcher's schema cannot say: values that work together, and its extra (ray,
    submitit) installed. Its keys are its dataclass's (configs.schema.LAUNCHERS)."""
    import importlib.util

    if lc.name == "local":
        return
    if lc.blender:
        raise ConfigError(f"launcher.blender: launcher={lc.name} runs workers in its own Python processes; "
                          "install bpy (the blender extra) on the render nodes instead")
    if lc.num_cpus <= 0 or (lc.num_gpus is not None and lc.num_gpus < 0):
        raise ConfigError("launcher.num_cpus must be > 0 and launcher.num_gpus >= 0")
    if lc.name == "slurm" and lc.executor not in ("slurm", "local"):
        raise ConfigError(f"launcher.executor={lc.executor}: expected slurm or local")
    module = {"ray": "ray", "slurm": "submitit"}[lc.name]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"launcher={lc.name} needs {module}, which is not installed in {sys.executable}: "
                          f"`pip install 'otfgen[{lc.name}]'`")


def _check_backend(cfg: RunConfig) -> None:
    """A Blender family needs bpy here, or a Blender executable to run its workers under."""
    import importlib.util
    import shutil

    from otfgen.blender_gen import families

    family = families.load(cfg.scene.name)
    if not getattr(family, "NEEDS_BLENDER", False):
        if cfg.scene.render:
            raise ConfigError(f"scene.render: family '{cfg.scene.name}' takes no render options")
        return
    blender = cfg.launcher.blender
    if blender:
        if shutil.which(blender) is None:
            raise ConfigError(f"launcher.blender: '{blender}' is not an executable")
    elif importlib.util.find_spec("bpy") is None:
        raise ConfigError(
            f"scene '{cfg.scene.name}' renders with Blender but bpy is not installed in {sys.executable}: "
            "`pip install 'otfgen[blender]'` (Python 3.11), or set launcher.blender=/path/to/blender")
