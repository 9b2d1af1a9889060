"""Random search over scene boxes: the baseline a learning policy must beat at the same budget.

An arm ``NAME:random_search+OVERRIDE+...`` of ``otfgen-compare`` draws ``search.boxes`` (4)
boxes from the scene's prior — per parameter a sub-range with a uniform centre and a width
uniform in [¼, 1] of the range, clipped to it; per choice parameter a random non-empty subset;
the class label is left whole — trains each briefly (``search.probe_samples``, 5,000, uniform
over the box), keeps the box with the best accuracy on the real *reward* split, then trains on
that box with what is left of the budget. Every generated sample counts: the probes' samples
come out of ``budget.samples``, so the final run gets ``budget.samples − boxes × probe_samples``.
The reported figure is the final run's, on the report split like every other arm's.

The probes live in ``<arm>/seed<s>/probes/box<i>``; the chosen box and every probe's reward
accuracy in ``<arm>/seed<s>/search.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from otfgen.controller.study.runs import last_value, load_metrics

NAME = "random_search"
OPTIONS = {"search.boxes": 4, "search.probe_samples": 5000}


def split_options(overrides: list[str]) -> tuple[dict[str, int], list[str]]:
    """The ``search.*`` options out of an arm's overrides; the rest go to every run."""
    opts, rest = dict(OPTIONS), []
    for o in overrides:
        key, sep, value = o.partition("=")
        if key.startswith("search."):
            if key not in OPTIONS:
                raise SystemExit(f"otfgen-compare: unknown random-search option '{key}'; known: {sorted(OPTIONS)}")
            opts[key] = int(value)
        else:
            rest.append(o)
    if opts["search.boxes"] < 1 or opts["search.probe_samples"] < 1:
        raise SystemExit("otfgen-compare: search.boxes and search.probe_samples must be >= 1")
    return opts, rest


def draw_boxes(params: dict[str, dict], label: str, k: int, seed: int) -> list[list[str]]:
    """k boxes from the prior as lists of ``scene.params.*`` overrides."""
    rng = np.random.default_rng([seed, 0x5EA7C4])
    boxes = []
    for _ in range(k):
        box = []
        for name, p in params.items():
            if name == label:
                continue
            if p["kind"] == "choice":
                choices = list(p["choices"])
                keep = [c for c in choices if rng.random() < 0.5] or [choices[rng.integers(len(choices))]]
                box.append(f"scene.params.{name}.choices=[{','.join(map(str, keep))}]")
                if p.get("default") not in keep:
                    box.append(f"scene.params.{name}.default={keep[0]}")
                continue
            lo, hi = float(p["low"]), float(p["high"])
            if hi <= lo:
                continue
            width = (hi - lo) * rng.uniform(0.25, 1.0)
            centre = rng.uniform(lo, hi)
            a, b = max(lo, centre - width / 2), min(hi, centre + width / 2)
            if p["kind"] == "int":
                a, b = int(np.floor(a)), int(np.ceil(b))
                box += [f"scene.params.{name}.low={a}", f"scene.params.{name}.high={b}"]
            else:
                box += [f"scene.params.{name}.low={a:.6g}", f"scene.params.{name}.high={b:.6g}"]
            d = float(p.get("default", a))
            if not a <= d <= b:
                box.append(f"scene.params.{name}.default={a:.6g}" if p["kind"] == "float"
                           else f"scene.params.{name}.default={a}")
        boxes.append(box)
    return boxes


def run(rdir: Path, seed: int, overrides: list[str], launch: Callable[[Path, list[str]], dict]) -> dict:
    """Probes, choice, final run; ``launch(run_dir, overrides)`` runs one otfgen run and returns its
    record (as compare.run_one does). Returns the final run's record with the search's facts."""
    from otfgen.controller.config import compose

    opts, overrides = split_options(overrides)
    cfg = compose(overrides)
    budget = cfg.budget.samples
    k, probe = opts["search.boxes"], opts["search.probe_samples"]
    final_budget = budget - k * probe
    if final_budget < probe:
        raise SystemExit(f"otfgen-compare: random search needs budget.samples ({budget}) >= "
                         f"(search.boxes + 1) × search.probe_samples ({(k + 1) * probe})")
    if cfg.trainer.reward_split <= 0:
        raise SystemExit("otfgen-compare: random search chooses its box on the reward split: set trainer.reward_split")
    from otfgen.blender_gen import families

    label = families.load(cfg.scene.name).LABEL_PARAM
    boxes = draw_boxes(cfg.scene.params, label, k, seed)
    probes = []
    for i, box in enumerate(boxes):
        pdir = rdir / "probes" / f"box{i}"
        rec = launch(pdir, [*overrides, *box, f"budget.samples={probe}", f"trainer.val_every={probe}"])
        acc = last_value(load_metrics(pdir / "metrics.jsonl"), "reward/acc") if rec["ok"] else None
        acc = None if acc is None else float(acc)
        probes.append({"box": box, "reward_acc": acc, "ok": rec["ok"], "wall_s": rec.get("wall_s")})
        print(f"    probe {i + 1}/{k}: reward acc {'—' if acc is None else f'{100 * acc:.1f}%'}", flush=True)
    scored = [p for p in probes if p["reward_acc"] is not None]
    if not scored:
        return {"ok": False, "returncode": 1, "tail": "every random-search probe failed", "config_error": False}
    best = max(range(len(probes)), key=lambda i: -1.0 if probes[i]["reward_acc"] is None else probes[i]["reward_acc"])
    rec = launch(rdir, [*overrides, *boxes[best], f"budget.samples={final_budget}"])
    (rdir / "search.json").write_text(json.dumps({"boxes": probes, "chosen": best, "probe_samples": probe,
                                                  "final_samples": final_budget, "budget": budget}, indent=1))
    # the probes' time is the search's cost: the arm's wall time is all of it
    rec = {**rec, "final_wall_s": rec.get("wall_s"),
           "wall_s": round(sum(p.get("wall_s") or 0.0 for p in probes) + (rec.get("wall_s") or 0.0), 2)}
    return rec
