"""``otfgen-compare``: run several arms over the same seeds and budget, then compare them paired.

    otfgen-compare policies=[uniform,bandit,align] seeds=5 budget.samples=40000 [otfgen overrides]
                   [out=DIR] [workers=N] [seed_offset=K] [baseline=ARM] [headroom=[TUNED,WIDE]]
                   [thresholds=[90,95,97,98]] [report_only=true]

An arm is a policy name, or ``NAME:POLICY+OVERRIDE+...`` for a policy with overrides of its own,
e.g. ``wide:uniform+scene=mnist2d_wide`` or ``fewreal:uniform+trainer.real_data=reward``;
``random_search`` in place of a policy runs the random-search baseline
(controller/study/random_search.py). Each (arm, seed) is one ordinary ``otfgen`` run in
``<out>/<arm>/seed<s>``, one after the other (runs in parallel would compete for the same cores
and distort the wall times compared), with seeds ``seed_offset`` … ``seed_offset + seeds - 1``.
Their ``metrics.jsonl`` files are then read back and ``<out>`` gets ``results.md``, ``results.json``, ``accuracy.png``, ``error_loglog.png`` and
``policy_distributions.png``.

The question asked: is an arm better than the baseline on the same seeds? For each arm, the
paired difference of final accuracy (arm − baseline, same seed) with its mean and a 95% t
interval; a gain is claimed only where the interval excludes 0. With ``headroom=[TUNED,WIDE]``
the table also says what share of the gap between uniform over the tuned ranges and uniform over
the wide ones each arm closes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from otfgen.controller.study import random_search

BASELINE = "uniform"
DEFAULT_THRESHOLDS = (90.0, 95.0, 97.0, 98.0)  # validation accuracy, %
RUN_RECORD = "compare_run.json"  # what the harness saw of one run (exit code, wall time)
RUN_OUTPUT = "otfgen.out"  # the run's own stdout + stderr, kept for post-mortems
MAX_DIST_PARAMS = 6


# -- command line --------------------------------------------------------------------------------

@dataclass
class Args:
    policies: list[str] = field(default_factory=lambda: [BASELINE])
    seeds: int = 1
    out: Path | None = None
    thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    report_only: bool = False
    overrides: list[str] = field(default_factory=list)  # passed through to every otfgen run
    seed_offset: int = 0
    baseline: str = BASELINE
    headroom: list[str] = field(default_factory=list)  # [tuned arm, wide arm]

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed_offset, self.seed_offset + self.seeds))


def arm_spec(arm: str) -> tuple[str, str, list[str]]:
    """``NAME:POLICY+OVERRIDE+...`` or ``POLICY`` -> (name, policy, overrides)."""
    name, sep, rest = arm.partition(":")
    if not sep:
        return arm, arm, []
    policy, *overrides = rest.split("+")
    return name, policy, overrides


def _parse_list(value: str) -> list[str]:
    return [v.strip() for v in value.strip().strip("[]").split(",") if v.strip()]


def parse_args(argv: list[str]) -> Args:
    """Hydra-style ``key=value``; the keys of the harness are taken out, the rest go to each run."""
    args = Args()
    for a in argv:
        if a in ("-h", "--help"):
            print("usage: otfgen-compare policies=[ARM,...] [seeds=N] [KEY=VALUE ...]\n\n" + __doc__.strip())
            raise SystemExit(0)
        key, sep, value = a.partition("=")
        if not sep:
            raise SystemExit(f"otfgen-compare: expected key=value, got '{a}'")
        if key == "policies":
            args.policies = _parse_list(value)
        elif key == "seeds":
            args.seeds = int(value)
        elif key == "out":
            args.out = Path(value)
        elif key == "thresholds":
            args.thresholds = [float(v) for v in _parse_list(value)]
        elif key == "report_only":
            args.report_only = value.lower() in ("1", "true", "yes")
        elif key == "seed_offset":
            args.seed_offset = int(value)
        elif key == "baseline":
            args.baseline = value
        elif key == "headroom":
            args.headroom = _parse_list(value)
        elif key == "workers":  # shorthand users expect; the launcher's key is longer
            args.overrides.append(f"launcher.workers={value}")
        elif key in ("policy", "seed", "hydra.run.dir"):
            raise SystemExit(f"otfgen-compare: '{key}' is set per run by the harness; use policies=/seeds=/out=")
        else:
            args.overrides.append(a)
    if not args.policies or args.seeds < 1:
        raise SystemExit("otfgen-compare: need at least one policy and seeds >= 1")
    names = [arm_spec(a)[0] for a in args.policies]
    if len(set(names)) != len(names):
        raise SystemExit(f"otfgen-compare: arm names must be distinct, got {names}")
    from otfgen.controller.policies import names as policy_names

    known = (*policy_names(), random_search.NAME)
    unknown = [arm_spec(a)[1] for a in args.policies if arm_spec(a)[1] not in known]
    if unknown:  # before any run starts, not after the first one fails
        raise SystemExit(f"otfgen-compare: unknown policies {unknown}; available: {list(known)}")
    if args.baseline not in names and len(names) > 1:
        raise SystemExit(f"otfgen-compare: baseline '{args.baseline}' is not one of the arms {names}")
    if args.headroom and (len(args.headroom) != 2 or not set(args.headroom) <= set(names)):
        raise SystemExit(f"otfgen-compare: headroom=[TUNED,WIDE] must name two arms of {names}")
    if args.out is None:
        args.out = Path(time.strftime("outputs/compare/%Y-%m-%d-%H-%M-%S"))
    args.out = args.out.resolve()
    return args


# -- running ---------------------------------------------------------------------------------------

def run_dir(out: Path, policy: str, seed: int) -> Path:
    return out / policy / f"seed{seed}"


def run_one(out: Path, arm: str, seed: int, overrides: list[str], tail_lines: int = 25) -> dict:
    """One arm's run for one seed; returns (and stores beside its metrics) what happened."""
    arm, policy, own = arm_spec(arm)
    rdir = run_dir(out, arm, seed)
    if policy == random_search.NAME:
        launch = lambda d, ov: _launch(d, arm, "uniform", seed, ov, tail_lines)  # noqa: E731
        rec = random_search.run(rdir, seed, [*overrides, *own], launch, load_metrics)
        rec.update(policy=arm, seed=seed)
        (rdir / RUN_RECORD).write_text(json.dumps({k: v for k, v in rec.items() if k != "tail"}, indent=1))
        return rec
    return _launch(rdir, arm, policy, seed, [*overrides, *own], tail_lines)


def _launch(rdir: Path, arm: str, policy: str, seed: int, overrides: list[str], tail_lines: int = 25) -> dict:
    """One ``otfgen`` run as a subprocess in ``rdir``."""
    rdir.mkdir(parents=True, exist_ok=True)
    # the trainer and controller append to metrics.jsonl: a stale one from an earlier attempt
    # would be mixed into this run's curve
    (rdir / "metrics.jsonl").unlink(missing_ok=True)
    argv = [sys.executable, "-m", "otfgen.controller.launcher", f"policy={policy}", f"seed={seed}",
            f"hydra.run.dir={rdir}", *overrides]
    tail: deque[str] = deque(maxlen=tail_lines)
    t0 = time.perf_counter()
    with open(rdir / RUN_OUTPUT, "w") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        try:
            for line in proc.stdout:
                log.write(line)
                tail.append(line.rstrip("\n"))
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()  # the launcher stops its own children on SIGTERM
            proc.wait()
            # its partial metrics must not be reported as a finished run
            (rdir / RUN_RECORD).write_text(json.dumps({"policy": arm, "seed": seed, "ok": False,
                                                       "interrupted": True}))
            raise
    wall = time.perf_counter() - t0
    text = "\n".join(tail)
    record = {"policy": arm, "seed": seed, "returncode": code, "ok": code == 0, "wall_s": round(wall, 2),
              "config_error": code != 0 and ("Could not find" in text or "configuration error" in text),
              "argv": argv[1:]}
    (rdir / RUN_RECORD).write_text(json.dumps(record, indent=1))
    if code != 0:
        record["tail"] = text
    return record


def run_all(args: Args) -> None:
    total = len(args.policies) * args.seeds
    k = 0
    for spec in args.policies:
        policy = arm_spec(spec)[0]
        broken = None  # a config error fails every seed the same way; no need to wait for each
        for seed in args.seed_list:
            k += 1
            tag = f"[{k}/{total}] {policy} seed {seed}"
            if broken:
                print(f"{tag}: skipped ({broken})", flush=True)
                _write_skip(args.out, policy, seed, broken)
                continue
            done = run_dir(args.out, policy, seed) / RUN_RECORD
            if done.exists() and json.loads(done.read_text()).get("ok") and read_run(args.out, policy, seed).ok:
                print(f"{tag}: finished earlier, kept (delete {done.parent} to run it again)", flush=True)
                continue  # a comparison interrupted or extended resumes instead of starting over
            print(f"{tag}: started", flush=True)
            rec = run_one(args.out, spec, seed, args.overrides)
            if rec["ok"]:
                acc = final_accuracy(load_metrics(run_dir(args.out, policy, seed) / "metrics.jsonl"))
                acc_s = "—" if acc is None else f"{100 * acc:.2f}%"
                print(f"{tag}: done in {rec['wall_s']:.0f} s, val acc {acc_s}", flush=True)
                continue
            print(f"{tag}: FAILED ({_exit_text(rec['returncode'])}) after {rec['wall_s']:.0f} s; last output:",
                  flush=True)
            print("    " + rec["tail"].replace("\n", "\n    "), flush=True)
            if rec["config_error"]:
                broken = f"policy '{policy}' has a configuration error, see seed 0"


def _write_skip(out: Path, policy: str, seed: int, reason: str) -> None:
    rdir = run_dir(out, policy, seed)
    rdir.mkdir(parents=True, exist_ok=True)
    (rdir / "metrics.jsonl").unlink(missing_ok=True)
    (rdir / RUN_RECORD).write_text(json.dumps({"policy": policy, "seed": seed, "ok": False, "skipped": reason}))


def _exit_text(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


# -- reading a run ---------------------------------------------------------------------------------

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


# -- aggregation -------------------------------------------------------------------------------------

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


# -- entry point -------------------------------------------------------------------------------------

def report(out: Path, policies: list[str], seeds: int | list[int], thresholds: list[float],
           baseline: str = BASELINE, headroom: list[str] | None = None, on_wide: list[str] | None = None) -> str:
    result = analyse(out, policies, seeds, thresholds, baseline, headroom or None, on_wide)
    text = write_results(result, out)
    plot_curves(result["_runs"], out)
    if not plot_distributions(result["_runs"], out):
        print("(no policy/probs in any learning policy's metrics: policy_distributions.png not written)")
    return text


def arms_on_wide(args: Args, arms: list[str]) -> list[str]:
    """The arms that run on the wide arm's scene: the same last ``scene=`` override, taken in the
    order a run gets them (run_one: the harness's overrides, then the arm's own, which win)."""
    scene_of = {arm_spec(a)[0]: [o for o in args.overrides + arm_spec(a)[2] if o.startswith("scene=")][-1:]
                for a in args.policies}
    return [a for a in arms if scene_of[a] == scene_of[args.headroom[1]]]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps({**asdict(args), "out": str(args.out)}, indent=1))
    print(f"otfgen-compare: {len(args.policies)} arms × {args.seeds} seed(s) {args.seed_list} -> {args.out}",
          flush=True)
    code = 0
    if not args.report_only:
        try:
            run_all(args)
        except KeyboardInterrupt:
            print("interrupted; reporting what finished", flush=True)
            code = 130
    print()
    arms = [arm_spec(a)[0] for a in args.policies]
    failed = [f"{a}/seed{s}" for a in arms for s in args.seed_list if not read_run(args.out, a, s).ok]
    if failed and code == 0:
        code = 1  # a failed run is not a result: say so in the exit code too
    on_wide = arms_on_wide(args, arms) if args.headroom else None
    print(report(args.out, arms, args.seed_list, args.thresholds, args.baseline, args.headroom, on_wide))
    print(f"\nresults: {args.out / 'results.md'}")
    if failed:
        print(f"failed runs: {', '.join(failed)}")
    sys.exit(code)


if __name__ == "__main__":
    main()
