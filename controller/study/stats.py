"""The statistics of a comparison: paired differences with t intervals, headroom shares,
samples to reach an accuracy, and the headline criterion against uniform; one row per arm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from otfgen.controller.study.runs import Run, read_run

BASELINE = "uniform"


def samples_to_reach(xs: np.ndarray, ys: np.ndarray, target: float) -> float | None:
    """First sample count where the curve reaches ``target``, linear between validation points.

    Before the first validation nothing is known, so a curve already there at its first point
    reports that point (an upper bound)."""
    hit = np.nonzero(ys >= target - 1e-9)[0]  # uniform's own mean must reach uniform's mean despite rounding
    if len(hit) == 0:
        return None
    i = int(hit[0])
    if i == 0:
        return float(xs[0])
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(min(x1, x0 + (target - y0) * (x1 - x0) / (y1 - y0)))


def mean_curve(runs: list[Run]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max accuracy over seeds on the union of their validation points, limited to
    the range every seed covers (extrapolating a shorter run would invent data)."""
    runs = [r for r in runs if len(r.samples)]
    if not runs:
        return (np.zeros(0),) * 4
    lo = max(r.samples[0] for r in runs)
    hi = min(r.samples[-1] for r in runs)
    grid = np.unique(np.concatenate([r.samples for r in runs]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    stack = np.stack([np.interp(grid, r.samples, r.acc) for r in runs])
    return grid, stack.mean(0), stack.min(0), stack.max(0)


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _std(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else (0.0 if vals else None)


def summarize(policy: str, runs: list[Run], thresholds: list[float]) -> dict:
    """One table row: accuracies in %, everything None when unknown."""
    good = [r for r in runs if r.ok]
    finals = [100 * r.final_acc for r in good]
    grid, mean, _, _ = mean_curve(good)
    walls = [r.wall_s for r in good]
    overheads = [100 * r.policy_time_s / r.wall_s for r in good if r.policy_time_s is not None and r.wall_s]
    signal_costs = [100 * r.signal_time_s / r.wall_s for r in good if r.signal_time_s is not None and r.wall_s]
    return {
        "policy": policy,
        "runs_ok": len(good),
        "runs": len(runs),
        "final_acc_mean": _mean(finals),
        "final_acc_std": _std(finals),
        "final_acc_min": min(finals) if finals else None,
        "final_acc_max": max(finals) if finals else None,
        "budget": _mean([r.budget for r in good]),
        "samples_to": {f"{t:g}": samples_to_reach(grid, mean, t / 100) if len(grid) else None for t in thresholds},
        "data_wait_pct": _mean([100 * r.data_wait for r in good if r.data_wait is not None]),
        "wall_s": _mean(walls),
        "policy_overhead_pct": _mean(overheads),
        "signal_cost_pct": _mean(signal_costs) if signal_costs else 0.0,
    }


def accuracy_at(run: Run, samples: float) -> float | None:
    """Accuracy of one run at a sample count (linear between validations), None if not reached yet."""
    if not len(run.samples) or samples > run.samples[-1]:
        return None
    return float(np.interp(samples, run.samples, run.acc))


def criterion(policy_runs: list[Run], base_runs: list[Run], base_row: dict) -> dict:
    """The headline test for one learning policy against uniform, both arms outside the seed spread:

    - half budget: at half of uniform's budget the policy's worst seed is at or above uniform's
      best final accuracy, and its mean curve reaches uniform's final mean by then;
    - equal budget: the policy's final mean is >= 1 point above uniform's and its worst seed is
      above uniform's best.
    """
    good = [r for r in policy_runs if r.ok]
    base = [r for r in base_runs if r.ok]
    if not good or not base:
        return {"met": None, "reason": "no successful runs" if not good else f"no successful {BASELINE} runs"}
    target = base_row["final_acc_mean"] / 100
    budget = base_row["budget"]
    grid, mean, _, _ = mean_curve(good)
    to_target = samples_to_reach(grid, mean, target)
    base_best = max(100 * r.final_acc for r in base)
    at_half = [accuracy_at(r, budget / 2) for r in good]
    half_ok = (to_target is not None and to_target <= budget / 2 and None not in at_half
               and 100 * min(at_half) >= base_best)
    finals = [100 * r.final_acc for r in good]
    gain = float(np.mean(finals)) - base_row["final_acc_mean"]
    equal_ok = gain >= 1.0 and min(finals) > base_best
    return {"met": bool(half_ok or equal_ok), "half_budget": bool(half_ok), "equal_budget": bool(equal_ok),
            "samples_to_uniform_final": to_target,
            "ratio_to_uniform_budget": None if to_target is None else to_target / budget,
            "gain_points": gain, "worst_seed_final": min(finals), "uniform_best_final": base_best}


def paired(arm_runs: list[Run], base_runs: list[Run]) -> dict | None:
    """Final accuracy, arm − baseline on the same seeds (points): mean, sd, 95% t interval."""
    from scipy import stats

    base = {r.seed: r for r in base_runs if r.ok}
    d = np.array([100 * (r.final_acc - base[r.seed].final_acc) for r in arm_runs if r.ok and r.seed in base])
    if len(d) == 0:
        return None
    mean = float(d.mean())
    if len(d) < 2:
        return {"n": 1, "mean": mean, "sd": None, "lo": None, "hi": None, "claim": "one seed: no interval"}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(d) - 1) * sd / np.sqrt(len(d)))
    lo, hi = mean - half, mean + half
    claim = "gain" if lo > 0 else "loss" if hi < 0 else "no difference shown"
    return {"n": int(len(d)), "mean": mean, "sd": sd, "lo": lo, "hi": hi, "claim": claim,
            "diffs": [float(x) for x in d]}


def wall_ratio(arm_runs: list[Run], base_runs: list[Run]) -> float | None:
    """The arm's wall time ÷ the baseline's on the same seed, averaged over seeds: what the whole
    arm costs in time at the same budget, its policy and signal and whatever they save included."""
    base = {r.seed: r for r in base_runs if r.ok and r.wall_s}
    ratios = [r.wall_s / base[r.seed].wall_s for r in arm_runs if r.ok and r.wall_s and r.seed in base]
    return float(np.mean(ratios)) if ratios else None


def analyse(out: Path, policies: list[str], seeds: int | list[int], thresholds: list[float],
            baseline: str = BASELINE, headroom: list[str] | None = None,
            on_wide: list[str] | None = None) -> dict:
    """``on_wide``: the arms that run on the wide arm's scene, the only ones whose share of the
    headroom means anything (None: every arm)."""
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    runs = {p: [read_run(out, p, s) for s in seed_list] for p in policies}
    rows = {p: summarize(p, runs[p], thresholds) for p in policies}
    base_row = rows.get(baseline)
    have_base = base_row is not None and base_row["runs_ok"] > 0
    gap = paired(runs[headroom[0]], runs[headroom[1]]) if headroom else None
    for p in policies:
        rows[p]["paired"] = paired(runs[p], runs[baseline]) if have_base and p != baseline else None
        rows[p]["wall_ratio"] = wall_ratio(runs[p], runs[baseline]) if have_base else None
        if gap is not None and gap["mean"] > 0 and p != headroom[1] and (on_wide is None or p in on_wide):
            vs_wide = paired(runs[p], runs[headroom[1]])
            rows[p]["headroom_closed"] = None if vs_wide is None else vs_wide["mean"] / gap["mean"]
            rows[p]["vs_wide"] = vs_wide
        if have_base:
            crit = criterion(runs[p], runs[baseline], base_row) if p != baseline else {}
            grid, mean, _, _ = mean_curve([r for r in runs[p] if r.ok])
            to = samples_to_reach(grid, mean, base_row["final_acc_mean"] / 100) if len(grid) else None
            rows[p]["samples_to_uniform_final"] = to
            rows[p]["ratio_to_uniform_budget"] = None if to is None else to / base_row["budget"]
            rows[p]["criterion"] = crit or None
        else:
            rows[p].update(samples_to_uniform_final=None, ratio_to_uniform_budget=None, criterion=None)
    return {"out": str(out), "policies": policies, "seeds": len(seed_list), "seed_list": seed_list,
            "thresholds": thresholds, "baseline": baseline, "headroom": headroom, "headroom_gap": gap,
            "rows": [rows[p] for p in policies],
            "runs": [{"policy": r.policy, "seed": r.seed, "ok": r.ok, "final_acc": r.final_acc,
                      "samples": r.budget, "wall_s": r.wall_s} for p in policies for r in runs[p]],
            "_runs": runs}

