"""``otfgen-compare``: run several arms over the same seeds and budget, then compare them paired.

    otfgen-compare policies=[uniform,rho] seeds=5 budget.samples=40000 trainer.reward_split=0.1 [otfgen overrides]
                   [out=DIR] [workers=N] [seed_offset=K] [baseline=ARM] [headroom=[TUNED,WIDE]]
                   [thresholds=[90,95,97,98]] [report_only=true] [budgets=[10000,40000,160000]]

An arm is a policy name, or ``NAME:POLICY+OVERRIDE+...`` for a policy with overrides of its own,
e.g. ``wide:uniform+scene=mnist2d_wide`` or ``fewreal:uniform+trainer.real_data=reward``;
``random_search`` in place of a policy runs the random-search baseline
(controller/study/random_search.py). Each (arm, seed) is one ordinary ``otfgen`` run in
``<out>/<arm>/seed<s>``, one after the other (runs in parallel would compete for the same cores
and distort the wall times compared), with seeds ``seed_offset`` … ``seed_offset + seeds - 1``.
Their ``metrics.jsonl`` files are then read back (runs.py), compared paired (stats.py), and
``<out>`` gets ``results.md``, ``results.json``, ``accuracy.png``, ``error_loglog.png`` and
``policy_distributions.png`` (report.py).

The question asked: is an arm better than the baseline on the same seeds? For each arm, the
paired difference of final accuracy (arm − baseline, same seed) with its mean and a 95% t
interval; a gain is claimed only where the interval excludes 0. With ``headroom=[TUNED,WIDE]``
the table also says what share of the gap between uniform over the tuned ranges and uniform over
the wide ones each arm closes.

A budget sweep, ``budgets=[N1,N2,...]``, runs every arm at every budget as its own run (with
``budget.samples=N``, so its learning-rate schedule follows its budget) in
``<out>/budget<N>/<arm>/seed<s>``, seed by seed; each ``budget<N>`` folder gets the comparison's
report at that budget, and ``<out>`` the scaling law of every arm: error(N) = a·N^(−b) + c on the
final validation error, with bootstrap intervals over seeds and the data-efficiency multiplier
against the baseline (``results.md``, ``results.json``, ``scaling.png``; scaling.py, report.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from otfgen.controller.study import random_search
from otfgen.controller.study.report import report, scaling_report
from otfgen.controller.study.runs import RUN_RECORD, budget_dir, final_accuracy, load_metrics, read_run, run_dir
from otfgen.controller.study.stats import BASELINE

DEFAULT_THRESHOLDS = (90.0, 95.0, 97.0, 98.0)  # validation accuracy, %
RUN_OUTPUT = "otfgen.out"  # the run's own stdout + stderr, kept for post-mortems


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
    budgets: list[int] = field(default_factory=list)  # a sweep's budgets; empty: one budget, set by the overrides

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed_offset, self.seed_offset + self.seeds))

    @property
    def arms(self) -> list[str]:
        return [arm_spec(a)[0] for a in self.policies]


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
        elif key == "budgets":
            try:
                args.budgets = sorted({int(v.replace("_", "")) for v in _parse_list(value)})
            except ValueError:
                raise SystemExit(f"otfgen-compare: budgets=[N1,N2,...] takes whole sample counts, got '{value}'"
                                 ) from None
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
    if args.budgets:
        if args.budgets[0] < 1:
            raise SystemExit(f"otfgen-compare: budgets must be positive, got {args.budgets}")
        # the sweep sets each run's budget: a budget.samples of its own would be overridden or win
        # silently, depending on where it stood
        fixed = [o for o in args.overrides + [o for a in args.policies for o in arm_spec(a)[2]]
                 if o.startswith("budget.samples=")]
        if fixed:
            raise SystemExit(f"otfgen-compare: budgets= sets budget.samples for every run; drop {fixed}")
    if args.out is None:
        args.out = Path(time.strftime("outputs/compare/%Y-%m-%d-%H-%M-%S"))
    args.out = args.out.resolve()
    return args


# -- running ---------------------------------------------------------------------------------------

def run_one(out: Path, arm: str, seed: int, overrides: list[str], tail_lines: int = 25) -> dict:
    """One arm's run for one seed; returns (and stores beside its metrics) what happened."""
    arm, policy, own = arm_spec(arm)
    rdir = run_dir(out, arm, seed)
    if policy == random_search.NAME:
        launch = lambda d, ov: _launch(d, arm, "uniform", seed, ov, tail_lines)  # noqa: E731
        rec = random_search.run(rdir, seed, [*overrides, *own], launch)
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
    argv = [sys.executable, "-m", "otfgen.controller.main", f"policy={policy}", f"seed={seed}",
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


@dataclass(frozen=True)
class Job:
    """One run of a comparison: an arm (as given, overrides and all), a seed, and in a sweep its budget."""

    spec: str
    seed: int
    budget: int | None = None  # None: the budget the overrides set

    @property
    def arm(self) -> str:
        return arm_spec(self.spec)[0]

    def out(self, out: Path) -> Path:
        """The comparison folder the run belongs to."""
        return out if self.budget is None else budget_dir(out, self.budget)

    def overrides(self, overrides: list[str]) -> list[str]:
        return overrides if self.budget is None else [*overrides, f"budget.samples={self.budget}"]

    @property
    def tag(self) -> str:
        budget = "" if self.budget is None else f" budget {self.budget}"
        return f"{self.arm}{budget} seed {self.seed}"


def plan(args: Args) -> list[Job]:
    """Every run of the comparison, in the order they run."""
    if not args.budgets:
        return [Job(spec, seed) for spec in args.policies for seed in args.seed_list]
    # seed by seed: a sweep stopped part way leaves whole seeds (every arm at every budget), which
    # the law's fit and its bootstrap over seeds can use; arms side by side at each budget, so a
    # machine that slows over the hours weighs on every arm alike
    return [Job(spec, seed, n) for seed in args.seed_list for n in args.budgets for spec in args.policies]


Runner = Callable[[Path, str, int, list[str]], dict]  # run_one's signature: (out, arm spec, seed, overrides)


def finished(out: Path, arm: str, seed: int) -> bool:
    done = run_dir(out, arm, seed) / RUN_RECORD
    return done.exists() and bool(json.loads(done.read_text()).get("ok")) and read_run(out, arm, seed).ok


def run_all(args: Args, runner: Runner = run_one) -> None:
    jobs = plan(args)
    broken: dict[str, str] = {}  # a config error fails every run of an arm the same way; no need to wait for each
    for k, job in enumerate(jobs, 1):
        out, policy, seed = job.out(args.out), job.arm, job.seed
        tag = f"[{k}/{len(jobs)}] {job.tag}"
        if policy in broken:
            print(f"{tag}: skipped ({broken[policy]})", flush=True)
            _write_skip(out, policy, seed, broken[policy])
            continue
        if finished(out, policy, seed):
            print(f"{tag}: finished earlier, kept (delete {run_dir(out, policy, seed)} to run it again)", flush=True)
            continue  # a comparison interrupted or extended resumes instead of starting over
        print(f"{tag}: started", flush=True)
        rec = runner(out, job.spec, seed, job.overrides(args.overrides))
        if rec["ok"]:
            acc = final_accuracy(load_metrics(run_dir(out, policy, seed) / "metrics.jsonl"))
            acc_s = "—" if acc is None else f"{100 * acc:.2f}%"
            print(f"{tag}: done in {rec['wall_s']:.0f} s, val acc {acc_s}", flush=True)
            continue
        print(f"{tag}: FAILED ({_exit_text(rec['returncode'])}) after {rec['wall_s']:.0f} s; last output:",
              flush=True)
        print("    " + rec.get("tail", "").replace("\n", "\n    "), flush=True)
        if rec.get("config_error"):
            broken[policy] = f"policy '{policy}' has a configuration error, see {job.tag}"


def _write_skip(out: Path, policy: str, seed: int, reason: str) -> None:
    rdir = run_dir(out, policy, seed)
    rdir.mkdir(parents=True, exist_ok=True)
    (rdir / "metrics.jsonl").unlink(missing_ok=True)
    (rdir / RUN_RECORD).write_text(json.dumps({"policy": policy, "seed": seed, "ok": False, "skipped": reason}))


def _exit_text(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


# -- entry point -------------------------------------------------------------------------------------

def arms_on_wide(args: Args, arms: list[str]) -> list[str]:
    """The arms that run on the wide arm's scene: the same last ``scene=`` override, taken in the
    order a run gets them (run_one: the harness's overrides, then the arm's own, which win)."""
    scene_of = {arm_spec(a)[0]: [o for o in args.overrides + arm_spec(a)[2] if o.startswith("scene=")][-1:]
                for a in args.policies}
    return [a for a in arms if scene_of[a] == scene_of[args.headroom[1]]]


def main(argv: list[str] | None = None, runner: Runner = run_one) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {**asdict(args), "out": str(args.out)}
    if not args.budgets:
        del record["budgets"]  # a comparison without a sweep writes the record it always did
    (args.out / "compare.json").write_text(json.dumps(record, indent=1))
    if args.budgets:
        print(f"otfgen-compare: {len(args.policies)} arms × {len(args.budgets)} budgets {args.budgets} × "
              f"{args.seeds} seed(s) {args.seed_list}: {len(plan(args))} runs, "
              f"{sum(args.budgets) * len(args.policies) * args.seeds:,} generated samples -> {args.out}", flush=True)
    else:
        print(f"otfgen-compare: {len(args.policies)} arms × {args.seeds} seed(s) {args.seed_list} -> {args.out}",
              flush=True)
    code = 0
    if not args.report_only:
        try:
            run_all(args, runner)
        except KeyboardInterrupt:
            print("interrupted; reporting what finished", flush=True)
            code = 130
    print()
    arms = args.arms
    failed = [f"{job.out(args.out).relative_to(args.out) / job.arm}/seed{job.seed}"
              for job in plan(args) if not read_run(job.out(args.out), job.arm, job.seed).ok]
    if failed and code == 0:
        code = 1  # a failed run is not a result: say so in the exit code too
    on_wide = arms_on_wide(args, arms) if args.headroom else None
    if args.budgets:
        for n in args.budgets:  # each budget's own comparison, read on its own
            budget_dir(args.out, n).mkdir(parents=True, exist_ok=True)  # a sweep stopped before it
            report(budget_dir(args.out, n), arms, args.seed_list, args.thresholds, args.baseline, args.headroom,
                   on_wide)
        print(scaling_report(args.out, arms, args.budgets, args.seed_list, args.baseline))
    else:
        print(report(args.out, arms, args.seed_list, args.thresholds, args.baseline, args.headroom, on_wide))
    print(f"\nresults: {args.out / 'results.md'}")
    if failed:
        print(f"failed runs: {', '.join(failed)}")
    sys.exit(code)


if __name__ == "__main__":
    main()
