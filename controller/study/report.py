"""The report of a comparison: ``results.md`` (the table and the verdicts), ``results.json``,
``accuracy.png``, ``error_loglog.png`` and ``policy_distributions.png``; of a budget sweep, at its
top: ``results.md`` with the error by budget and the fitted law, ``results.json`` and
``scaling.png``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from otfgen.controller.study import scaling
from otfgen.controller.study.runs import Run, last_value, run_dir
from otfgen.controller.study.stats import BASELINE, analyse, mean_curve

MAX_DIST_PARAMS = 6


# -- the table -----------------------------------------------------------------------------------

def _fmt_samples(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


def markdown_table(result: dict) -> str:
    th = result["thresholds"]
    base = result.get("baseline", BASELINE)
    head = (["arm", "runs ok", "final val acc (%)", f"paired Δ vs {base} (points, 95% CI)"]
            + [f"samples to {t:g}%" for t in th]
            + ["samples to uniform final", "÷ uniform budget", "data wait", "wall time", f"wall ÷ {base}",
               "policy overhead", "signal cost"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        acc = "—" if row["final_acc_mean"] is None else f"{row['final_acc_mean']:.2f} ± {row['final_acc_std']:.2f}"
        cells = [row["policy"], f"{row['runs_ok']}/{row['runs']}", acc, _fmt_paired(row.get("paired"))]
        cells += [_fmt_samples(row["samples_to"][f"{t:g}"]) for t in th]
        cells += [_fmt_samples(row["samples_to_uniform_final"]), _fmt(row["ratio_to_uniform_budget"], ".2f"),
                  _fmt(row["data_wait_pct"], ".1f", "%"), _fmt(row["wall_s"], ".0f", " s"),
                  _fmt(row.get("wall_ratio"), ".2f"),
                  _fmt(row["policy_overhead_pct"], ".1f", "%"), _fmt(row.get("signal_cost_pct"), ".1f", "%")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt_paired(p: dict | None) -> str:
    if p is None:
        return "—"
    if p["lo"] is None:
        return f"{p['mean']:+.2f} (1 seed)"
    return f"{p['mean']:+.2f} [{p['lo']:+.2f}, {p['hi']:+.2f}] n={p['n']}: {p['claim']}"


def verdict_lines(result: dict) -> list[str]:
    out = []
    gap = result.get("headroom_gap")
    if result.get("headroom"):
        tuned, wide = result["headroom"]
        out.append(f"headroom ({tuned} − {wide}, paired): {_fmt_paired(gap)}")
        for row in result["rows"]:
            if row.get("headroom_closed") is not None and row["policy"] not in (tuned, wide):
                out.append(f"{row['policy']}: closes {100 * row['headroom_closed']:.0f}% of the headroom; vs {wide}: "
                           f"{_fmt_paired(row['vs_wide'])}")
    base = result.get("baseline", BASELINE)
    for row in result["rows"]:
        if row["policy"] == base:
            continue
        if row.get("paired"):
            out.append(f"{row['policy']} − {base}: {_fmt_paired(row['paired'])}")
    for row in result["rows"]:
        if row["policy"] == base or base != BASELINE:
            continue
        c = row.get("criterion")
        if c is None:
            out.append(f"{row['policy']}: criterion not evaluated (no successful {BASELINE} runs to compare with)")
        elif c["met"] is None:
            out.append(f"{row['policy']}: criterion not evaluated ({c['reason']})")
        else:
            how = [w for w, k in (("at half the samples", "half_budget"), ("by >= 1 point at equal budget",
                                                                          "equal_budget")) if c[k]]
            reach = ("never reaches uniform's final accuracy" if c["ratio_to_uniform_budget"] is None else
                     f"reaches uniform's final accuracy at {c['ratio_to_uniform_budget']:.2f}× its budget")
            out.append(f"{row['policy']}: criterion {'MET (' + ', '.join(how) + ')' if c['met'] else 'not met'}: "
                       f"{reach}; {c['gain_points']:+.2f} points at "
                       f"equal budget; worst seed {c['worst_seed_final']:.2f}% vs uniform's best "
                       f"{c['uniform_best_final']:.2f}%")
    return out


def write_results(result: dict, out: Path) -> str:
    table = markdown_table(result)
    verdicts = verdict_lines(result)
    text = (f"# Policy comparison\n\n{result['seeds']} seed(s) per arm ({result.get('seed_list')}); accuracy = final "
            f"validation accuracy, mean ± std over seeds; paired Δ = arm − baseline on the same seed, mean and 95% t "
            f"interval (a gain or loss is claimed only where the interval excludes 0); samples to X% from the mean "
            f"curve over seeds (linear between validations); policy overhead = the controller's time in the policy, "
            f"signal cost = the trainer's time computing the policy's signal (a reference model's training "
            f"included), each ÷ the run's wall time; wall ÷ baseline = the run's wall time over the baseline's "
            f"on the same seed, at the same budget, mean over seeds.\n\n"
            f"{table}\n\n" + "".join(f"- {v}\n" for v in verdicts))
    (out / "results.md").write_text(text)
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    (out / "results.json").write_text(json.dumps(public, indent=1, default=_json_default, allow_nan=False))
    return table + "\n" + "\n".join(verdicts)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o).__name__)


# -- plots -----------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    return plt


def plot_curves(runs: dict[str, list[Run]], out: Path) -> None:
    """accuracy.png (linear) and error_loglog.png (1 - acc on log-log: the scaling curve)."""
    plt = _pyplot()
    fig_a, ax_a = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    fig_e, ax_e = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for i, (policy, rs) in enumerate(runs.items()):
        grid, mean, lo, hi = mean_curve([r for r in rs if r.ok])
        if not len(grid):
            continue
        color = f"C{i}"
        n = sum(r.ok for r in rs)
        ax_a.plot(grid, 100 * mean, color=color, marker=".", label=f"{policy} (n={n})")
        ax_a.fill_between(grid, 100 * lo, 100 * hi, color=color, alpha=0.2, linewidth=0)
        # a perfect score has no place on a log axis: floor the error at a tenth of a validation image
        floor = 0.1 / max((last_value(r.rows, "val/n") or 1000) for r in rs)
        ax_e.plot(grid, np.maximum(1 - mean, floor), color=color, marker=".", label=f"{policy} (n={n})")
        ax_e.fill_between(grid, np.maximum(1 - hi, floor), np.maximum(1 - lo, floor), color=color, alpha=0.2,
                          linewidth=0)
    ax_a.set(xlabel="generated samples", ylabel="validation accuracy (%)",
             title="accuracy vs generated samples (mean, min–max over seeds)")
    ax_e.set(xlabel="generated samples", ylabel="validation error (1 − acc)", xscale="log", yscale="log",
             title="validation error vs samples (log–log)")
    for fig, ax, name in ((fig_a, ax_a, "accuracy.png"), (fig_e, ax_e, "error_loglog.png")):
        ax.grid(alpha=0.3, which="both")
        if ax.lines:
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)


def policy_trajectory(rows: list[dict]) -> tuple[np.ndarray, str, dict[str, np.ndarray]]:
    """From the controller's lines: x (requests issued, or seconds), and per parameter a
    [T, bins] array of bin probabilities (rows normalised: a policy may log raw weights)."""
    lines = [r for r in rows if isinstance(r.get("policy/probs"), dict)]
    if not lines:
        return np.zeros(0), "", {}
    requests = [float(r["ctrl/requests"]) for r in lines if "ctrl/requests" in r]
    # requests is the natural clock, but in a short run all are issued before the policy has heard
    # back, and its distribution keeps moving at a constant request count: then use seconds
    if len(requests) == len(lines) and len(set(requests)) >= 0.8 * len(lines):
        xlabel, xs = "requests issued", requests
    else:
        t0 = min(float(r.get("time", 0.0)) for r in lines)
        xlabel, xs = "seconds", [float(r.get("time", 0.0)) - t0 for r in lines]
    # repeated x (the controller's final line) would make a zero-width column: keep the last
    keep = {x: i for i, x in enumerate(xs)}
    order = [keep[x] for x in sorted(keep)]
    x = np.asarray(sorted(keep))
    params: dict[str, np.ndarray] = {}
    for name in lines[-1]["policy/probs"]:
        seq = [lines[i]["policy/probs"].get(name) for i in order]
        width = len(seq[-1] or [])
        if width == 0 or any(s is None or len(s) != width for s in seq):
            continue  # a parameter whose binning changed mid-run cannot be drawn as one heatmap
        p = np.clip(np.asarray(seq, dtype=float), 0, None)
        params[name] = p / np.maximum(p.sum(1, keepdims=True), 1e-12)
    return x, xlabel, params


def pick_params(params: dict[str, np.ndarray], label: str = "label", k: int = MAX_DIST_PARAMS) -> list[str]:
    """The label first (what the policy asks of each class is the most telling), then the
    parameters whose distribution moved furthest from uniform at any time (total variation)."""
    def moved(p: np.ndarray) -> float:
        return float(0.5 * np.abs(p - 1.0 / p.shape[1]).sum(1).max())

    rest = sorted((n for n in params if n != label), key=lambda n: -moved(params[n]))
    return ([label] if label in params else []) + rest[: k - (label in params)]


def _label_param(out: Path, policy: str) -> str:
    from otfgen.blender_gen import families

    try:
        name = json.loads((run_dir(out, policy, 0) / "config.json").read_text())["scene"]["name"]
        return families.load(name).LABEL_PARAM
    except (OSError, ValueError, KeyError, TypeError, LookupError):
        return "label"


def plot_distributions(runs: dict[str, list[Run]], out: Path) -> bool:
    """policy_distributions.png: for each learning policy (seed 0), a heatmap per parameter of bin
    probability over the run. Returns False (and writes nothing) when no policy logged any."""
    panels = []
    for policy, rs in runs.items():
        if policy == BASELINE or not rs:
            continue
        x, xlabel, params = policy_trajectory(rs[0].rows)
        if len(x) and params:
            panels.append((policy, x, xlabel, params, pick_params(params, _label_param(out, policy))))
    if not panels:
        return False
    plt = _pyplot()
    cols = 3  # up to 6 parameters per policy: two rows of three keep the figure readable
    per_policy = max(-(-len(p[4]) // cols) for p in panels)
    fig, axes = plt.subplots(per_policy * len(panels), cols, figsize=(3.2 * cols + 0.8, 2.4 * per_policy * len(panels)),
                             dpi=120, squeeze=False)
    for i, (policy, x, xlabel, params, names) in enumerate(panels):
        xx = x if len(x) > 1 else np.array([x[0], x[0] + 1])  # one snapshot still gets a visible column
        for j in range(per_policy * cols):
            ax = axes[i * per_policy + j // cols][j % cols]
            if j >= len(names):
                ax.axis("off")
                continue
            p = params[names[j]]
            p = p if len(x) > 1 else np.repeat(p, 2, axis=0)
            mesh = ax.pcolormesh(xx, np.arange(p.shape[1]), p.T, shading="nearest", cmap="viridis", vmin=0,
                                 vmax=max(2.0 / p.shape[1], float(p.max())))
            ax.set_title(f"{policy}: {names[j]}", fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel("bin", fontsize=8)
            ax.yaxis.get_major_locator().set_params(integer=True)  # bins are whole numbers
            ax.tick_params(labelsize=7)
            fig.colorbar(mesh, ax=ax, fraction=0.05, pad=0.02).ax.tick_params(labelsize=6)
    fig.suptitle("bin probabilities of each learning policy over training (seed 0)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "policy_distributions.png")
    plt.close(fig)
    return True


# -- the whole report ----------------------------------------------------------------------------

def report(out: Path, policies: list[str], seeds: int | list[int], thresholds: list[float],
           baseline: str = BASELINE, headroom: list[str] | None = None, on_wide: list[str] | None = None) -> str:
    result = analyse(out, policies, seeds, thresholds, baseline, headroom or None, on_wide)
    text = write_results(result, out)
    plot_curves(result["_runs"], out)
    if not plot_distributions(result["_runs"], out):
        print("(no policy/probs in any learning policy's metrics: policy_distributions.png not written)")
    return text



# -- a budget sweep: the scaling law ---------------------------------------------------------------

def _fmt_budget(v: float | None) -> str:
    if v is None:
        return "—"
    return "never" if math.isinf(v) else _fmt_samples(v)


def _fmt_ci(ci: list[float] | None, spec: str, scale: float = 1.0) -> str:
    if ci is None:
        return ""
    return " [" + ", ".join("∞" if math.isinf(v) else f"{scale * v:{spec}}" for v in ci) + "]"


def _fmt_mult(v: float) -> str:
    return "∞" if math.isinf(v) else f"{v:.2f}"


def scaling_tables(result: dict) -> tuple[str, str]:
    budgets, base = result["budgets"], result["baseline"] or "baseline"
    head = ["arm"] + [_fmt_samples(n) for n in budgets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        cells = [row["arm"]]
        for p in row["points"]:
            if p["mean"] is None:
                cells.append("—")
            else:
                sd = "" if p["sd"] is None else f" ± {100 * p['sd']:.2f}"
                cells.append(f"{100 * p['mean']:.2f}{sd} ({p['n']})")
        lines.append("| " + " | ".join(cells) + " |")
    errors = "\n".join(lines)
    head = ["arm", "a", "exponent b [95%]", "floor c (%) [95%]", "fit rms (log)",
            f"samples to {base}'s error at N_max", f"data efficiency × vs {base} [95%]",
            f"floor below {base}'s (share of draws)", f"passes {base}'s floor at", "bootstrap fits"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        law, eff, boot = row["law"], row["efficiency"], row["boot"]
        if law is None:
            cells = [row["arm"], "not fitted (fewer than 3 budgets with a finished run)"] + [""] * (len(head) - 2)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells = [row["arm"], f"{law['a']:.3g}", f"{law['b']:.3f}{_fmt_ci(row['b_ci'], '.3f')}",
                 f"{100 * law['c']:.2f}{_fmt_ci(row['c_ci'], '.2f', 100)}", f"{law['rmse_log']:.3f}"]
        if eff is None:
            cells += ["—", "—", "—", "—"]
        else:
            extra = " (extrapolated)" if eff["extrapolated"] and not math.isinf(eff["budget"]) else ""
            cells += [_fmt_budget(eff["budget"]) + extra,
                      _fmt_mult(eff["multiplier"]) + _fmt_ci(eff["multiplier_ci"], ".2f"),
                      "—" if eff["floor_below_share"] is None else
                      f"{'yes' if eff['floor_below_baseline'] else 'no'} ({100 * eff['floor_below_share']:.0f}%)",
                      "—" if eff["passes_baseline_floor"] is None else
                      _fmt_budget(eff["passes_baseline_floor"])
                      + (" (extrapolated)" if eff["passes_floor_extrapolated"] else "")]
        cells.append(f"{boot['fits_ok']}/{boot['draws']}")
        lines.append("| " + " | ".join(cells) + " |")
    return errors, "\n".join(lines)


def scaling_verdicts(result: dict) -> list[str]:
    base, n_max, out = result["baseline"], result["n_max"], []
    for row in result["rows"]:
        law, eff, arm = row["law"], row["efficiency"], row["arm"]
        if law is None:
            out.append(f"{arm}: no law fitted (needs finished runs at {scaling.MIN_BUDGETS} budgets or more)")
            continue
        if eff is None or arm == base:
            continue
        lo, hi = row["budgets_measured"]
        where = (f"extrapolated beyond its measured {_fmt_samples(lo)}–{_fmt_samples(hi)}" if eff["extrapolated"]
                 else "interpolated on its fit")
        target = f"{base}'s error at {_fmt_samples(n_max)} ({100 * eff['target']:.2f}%)"
        if math.isinf(eff["budget"]):
            line = (f"{arm}: never reaches {target}: its floor {100 * law['c']:.2f}% lies above it")
        else:
            line = (f"{arm}: reaches {target} at {_fmt_samples(eff['budget'])} samples, {where}: "
                    f"×{_fmt_mult(eff['multiplier'])}{_fmt_ci(eff['multiplier_ci'], '.2f')} data efficiency")
        gap = row["floor_gap"]
        line += (f"; floor {100 * law['c']:.2f}% against {base}'s {100 * (law['c'] + gap):.2f}% "
                 f"({base} − {arm}: {100 * gap + 0.0:+.2f} points{_fmt_ci(row['floor_gap_ci'], '+.2f', 100)})")
        if eff["floor_below_baseline"]:
            pf = eff["passes_baseline_floor"]
            line += (f"; below {base}'s floor, the multiplier has no bound: it passes {base}'s floor at "
                     f"{_fmt_budget(pf)} samples" + (" (extrapolated)" if eff["passes_floor_extrapolated"] else ""))
        out.append(line)
    return out


def write_scaling(result: dict, out: Path) -> str:
    errors, laws = scaling_tables(result)
    verdicts = scaling_verdicts(result)
    base = result["baseline"] or "the baseline"
    seeds = result["seed_list"]
    distinct = max((r["boot"]["distinct"] for r in result["rows"]), default=0)
    n_max = _fmt_samples(result["n_max"])
    text = (f"# Scaling study\n\nEvery arm at every budget as its own run (its learning-rate schedule follows "
            f"its budget), seeds {seeds}. Error = 1 − final validation accuracy on the report split (real "
            f"images no policy saw). Each budget's own comparison (paired differences, curves) is in "
            + ", ".join(f"[budget{n}/](budget{n}/results.md)" for n in result["budgets"]) + ".\n\n"
            f"## Error by budget\n\nError in %, mean ± sd over seeds (runs finished).\n\n{errors}\n\n"
            f"## The fitted law: error(N) = a·N^(−b) + c\n\nFitted per arm by least squares on log error, on the "
            f"mean error over seeds at each budget. Intervals: {result['level']:g}% percentile bootstrap over seeds "
            f"({result['n_boot']} draws, seeds resampled with replacement jointly for every arm, each draw "
            f"refitted; {len(seeds)} seed(s) give {distinct} distinct draws, which is all the intervals rest on). "
            f"Data efficiency ×: the budget at which {base} reaches its fitted error at its largest budget "
            f"(N_max = {n_max}), divided by the budget the arm needs for the same error on its own fit; "
            f"(extrapolated) where that budget lies outside the arm's measured budgets. Where an arm's floor "
            f"lies below {base}'s, the multiplier for errors nearer {base}'s floor grows without bound: the "
            f"budget at which the arm passes {base}'s floor is given as well.\n\n{laws}\n\n"
            + "".join(f"- {v}\n" for v in verdicts) + "\n![scaling](scaling.png)\n")
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(_finite(result), indent=1, allow_nan=False))
    return errors + "\n\n" + laws + "\n" + "\n".join(verdicts)


def _finite(o):
    """JSON has no infinity: a budget never reached is written "inf"."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (np.floating, np.integer)):
        o = o.item()
    if isinstance(o, float) and math.isinf(o):
        return "inf" if o > 0 else "-inf"
    return o


def plot_scaling(result: dict, out: Path) -> None:
    """scaling.png: each arm's error at each budget (mean, min–max over seeds) and its fitted law,
    on log–log axes; the law's floor dotted, the baseline's target dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.4), dpi=120)
    budgets = np.asarray(result["budgets"], dtype=float)
    grid = np.geomspace(budgets.min() / 1.3, budgets.max() * 1.3, 200)
    for i, row in enumerate(result["rows"]):
        pts = [p for p in row["points"] if p["mean"] is not None]
        if not pts:
            continue
        color = f"C{i}"
        x = np.array([p["budget"] for p in pts], dtype=float)
        y = np.maximum([p["mean"] for p in pts], scaling.ERR_FLOOR)
        # clipped: equal seeds' mean can sit a rounding error outside their min–max
        lo = np.clip(y - np.maximum([p["min"] for p in pts], scaling.ERR_FLOOR), 0, None)
        hi = np.clip(np.maximum([p["max"] for p in pts], scaling.ERR_FLOOR) - y, 0, None)
        law = row["law"]
        label = row["arm"] if law is None else f"{row['arm']}: b={law['b']:.2f}, c={100 * law['c']:.1f}%"
        ax.errorbar(x, y, yerr=[lo, hi], color=color, marker="o", linestyle="none", capsize=3, label=label)
        if law is not None:
            fit = scaling.Law(law["a"], law["b"], law["c"])
            ax.plot(grid, fit.error(grid), color=color, linewidth=1.2)
            if law["c"] > scaling.ERR_FLOOR:
                ax.axhline(law["c"], color=color, linestyle=":", linewidth=0.8)
    base = next((r for r in result["rows"] if r["arm"] == result["baseline"]), None)
    if base is not None and base["efficiency"] is not None:
        ax.axhline(base["efficiency"]["target"], color="0.5", linestyle="--", linewidth=0.8,
                   label=f"{result['baseline']} at {_fmt_samples(result['n_max'])}")
    ax.set(xlabel="generated samples (budget of the run)", ylabel="error on the report split (1 − acc)",
           xscale="log", yscale="log", title="final error vs budget: mean, min–max over seeds, fitted a·N^−b + c")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "scaling.png")
    plt.close(fig)


def scaling_report(out: Path, policies: list[str], budgets: list[int], seeds: list[int],
                   baseline: str = BASELINE, n_boot: int = scaling.N_BOOT) -> str:
    result = scaling.analyse_sweep(out, policies, budgets, seeds, baseline, n_boot)
    text = write_scaling(result, out)
    plot_scaling(result, out)
    return text
