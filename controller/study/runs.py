"""One run of a study on disk: where it lives, and what it recorded, read back.

The runner (``compare``) writes ``<out>/<arm>/seed<s>`` with the run's ``metrics.jsonl`` and
the harness's own record of it (a budget sweep: ``<out>/budget<N>/<arm>/seed<s>``, each budget's
folder laid out as one comparison); the statistics and the report read them through this module, so
the layout has one definition that both sides share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RUN_RECORD = "compare_run.json"  # what the harness saw of one run (exit code, wall time)


def run_dir(out: Path, policy: str, seed: int) -> Path:
    return out / policy / f"seed{seed}"


def budget_dir(out: Path, budget: int) -> Path:
    """A sweep's comparison at one budget."""
    return out / f"budget{budget}"


def load_metrics(path: Path) -> list[dict]:
    """metrics.jsonl lines; a line cut short (a run killed mid-write) is skipped, not fatal."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def val_curve(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(samples, accuracy in [0,1]) at each validation, in sample order."""
    pts = sorted({int(r["train/samples"]): float(r["val/acc"]) for r in rows
                  if "val/acc" in r and "train/samples" in r}.items())
    if not pts:
        return np.zeros(0), np.zeros(0)
    xs, ys = zip(*pts)
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def final_accuracy(rows: list[dict]) -> float | None:
    _, ys = val_curve(rows)
    return float(ys[-1]) if len(ys) else None


def last_value(rows: list[dict], key: str):
    for r in reversed(rows):
        if key in r:
            return r[key]
    return None


@dataclass
class Run:
    policy: str
    seed: int
    ok: bool
    samples: np.ndarray  # validation points
    acc: np.ndarray
    wall_s: float | None
    data_wait: float | None  # fraction of step time the trainer waited for data, at the end
    policy_time_s: float | None
    rows: list[dict]
    signal_time_s: float | None = None  # the trainer's time computing the policy's signal (signal/time_s)

    @property
    def final_acc(self) -> float | None:
        return float(self.acc[-1]) if len(self.acc) else None

    @property
    def budget(self) -> float | None:
        return float(self.samples[-1]) if len(self.samples) else None


def read_run(out: Path, policy: str, seed: int) -> Run:
    rdir = run_dir(out, policy, seed)
    rows = load_metrics(rdir / "metrics.jsonl")
    rec_path = rdir / RUN_RECORD
    rec = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    xs, ys = val_curve(rows)
    # the launcher's wall time when the harness ran it; else the trainer's own clock
    wall = rec.get("wall_s") or last_value(rows, "train/elapsed_s")
    ok = rec.get("ok", True) and len(ys) > 0
    return Run(policy, seed, ok, xs, ys, wall, last_value(rows, "train/data_wait"),
               last_value(rows, "policy/time_s"), rows, last_value(rows, "signal/time_s"))

