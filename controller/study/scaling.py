"""The scaling law of a budget sweep: per arm, error(N) = a·N^(−b) + c fitted on each run's final
error on the report split (1 − final ``val/acc``), intervals from a bootstrap over seeds, and the
data-efficiency multiplier against the baseline.

- The fit is least squares on log error (a scaling curve spans decades; a fit in linear error
  would be decided by the smallest budgets alone), on the mean error over seeds at each budget,
  from several starting points, keeping the best.
- The bootstrap resamples seeds with replacement (a seed is the unit that repeats; its runs at
  different budgets are not pooled with other seeds'), jointly for every arm, so the baseline's
  target and an arm's fit come from the same draw; each draw is refitted, and the interval is the
  2.5–97.5 percentile of the draws. With S seeds there are only C(2S−1, S) distinct draws (10 for
  3 seeds): the intervals rest on that few.
- The multiplier: the baseline's error at its largest budget N_max, read on its fit, is the
  target; the baseline reaches it at N_max, the arm at its fit's inverse; their ratio. It is an
  extrapolation where the arm's budget lies outside the budgets it was measured at. Where an
  arm's floor c lies below the baseline's, the ratio grows without bound as the target nears the
  baseline's floor, so the budget at which the arm passes the baseline's floor is given as well.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from otfgen.controller.study.runs import budget_dir, read_run

N_BOOT = 2000
LEVEL = 95.0  # percent, the bootstrap intervals
ERR_FLOOR = 1e-4  # a perfect score has no logarithm; a tenth of an image in 1,000 stands in for it
MIN_BUDGETS = 3  # three parameters


@dataclass(frozen=True)
class Law:
    """error(N) = a·N^(−b) + c; ``rmse_log``: the fit's root mean square residual in log error
    (0.05 ≈ points 5% off the curve)."""

    a: float
    b: float
    c: float
    rmse_log: float = 0.0

    def error(self, n):
        return self.a * np.power(np.asarray(n, dtype=float), -self.b) + self.c

    def budget_for(self, err: float) -> float:
        """The budget at which the law reaches ``err``: inf where ``err`` is at or below what it
        ever reaches, 0 where it starts there."""
        if self.a <= 0 or self.b <= 0:  # flat: at its level everywhere
            level = self.c + (max(self.a, 0.0) if self.b <= 0 else 0.0)
            return 0.0 if err >= level else math.inf
        if err <= self.c:
            return math.inf
        log_n = -math.log((err - self.c) / self.a) / self.b  # in logs: a shallow law overflows a float
        return math.inf if log_n > 700 else math.exp(log_n)


def _curve_fit():
    try:
        from scipy.optimize import curve_fit
    except ImportError:  # scikit-learn, a dependency, requires scipy; an install without it is broken
        raise SystemExit("otfgen-compare: the scaling fit needs scipy (pip install scipy)") from None
    return curve_fit


def fit_law(budgets, errors) -> Law | None:
    """Least squares on log error; None where fewer than three budgets or no start converged."""
    x = np.asarray(budgets, dtype=float)
    y = np.maximum(np.asarray(errors, dtype=float), ERR_FLOOR)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[keep], y[keep]
    if len(np.unique(x)) < MIN_BUDGETS:
        return None
    curve_fit = _curve_fit()
    # in units of the budgets' geometric mean, A is an error (A + c there) and well scaled
    n0 = float(np.exp(np.mean(np.log(x))))
    u, ly = x / n0, np.log(y)

    def model(u, A, b, c):
        return np.log(A * np.power(u, -b) + c)

    best = None
    for b0 in (0.2, 0.5, 1.0):
        for share in (0.0, 0.5, 0.9):
            c0 = share * float(y.min())
            p0 = (max(float(np.exp(ly.mean())) - c0, 1e-6), b0, c0)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    p, _ = curve_fit(model, u, ly, p0=p0, bounds=([1e-12, 0.0, 0.0], [np.inf, 5.0, 1.0]),
                                     maxfev=5000)
            except (RuntimeError, ValueError, FloatingPointError):
                continue
            res = model(u, *p) - ly
            cost = float(np.mean(res ** 2))
            if np.isfinite(cost) and (best is None or cost < best[0]):
                best = (cost, p)
    if best is None:
        return None
    cost, (A, b, c) = best
    return Law(a=float(A * n0 ** b), b=float(b), c=float(c), rmse_log=math.sqrt(cost))


def efficiency(arm: Law, base: Law, n_max: float) -> dict:
    """The arm against the baseline at the baseline's error at ``n_max`` (on its fit)."""
    target = float(base.error(n_max))
    n_base = base.budget_for(target)
    n_arm = arm.budget_for(target)
    mult = 0.0 if math.isinf(n_arm) else (math.inf if n_arm == 0 else n_base / n_arm)
    below = arm.c < base.c
    return {"target": target, "baseline_budget": n_base, "budget": n_arm, "multiplier": mult,
            "floor_below_baseline": below, "passes_baseline_floor": arm.budget_for(base.c) if below else None}


# -- the sweep on disk ---------------------------------------------------------------------------

def seed_errors(out: Path, arm: str, budgets: list[int], seeds: list[int]) -> np.ndarray:
    """[seed, budget] final error on the report split; nan where the run did not finish."""
    e = np.full((len(seeds), len(budgets)), np.nan)
    for j, n in enumerate(budgets):
        for i, s in enumerate(seeds):
            r = read_run(budget_dir(out, n), arm, s)
            if r.ok and r.final_acc is not None:
                e[i, j] = 1.0 - r.final_acc
    return e


def _mean_points(errs: np.ndarray, budgets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    have = ~np.all(np.isnan(errs), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-nan column is dropped just after
        mean = np.nanmean(errs, axis=0)
    return budgets[have], mean[have]


def _inside(n: float, measured: list[int]) -> bool:
    lo, hi = measured
    return lo * (1 - 1e-9) <= n <= hi * (1 + 1e-9)  # the baseline's own N_max, read back through its fit


def _interval(values: list[float]) -> list[float] | None:
    """Percentile interval without interpolation: an infinite draw (never reached) stays one."""
    if not values:
        return None
    lo, hi = (100 - LEVEL) / 200, 1 - (100 - LEVEL) / 200
    return [float(q) for q in np.quantile(np.asarray(values, dtype=float), [lo, hi], method="inverted_cdf")]


def analyse_errors(errors: dict[str, np.ndarray], budgets: list[int], seeds: list[int], baseline: str,
                   n_boot: int = N_BOOT, rng_seed: int = 0) -> dict:
    """The whole analysis on a table of errors per arm ([seed, budget], nan = missing)."""
    nb = np.asarray(budgets, dtype=float)
    arms = list(errors)
    base = baseline if baseline in errors else None
    fits, points = {}, {}
    for arm, e in errors.items():
        x, y = _mean_points(e, nb)
        fits[arm] = fit_law(x, y)
        ok = ~np.isnan(e)
        points[arm] = [{"budget": int(n), "n": int(ok[:, j].sum()),
                        "errors": [None if np.isnan(v) else float(v) for v in e[:, j]],
                        "mean": float(np.nanmean(e[:, j])) if ok[:, j].any() else None,
                        "sd": float(np.nanstd(e[:, j], ddof=1)) if ok[:, j].sum() > 1 else None,
                        "min": float(np.nanmin(e[:, j])) if ok[:, j].any() else None,
                        "max": float(np.nanmax(e[:, j])) if ok[:, j].any() else None}
                       for j, n in enumerate(budgets)]
    n_max = None
    if base is not None:
        measured = [p["budget"] for p in points[base] if p["n"]]
        n_max = float(max(measured)) if measured else None

    # the bootstrap: a draw is a multiset of seeds; equal multisets give equal fits
    rng = np.random.default_rng(rng_seed)
    cache: dict[tuple, dict[str, Law | None]] = {}
    draws: dict[str, list[dict]] = {arm: [] for arm in arms}
    n_seeds = len(seeds)
    for _ in range(n_boot if n_seeds > 1 else 0):
        key = tuple(sorted(rng.integers(0, n_seeds, n_seeds).tolist()))
        if key not in cache:
            idx = list(key)
            cache[key] = {arm: fit_law(*_mean_points(errors[arm][idx], nb)) for arm in arms}
        laws = cache[key]
        for arm in arms:
            law = laws[arm]
            d = {"law": law}
            bl = laws.get(base) if base else None
            if law is not None and bl is not None and n_max is not None:
                d["eff"] = efficiency(law, bl, n_max)
                d["floor_gap"] = bl.c - law.c
            draws[arm].append(d)

    rows = []
    for arm in arms:
        law = fits[arm]
        measured = [p["budget"] for p in points[arm] if p["n"]]
        row = {"arm": arm, "points": points[arm], "law": None if law is None else asdict(law),
               "budgets_measured": [min(measured), max(measured)] if measured else None,
               "boot": {"draws": len(draws[arm]), "distinct": len(cache),
                        "fits_ok": sum(d["law"] is not None for d in draws[arm])}}
        laws = [d["law"] for d in draws[arm] if d["law"] is not None]
        row["b_ci"] = _interval([lw.b for lw in laws])
        row["c_ci"] = _interval([lw.c for lw in laws])
        row["a_ci"] = _interval([lw.a for lw in laws])
        bl = fits.get(base) if base else None
        if law is not None and bl is not None and n_max is not None:
            eff = efficiency(law, bl, n_max)
            eff["extrapolated"] = not _inside(eff["budget"], row["budgets_measured"])
            pf = eff["passes_baseline_floor"]
            eff["passes_floor_extrapolated"] = None if pf is None else not _inside(pf, row["budgets_measured"])
            effs = [d["eff"] for d in draws[arm] if "eff" in d]
            eff["multiplier_ci"] = _interval([e["multiplier"] for e in effs])
            eff["floor_below_share"] = (sum(e["floor_below_baseline"] for e in effs) / len(effs)) if effs else None
            row["efficiency"] = eff
            row["floor_gap"] = bl.c - law.c
            row["floor_gap_ci"] = _interval([d["floor_gap"] for d in draws[arm] if "floor_gap" in d])
        else:
            row["efficiency"] = None
            row["floor_gap"] = row["floor_gap_ci"] = None
        rows.append(row)
    return {"budgets": list(budgets), "seed_list": list(seeds), "baseline": base, "n_max": n_max,
            "n_boot": n_boot if n_seeds > 1 else 0, "level": LEVEL, "rows": rows}


def analyse_sweep(out: Path, arms: list[str], budgets: list[int], seeds: list[int], baseline: str,
                  n_boot: int = N_BOOT) -> dict:
    errors = {arm: seed_errors(out, arm, budgets, seeds) for arm in arms}
    return {"out": str(out), **analyse_errors(errors, budgets, seeds, baseline, n_boot)}
