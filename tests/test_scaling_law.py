"""otfgen-compare budgets=[...]: the law's fit, the data-efficiency multiplier, and the sweep's
bookkeeping with a fake runner in place of otfgen (plus one tiny real sweep, slow)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from otfgen.controller.study import compare, report, runs, scaling

BUDGETS = [10000, 20000, 40000, 80000, 160000, 320000]


# -- the fit ---------------------------------------------------------------------------------------

def test_fit_recovers_an_exact_law():
    true = scaling.Law(10.0, 0.5, 0.05)
    law = scaling.fit_law(BUDGETS, true.error(BUDGETS))
    assert (law.a, law.b, law.c) == pytest.approx((10.0, 0.5, 0.05), rel=1e-4)
    assert law.rmse_log < 1e-6


@pytest.mark.parametrize("noise_seed", [0, 1, 2])
def test_fit_recovers_a_b_c_from_noisy_seeds(noise_seed):
    """5 seeds, each point 3% off the law (multiplicative, as seed-to-seed spread is), mean over
    seeds fitted: b within 0.06, c within 0.5 points, a within a factor 1.6 (a and b trade off
    along the measured range), the curve within 3% of the truth over that range."""
    true = scaling.Law(5.0, 0.4, 0.02)
    rng = np.random.default_rng(noise_seed)
    errs = true.error(BUDGETS) * (1 + 0.03 * rng.standard_normal((5, len(BUDGETS))))
    law = scaling.fit_law(BUDGETS, errs.mean(0))
    assert abs(law.b - 0.4) < 0.06 and abs(law.c - 0.02) < 0.005
    assert 1 / 1.6 < law.a / 5.0 < 1.6
    grid = np.geomspace(BUDGETS[0], BUDGETS[-1], 50)
    assert np.max(np.abs(law.error(grid) / true.error(grid) - 1)) < 0.03
    # the bootstrap over seeds: its intervals hold the truth and are not degenerate
    res = scaling.analyse_errors({"uniform": errs}, BUDGETS, list(range(5)), "uniform", n_boot=200)
    row = res["rows"][0]
    assert row["b_ci"][0] < 0.4 < row["b_ci"][1] and row["c_ci"][0] < 0.02 < row["c_ci"][1]
    assert row["b_ci"][1] - row["b_ci"][0] > 0.005 and row["boot"]["fits_ok"] == 200


def test_fit_needs_three_budgets_and_survives_a_flat_arm():
    assert scaling.fit_law([1e4, 2e4], [0.3, 0.2]) is None
    assert scaling.fit_law([1e4, 1e4, 2e4], [0.3, 0.31, 0.2]) is None  # two distinct budgets
    flat = scaling.fit_law(BUDGETS, [0.77, 0.76, 0.77, 0.77, 0.76, 0.77])  # an arm that does not learn
    assert flat is not None and flat.error(1e6) == pytest.approx(0.766, abs=0.01)


def test_without_scipy_the_fit_says_so_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # import fails as in an install without it
    with pytest.raises(SystemExit, match="needs scipy"):
        scaling.fit_law(BUDGETS, scaling.Law(10.0, 0.5, 0.05).error(BUDGETS))


# -- the multiplier --------------------------------------------------------------------------------

BASE = scaling.Law(10.0, 0.5, 0.05)  # at 160k: 10/400 + 0.05 = 7.5% error
ARMS = {
    "half_a": scaling.Law(5.0, 0.5, 0.05),  # 5/√N = 0.025 at N = 40,000: ×4
    "low_floor": scaling.Law(10.0, 0.5, 0.02),  # 10/√N = 0.055: N = 33,058: ×4.84; passes 5% at N = 111,111
    "slow": scaling.Law(20.0, 0.5, 0.05),  # 20/√N = 0.025 at N = 640,000: ×0.25, beyond the budgets
    "high_floor": scaling.Law(2.0, 0.5, 0.08),  # never gets to 7.5%
}


def test_multiplier_equals_the_analytic_value():
    e = {k: scaling.efficiency(law, BASE, 160000) for k, law in ARMS.items()}
    assert e["half_a"]["target"] == pytest.approx(0.075)
    assert e["half_a"]["budget"] == pytest.approx(40000) and e["half_a"]["multiplier"] == pytest.approx(4.0)
    assert e["low_floor"]["multiplier"] == pytest.approx(160000 * 0.055 ** 2 / 100)
    assert e["low_floor"]["floor_below_baseline"]
    assert e["low_floor"]["passes_baseline_floor"] == pytest.approx((10 / 0.03) ** 2)
    assert e["slow"]["multiplier"] == pytest.approx(0.25) and e["slow"]["passes_baseline_floor"] is None
    assert math.isinf(e["high_floor"]["budget"]) and e["high_floor"]["multiplier"] == 0.0
    assert scaling.efficiency(BASE, BASE, 160000)["multiplier"] == pytest.approx(1.0)


def test_multiplier_from_fitted_runs_with_extrapolation_flags_and_report(tmp_path):
    budgets = BUDGETS[:5]  # 10k … 160k
    seeds = [0, 1, 2]
    errors = {"uniform": np.tile(BASE.error(budgets), (3, 1))}
    errors.update({k: np.tile(law.error(budgets), (3, 1)) for k, law in ARMS.items()})
    res = scaling.analyse_errors(errors, budgets, seeds, "uniform", n_boot=100)
    rows = {r["arm"]: r for r in res["rows"]}
    assert res["n_max"] == 160000
    eff = {k: r["efficiency"] for k, r in rows.items()}
    assert eff["uniform"]["multiplier"] == pytest.approx(1.0, rel=1e-6) and not eff["uniform"]["extrapolated"]
    assert eff["half_a"]["multiplier"] == pytest.approx(4.0, rel=1e-3) and not eff["half_a"]["extrapolated"]
    assert eff["low_floor"]["multiplier"] == pytest.approx(4.84, rel=1e-3)
    assert eff["low_floor"]["passes_baseline_floor"] == pytest.approx(111111, rel=1e-3)
    assert not eff["low_floor"]["passes_floor_extrapolated"] and eff["low_floor"]["floor_below_share"] == 1.0
    assert eff["slow"]["multiplier"] == pytest.approx(0.25, rel=1e-3) and eff["slow"]["extrapolated"]
    assert eff["high_floor"]["multiplier"] == 0.0
    # identical seeds: every draw is the same fit, the intervals collapse onto the point
    assert eff["half_a"]["multiplier_ci"] == pytest.approx([4.0, 4.0], rel=1e-3)
    assert rows["low_floor"]["floor_gap_ci"] == pytest.approx([0.03, 0.03], abs=1e-4)

    text = report.write_scaling(res, tmp_path)
    report.plot_scaling(res, tmp_path)
    assert (tmp_path / "scaling.png").stat().st_size > 0
    md = (tmp_path / "results.md").read_text()
    assert "| slow | 20 |" in md and "640.0k (extrapolated) | 0.25 [0.25, 0.25]" in md
    assert "| half_a | 5 | 0.500 [0.500, 0.500] | 5.00 [5.00, 5.00]" in md
    assert "high_floor: never reaches uniform's error at 160.0k (7.50%)" in text
    assert "low_floor: reaches" in text and "passes uniform's floor at 111.1k samples" in text
    saved = json.loads((tmp_path / "results.json").read_text())  # no infinity in JSON
    saved_rows = {r["arm"]: r for r in saved["rows"]}
    assert saved_rows["high_floor"]["efficiency"]["budget"] == "inf"


# -- the sweep's bookkeeping, with a fake runner ---------------------------------------------------

LAWS = {"uniform": scaling.Law(10.0, 0.5, 0.05), "rho": scaling.Law(5.0, 0.5, 0.03)}


class FakeRunner:
    """Stands in for run_one: writes the metrics a run at that budget would have ended with (its
    error on the arm's law, a seed's spread of ±2%) and the harness's record; raises
    KeyboardInterrupt at call ``stop_at`` as Ctrl-C in a run would."""

    def __init__(self, stop_at=None, fail=()):
        self.calls, self.stop_at, self.fail = [], stop_at, set(fail)

    def __call__(self, out, spec, seed, overrides):
        self.calls.append((out, spec, seed, list(overrides)))
        if self.stop_at is not None and len(self.calls) == self.stop_at:
            raise KeyboardInterrupt
        arm = compare.arm_spec(spec)[0]
        budget = int([o for o in overrides if o.startswith("budget.samples=")][-1].split("=")[1])
        rdir = runs.run_dir(out, arm, seed)
        rdir.mkdir(parents=True, exist_ok=True)
        ok = (arm, budget, seed) not in self.fail
        err = float(LAWS[arm.split("_")[0]].error(budget)) * (1 + 0.02 * (seed - 1))
        if ok:
            (rdir / "metrics.jsonl").write_text(json.dumps({"train/samples": budget, "val/acc": 1 - err}) + "\n")
        rec = {"policy": arm, "seed": seed, "ok": ok, "returncode": 0 if ok else 1, "wall_s": budget / 1000}
        (rdir / runs.RUN_RECORD).write_text(json.dumps(rec))
        return {**rec, "config_error": False, "tail": "boom"}


def _sweep(tmp_path, runner, *extra):
    with pytest.raises(SystemExit) as exit_:
        compare.main(["policies=[uniform,rho:rho+trainer.select=0.25]", "seeds=3", "budgets=[40000,10000,20000]",
                      f"out={tmp_path}", "trainer.reward_split=0.1", *extra], runner=runner)
    return exit_.value.code


def test_plan_enumerates_arms_budgets_seeds(tmp_path):
    a = compare.parse_args(["policies=[uniform,rho]", "seeds=2", "seed_offset=3", "budgets=[20000, 10_000]",
                            f"out={tmp_path}"])
    assert a.budgets == [10000, 20000]
    jobs = compare.plan(a)
    assert len(jobs) == 2 * 2 * 2 and len(set(jobs)) == 8
    assert {(j.arm, j.budget, j.seed) for j in jobs} == {(p, n, s) for p in ("uniform", "rho")
                                                          for n in (10000, 20000) for s in (3, 4)}
    assert [j.seed for j in jobs] == [3, 3, 3, 3, 4, 4, 4, 4]  # seed by seed: a stopped sweep leaves whole seeds
    assert jobs[0].out(tmp_path) == tmp_path / "budget10000"
    assert jobs[0].overrides(["x=1"]) == ["x=1", "budget.samples=10000"]
    # without budgets=, the plan of a plain comparison: arm by arm, one folder, overrides untouched
    plain = compare.plan(compare.parse_args(["policies=[uniform,rho]", "seeds=2", f"out={tmp_path}"]))
    assert [(j.arm, j.seed, j.budget) for j in plain] == [("uniform", 0, None), ("uniform", 1, None),
                                                         ("rho", 0, None), ("rho", 1, None)]
    assert plain[0].out(tmp_path) == tmp_path and plain[0].overrides(["x=1"]) == ["x=1"]


def test_budgets_arguments_are_checked(tmp_path):
    for bad in (["budgets=[10000,ten]"], ["budgets=[0,10000]"], ["budgets=[10000,20000]", "budget.samples=5000"],
                ["policies=[uniform,x:uniform+budget.samples=5]", "budgets=[10000,20000]"]):
        with pytest.raises(SystemExit):
            compare.parse_args([*bad, f"out={tmp_path}"])


def test_sweep_runs_every_arm_at_every_budget_and_resumes(tmp_path):
    first = FakeRunner()
    assert _sweep(tmp_path, first) == 0
    assert len(first.calls) == 2 * 3 * 3
    for out, spec, seed, ov in first.calls:
        budget = int(out.name.removeprefix("budget"))
        assert ov[-1] == f"budget.samples={budget}" and ov[0] == "trainer.reward_split=0.1"
        assert (runs.run_dir(out, compare.arm_spec(spec)[0], seed) / "metrics.jsonl").exists()
    assert (tmp_path / "budget10000" / "rho" / "seed2" / "metrics.jsonl").exists()
    for n in (10000, 20000, 40000):  # each budget is a comparison of its own
        assert "| rho | 3/3 |" in (tmp_path / f"budget{n}" / "results.md").read_text()
    assert json.loads((tmp_path / "compare.json").read_text())["budgets"] == [10000, 20000, 40000]
    saved = json.loads((tmp_path / "results.json").read_text())
    rows = {r["arm"]: r for r in saved["rows"]}
    assert rows["uniform"]["law"]["b"] == pytest.approx(0.5, abs=0.05)
    assert rows["rho"]["efficiency"]["multiplier"] > 1 and (tmp_path / "scaling.png").exists()

    again = FakeRunner()
    assert _sweep(tmp_path, again) == 0
    assert again.calls == []  # every run finished: kept

    (tmp_path / "budget20000" / "rho" / "seed1" / runs.RUN_RECORD).unlink()
    rec = tmp_path / "budget40000" / "uniform" / "seed0" / runs.RUN_RECORD
    rec.write_text(json.dumps({"ok": False, "returncode": 1}))  # a failed run is run again
    third = FakeRunner()
    assert _sweep(tmp_path, third) == 0
    assert sorted((c[0].name, c[1].split(":")[0], c[2]) for c in third.calls) == [
        ("budget20000", "rho", 1), ("budget40000", "uniform", 0)]


def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path):
    stopped = FakeRunner(stop_at=8)
    assert _sweep(tmp_path, stopped) == 130  # and reports what finished
    assert "## The fitted law" in (tmp_path / "results.md").read_text()
    done = {(c[0].name, c[1], c[2]) for c in stopped.calls[:7]}
    rest = FakeRunner()
    assert _sweep(tmp_path, rest) == 0
    resumed = [(c[0].name, c[1], c[2]) for c in rest.calls]
    assert len(resumed) == 18 - 7 and not done & set(resumed)
    assert resumed[0] == (stopped.calls[7][0].name, stopped.calls[7][1], stopped.calls[7][2])  # the stopped one first


def test_a_failed_run_fails_the_sweep_and_shows_in_the_table(tmp_path, capsys):
    runner = FakeRunner(fail={("rho", 40000, 2)})
    assert _sweep(tmp_path, runner) == 1
    assert "failed runs: budget40000/rho/seed2" in capsys.readouterr().out
    md = (tmp_path / "results.md").read_text()
    assert "| rho | " in md and " (2) |" in md  # two of three seeds at 40k


def test_a_plain_comparison_writes_what_it_always_did(tmp_path):
    """No budgets=: one folder per arm and seed, no budget override, no sweep files."""
    runner = FakeRunner()
    with pytest.raises(SystemExit) as exit_:
        compare.main(["policies=[uniform,rho]", "seeds=2", f"out={tmp_path}", "budget.samples=8000"], runner=runner)
    assert exit_.value.code == 0
    assert [c[3] for c in runner.calls] == [["budget.samples=8000"]] * 4
    assert all(c[0] == tmp_path for c in runner.calls)
    assert "budgets" not in json.loads((tmp_path / "compare.json").read_text())
    assert not (tmp_path / "scaling.png").exists() and not list(tmp_path.glob("budget*"))
    assert "# Policy comparison" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_tiny_real_sweep(tmp_path, env):
    """Two budgets, one seed, one arm: real runs get their own budget and folder."""
    out = tmp_path / "sweep"
    p = subprocess.run([sys.executable, "-m", "otfgen.controller.study.compare", "policies=[uniform]", "seeds=1",
                        f"out={out}", "budgets=[1024,2048]", "controller.request_size=256",
                        "trainer.batch_size=128", "trainer.threads=1"],
                       env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for n in (1024, 2048):
        rows = runs.load_metrics(runs.run_dir(runs.budget_dir(out, n), "uniform", 0) / "metrics.jsonl")
        assert max(r["train/samples"] for r in rows if "val/acc" in r) == n
    assert (out / "scaling.png").stat().st_size > 0
    assert "not fitted" in (out / "results.md").read_text()  # two budgets: no law
