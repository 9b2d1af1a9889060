"""``--help`` for the commands that take Hydra overrides (``otfgen``, ``otfgen-controller``,
``otfgen-train``): what they do, their subcommands or flags, and every setting with its value.

The settings are read from the composed ``RunConfig`` itself (``otfgen policy=rho --help``
lists rho's options), so the list cannot drift from the schema.
"""

from __future__ import annotations

import dataclasses
from typing import Any

OTFGEN = """\
usage: otfgen [KEY=VALUE ...]        the whole loop on this machine: controller, workers, trainer
       otfgen SUBCOMMAND ARGS ...

subcommands (`otfgen SUBCOMMAND --help` for each):
  preview  scene=NAME n=64 [sweep=PARAM]       a labelled PNG grid of a scene, rendered here, no trainer
  export   RUN --out DIR --format webdataset|npz  a run's stream regenerated into shards
  replay   RUN                                  regenerate a run's stream and check its bytes
  keys     DIR                                  CurveZMQ keys for endpoints beyond loopback
  compare  policies=[A,B] seeds=N [KEY=VALUE]   several arms over the same seeds, paired (otfgen-compare)
  serve    [KEY=VALUE ...]                      the controller and workers only, for a loop of your own
                                                (what Stream.local starts): prints the endpoint as JSON

e.g.  otfgen budget.samples=20000
      otfgen scene=mnist2d_wide policy=rho trainer.select=0.25 trainer.reward_split=0.1
A mistyped key stops the run at start-up with one line naming it (exit code 2). Hydra's own
flags still work: `otfgen --cfg job` prints the composed config, `--hydra-help` Hydra's help.
"""


def _value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return str(v)


def _flat(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            out += _flat(v, key + ".")
        elif isinstance(v, dict) and key == "scene.params":
            continue  # listed on their own below, with range and doc
        elif isinstance(v, dict):
            out += [(f"{key}.{k}", _value(x)) for k, x in v.items()] or [(key, "{}")]
        else:
            out.append((key, _value(v)))
    return out


def settings(overrides: list[str] | None = None) -> str:
    """Every setting of the composed config (KEY=VALUE) and the scene's parameters."""
    from otfgen.blender_gen import families
    from otfgen.controller import config as config_mod
    from otfgen.controller import policies

    cfg = config_mod.compose(list(overrides or []))
    rows = [(k, v) for k, v in _flat(cfg) if k not in ("workers", "run_dir")]
    width = max(len(k) for k, _ in rows)
    lines = [f"settings ({' '.join(overrides) if overrides else 'defaults'}; KEY=VALUE on the command line):",
             f"  {'scene':<{width}}  {cfg.scene.name}    one of: {', '.join(config_mod.scene_names())}",
             f"  {'policy':<{width}}  {cfg.policy.name}    one of: {', '.join(policies.names())}"]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows if k not in ("scene.name", "policy.name")]
    lines.append(f"  {'workers':<{width}}  shorthand for launcher.workers")
    lines.append(f"\nscene parameters of {cfg.scene.name} (narrow with scene.params.NAME.low=… / .high=…; "
                 f"family {cfg.scene.name} of {', '.join(families.available())}):")
    params = cfg.scene.params
    pw = max(len(k) for k in params)
    for name, p in params.items():
        rng = (f"choice {list(p.get('choices') or [])}" if p.get("kind") == "choice"
               else f"{p.get('kind')} [{p.get('low')}, {p.get('high')}]")
        lines.append(f"  {name:<{pw}}  {rng}, default {p.get('default')}: {p.get('doc') or ''}")
    return "\n".join(lines)


def otfgen_help(overrides: list[str]) -> str:
    return OTFGEN + "\n" + settings(overrides)


def process_help(prog: str, flags: dict[str, str], overrides: list[str]) -> str:
    """``otfgen-controller --help`` / ``otfgen-train --help``."""
    lines = [f"usage: {prog} --config RUN/config.json [--FLAG=VALUE ...]",
             f"       {prog} [KEY=VALUE ...]   (Hydra overrides, as for otfgen)", "",
             "  --config PATH      a resolved config written by the launcher (RUN/config.json)"]
    lines += [f"  --{k + '=VALUE':<17}{v}" for k, v in flags.items()]
    return "\n".join(lines) + "\n\n" + settings(overrides)
