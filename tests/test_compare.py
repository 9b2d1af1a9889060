"""otfgen-compare: argument parsing, the aggregation and the table on synthetic runs, and one tiny real run."""

import ast
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from otfgen.controller.study import compare, report, runs, stats


# -- synthetic runs ----------------------------------------------------------------------------------

def _curve(samples, scale, noise, rng):
    """An accuracy curve that saturates faster for a smaller ``scale`` (samples to ~63% of the way)."""
    acc = 0.99 - 0.89 * np.exp(-np.asarray(samples, float) / scale) + noise * rng.standard_normal(len(samples))
    return np.clip(acc, 0, 1)


def _write_run(out, policy, seed, scale, noise=0.002, budget=8000, every=1000, probs=None, wall=100.0):
    rdir = runs.run_dir(out, policy, seed)
    rdir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    xs = list(range(every, budget + 1, every))
    lines = []
    for i, (x, a) in enumerate(zip(xs, _curve(xs, scale, noise, rng))):
        lines.append({"train/samples": x, "train/elapsed_s": wall * x / budget, "train/data_wait": 0.05,
                      "val/acc": float(a), "val/n": 1797})
        ctrl = {"ctrl/requests": 4 * (i + 1), "time": 1000.0 + i, "policy/time_s": 2.0 * x / budget}
        if probs is not None:
            ctrl["policy/probs"] = probs(i / (len(xs) - 1))
        lines.append(ctrl)
    lines.append(dict(lines[-1]))  # the controller writes its last line twice (periodic + at stop)
    with open(rdir / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(m) + "\n" for m in lines)
        f.write('{"train/samples": 9')  # a line cut short by a kill must not break the report
    (rdir / runs.RUN_RECORD).write_text(json.dumps({"policy": policy, "seed": seed, "ok": True, "wall_s": wall}))


def _moving_probs(t):
    """label drifts towards classes 8-9; slant moves a lot; noise a little; width never."""
    label = np.ones(10)
    label[8:] += 4 * t
    return {"label": list(label / label.sum()), "slant": [1 - 0.9 * t, 1.0, 1.0, 1 + 2 * t],
            "noise": [1.0, 1 + 0.1 * t], "width": [0.25] * 4}


@pytest.fixture
def synthetic(tmp_path):
    for s in range(3):
        _write_run(tmp_path, "uniform", s, scale=3000)
        _write_run(tmp_path, "fast", s, scale=700, probs=_moving_probs)  # reaches uniform's final in < half
        _write_run(tmp_path, "same", s, scale=3000, noise=0.004, probs=_moving_probs)
    # a policy whose runs failed: a record and nothing else
    for s in range(3):
        d = runs.run_dir(tmp_path, "broken", s)
        d.mkdir(parents=True)
        (d / runs.RUN_RECORD).write_text(json.dumps({"ok": False, "returncode": 1}))
    return tmp_path


# -- tests -----------------------------------------------------------------------------------------

def test_parse_args_splits_harness_keys_from_overrides(tmp_path):
    a = compare.parse_args(["policies=[uniform, bandit]", "seeds=3", f"out={tmp_path}/x", "workers=4",
                            "budget.samples=60000", "thresholds=[90,99.5]", "scene.params.slant.high=0.3"])
    assert a.policies == ["uniform", "bandit"] and a.seeds == 3
    assert a.out == (tmp_path / "x").resolve()
    assert a.thresholds == [90.0, 99.5]
    assert a.overrides == ["launcher.workers=4", "budget.samples=60000", "scene.params.slant.high=0.3"]
    assert "outputs/compare/" in str(compare.parse_args([]).out)
    for bad in (["policy=ppo"], ["seeds=0"], ["nonsense"]):
        with pytest.raises(SystemExit):
            compare.parse_args(bad)


def test_samples_to_reach_interpolates_between_validations():
    xs, ys = np.array([1000.0, 2000.0, 3000.0]), np.array([0.5, 0.9, 0.95])
    assert stats.samples_to_reach(xs, ys, 0.7) == pytest.approx(1500)
    assert stats.samples_to_reach(xs, ys, 0.95) == pytest.approx(3000)
    assert stats.samples_to_reach(xs, ys, 0.4) == 1000  # already there at the first validation
    assert stats.samples_to_reach(xs, ys, 0.96) is None


def test_mean_curve_covers_only_the_common_range():
    a = runs.Run("p", 0, True, np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 0.3]), 1.0, 0, None, [])
    b = runs.Run("p", 1, True, np.array([1.0, 2.0]), np.array([0.3, 0.4]), 1.0, 0, None, [])
    grid, mean, lo, hi = stats.mean_curve([a, b])
    assert list(grid) == [1.0, 2.0]
    assert mean == pytest.approx([0.2, 0.3]) and lo == pytest.approx([0.1, 0.2]) and hi == pytest.approx([0.3, 0.4])


def test_report_table_criterion_and_plots(synthetic):
    policies = ["uniform", "fast", "same", "broken"]
    text = report.report(synthetic, policies, 3, [90, 95, 97, 98, 99.9])
    for name in ("results.md", "results.json", "accuracy.png", "error_loglog.png", "policy_distributions.png"):
        assert (synthetic / name).stat().st_size > 0, name
    res = json.loads((synthetic / "results.json").read_text())
    rows = {r["policy"]: r for r in res["rows"]}
    u, f = rows["uniform"], rows["fast"]
    assert u["runs_ok"] == 3 and u["budget"] == 8000
    assert u["final_acc_mean"] == pytest.approx(100 * (0.99 - 0.89 * np.exp(-8 / 3)), abs=0.5)
    assert u["data_wait_pct"] == pytest.approx(5.0) and u["wall_s"] == pytest.approx(100.0)
    assert u["policy_overhead_pct"] == pytest.approx(2.0)  # 2 s of policy time in 100 s
    assert f["samples_to"]["90"] < u["samples_to"]["90"]
    assert u["samples_to"]["99.9"] is None
    assert f["ratio_to_uniform_budget"] < 0.5 and u["ratio_to_uniform_budget"] == pytest.approx(1.0, abs=0.1)
    assert f["criterion"]["met"] and f["criterion"]["half_budget"]
    assert rows["same"]["criterion"]["met"] is False
    assert rows["broken"]["runs_ok"] == 0 and rows["broken"]["criterion"]["met"] is None
    assert u["criterion"] is None
    md = (synthetic / "results.md").read_text()
    assert md.count("\n| ") == 5  # header + 4 policies
    assert "| broken | 0/3 | — |" in md
    assert "fast: criterion MET (at half the samples" in text and "same: criterion not met" in text


def test_policy_trajectory_and_param_choice(synthetic):
    rows = runs.load_metrics(runs.run_dir(synthetic, "fast", 0) / "metrics.jsonl")
    x, xlabel, params = report.policy_trajectory(rows)
    assert xlabel == "requests issued" and list(x) == [4.0 * (i + 1) for i in range(8)]  # duplicate dropped
    assert params["label"].shape == (8, 10)
    assert np.allclose(params["slant"].sum(1), 1.0)  # raw weights normalised
    assert report.pick_params(params, k=3) == ["label", "slant", "noise"]
    assert report.pick_params(params)[-1] == "width"  # never moved: last


def test_no_policy_probs_means_no_distribution_plot(tmp_path):
    _write_run(tmp_path, "uniform", 0, scale=3000)
    _write_run(tmp_path, "other", 0, scale=3000)
    report.report(tmp_path, ["uniform", "other"], 1, [90])
    assert (tmp_path / "accuracy.png").exists() and not (tmp_path / "policy_distributions.png").exists()


@pytest.mark.slow
def test_tiny_real_comparison(tmp_path, env):
    out = tmp_path / "cmp"
    p = subprocess.run([sys.executable, "-m", "otfgen.controller.study.compare", "policies=[uniform,bandit]",
                        "seeds=1", f"out={out}", "budget.samples=2048", "trainer.val_every=1024",
                        "controller.request_size=256", "trainer.batch_size=128", "trainer.threads=1"],
                       env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "uniform seed 0: done" in p.stdout
    for name in ("results.md", "results.json", "accuracy.png", "error_loglog.png"):
        assert (out / name).stat().st_size > 0, name
    rows = {r["policy"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["uniform"]["runs_ok"] == 1 and rows["uniform"]["budget"] == 2048
    assert {name: (r["runs_ok"], r["runs"]) for name, r in rows.items()} == {"uniform": (1, 1), "bandit": (1, 1)}
    assert "bandit seed 0: done" in p.stdout  # every run succeeded, not only had its row
    assert "| uniform | 1/1 |" in (out / "results.md").read_text()


def test_arms_with_overrides_seed_offset_and_unknown_policies(tmp_path):
    a = compare.parse_args(["policies=[uniform,wide:align+scene=mnist2d_wide+trainer.reward_split=0.1]",
                            "seeds=5", "seed_offset=10", "baseline=uniform", "headroom=[uniform,wide]",
                            f"out={tmp_path}"])
    assert a.seed_list == [10, 11, 12, 13, 14]
    assert compare.arm_spec(a.policies[1]) == ("wide", "align", ["scene=mnist2d_wide", "trainer.reward_split=0.1"])
    for bad in (["policies=[uniform,nosuch]"], ["policies=[uniform,x:nosuch+seed=1]"],
                ["policies=[uniform,bandit]", "baseline=ppo"], ["policies=[uniform,uniform]"],
                ["policies=[uniform,bandit]", "headroom=[uniform]"]):
        with pytest.raises(SystemExit):
            compare.parse_args(bad)


def test_paired_difference_and_its_interval(tmp_path):
    # per seed: uniform at 90 + s/10 %, better at +1.0 ± small, noisy at ±1 around +0.2
    offsets = {"better": [1.0, 1.1, 0.9, 1.05, 0.95], "noisy": [1.2, -0.8, 0.9, -0.7, 0.4]}
    for s in range(5):
        for arm, acc in [("uniform", 0.90 + s / 1000)] + [(k, 0.90 + s / 1000 + v[s] / 100) for k, v in offsets.items()]:
            d = runs.run_dir(tmp_path, arm, s)
            d.mkdir(parents=True)
            (d / "metrics.jsonl").write_text(json.dumps({"train/samples": 1000, "val/acc": acc}) + "\n")
    result = stats.analyse(tmp_path, ["uniform", "better", "noisy"], 5, [90.0], "uniform", ["better", "uniform"])
    rows = {r["policy"]: r for r in result["rows"]}
    b, n = rows["better"]["paired"], rows["noisy"]["paired"]
    assert b["n"] == 5 and b["mean"] == pytest.approx(1.0) and b["claim"] == "gain" and b["lo"] > 0.8
    assert n["mean"] == pytest.approx(0.2) and n["claim"] == "no difference shown" and n["lo"] < 0 < n["hi"]
    # the half-width is t(0.975, 4) · sd / √5
    assert (n["hi"] - n["lo"]) / 2 == pytest.approx(2.776 * np.std(offsets["noisy"], ddof=1) / 5 ** 0.5, rel=1e-3)
    assert rows["noisy"]["headroom_closed"] == pytest.approx(0.2)
    text = report.write_results(result, tmp_path)
    assert "better − uniform: +1.00 [" in text and "closes 20% of the headroom" in text


def test_random_search_boxes_lie_in_the_prior_and_pass_the_config_check():
    from otfgen.controller import config
    from otfgen.controller.study import random_search

    cfg = config.compose(["scene=mnist2d_wide"])
    boxes = random_search.draw_boxes(cfg.scene.params, "label", 6, seed=3)
    assert len(boxes) == 6 and boxes != random_search.draw_boxes(cfg.scene.params, "label", 6, seed=4)
    assert boxes == random_search.draw_boxes(cfg.scene.params, "label", 6, seed=3)  # a seed's boxes replay
    widths = []
    for box in boxes:
        assert not any(o.startswith("scene.params.label.") for o in box)  # classes stay whole
        narrowed = config.compose(["scene=mnist2d_wide", *box])
        config.check(narrowed)  # inside the family's declaration, defaults inside the box
        for name, p in narrowed.scene.params.items():
            prior = cfg.scene.params[name]
            if p["kind"] == "float" and prior["high"] > prior["low"]:
                assert prior["low"] <= p["low"] < p["high"] <= prior["high"]
                widths.append((p["high"] - p["low"]) / (prior["high"] - prior["low"]))
            if p["kind"] == "choice":
                assert 1 <= len(p["choices"]) and set(p["choices"]) <= set(prior["choices"])
    assert 0.1 < min(widths) and np.mean(widths) < 0.9  # real sub-boxes, not the whole prior


def test_random_search_trains_the_best_probe_box_with_the_rest_of_the_budget(tmp_path):
    from otfgen.controller.study import random_search

    launched = []

    def launch(rdir, overrides):
        launched.append((rdir, overrides))
        rdir.mkdir(parents=True, exist_ok=True)
        i = len(launched) - 1
        acc = [0.3, 0.8, 0.5][i] if i < 3 else 0.9
        (rdir / "metrics.jsonl").write_text(json.dumps({"train/samples": 1, "val/acc": acc, "reward/acc": acc}) + "\n")
        return {"ok": True, "returncode": 0, "wall_s": 10.0}

    ov = ["scene=mnist2d_wide", "budget.samples=20000", "trainer.reward_split=0.1",
          "search.boxes=3", "search.probe_samples=4000"]
    rec = random_search.run(tmp_path / "seed0", 0, ov, launch)
    assert len(launched) == 4 and rec["ok"] and rec["wall_s"] == 40.0
    probes, final = launched[:3], launched[3]
    assert all("budget.samples=4000" in o for _, o in probes)
    assert "budget.samples=8000" in final[1]  # 20000 - 3 × 4000: every probe sample counted
    assert not any(o.startswith("search.") for _, ov_ in launched for o in ov_)
    chosen = [o for o in probes[1][1] if o.startswith("scene.params.")]
    assert chosen and [o for o in final[1] if o.startswith("scene.params.")] == chosen  # box 1 had 0.8
    record = json.loads((tmp_path / "seed0" / "search.json").read_text())
    assert record["chosen"] == 1 and [b["reward_acc"] for b in record["boxes"]] == [0.3, 0.8, 0.5]
    with pytest.raises(SystemExit, match="needs budget.samples"):
        random_search.run(tmp_path / "s1", 0, [*ov[:1], "budget.samples=10000", *ov[2:]], launch)


def test_headroom_share_only_for_arms_on_the_wide_scene_even_with_a_global_scene():
    args = compare.parse_args(["policies=[uniform,align,wide:uniform+scene=fashion2d_wide,"
                               "realism_wide:realism+scene=fashion2d_wide]", "headroom=[uniform,wide]",
                               "scene=fashion2d"])
    # the arm's own scene= is the one its run gets; the harness-wide scene=fashion2d must not hide it
    assert compare.arms_on_wide(args, ["uniform", "align", "wide", "realism_wide"]) == ["wide", "realism_wide"]


def test_policy_and_signal_costs_are_shares_of_the_wall_time(tmp_path):
    d = runs.run_dir(tmp_path, "rho", 0)
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text(json.dumps({"train/samples": 1000, "val/acc": 0.9, "train/elapsed_s": 100.0,
                                                 "policy/time_s": 2.0, "signal/time_s": 8.0}) + "\n")
    row = stats.summarize("rho", [runs.read_run(tmp_path, "rho", 0)], [90.0])
    assert row["policy_overhead_pct"] == pytest.approx(2.0) and row["signal_cost_pct"] == pytest.approx(8.0)


def test_wall_ratio_pairs_each_run_with_the_baseline_on_its_seed(tmp_path):
    for arm, walls in (("uniform", (100.0, 50.0)), ("rho", (80.0, 60.0))):
        for seed, wall in enumerate(walls):
            d = runs.run_dir(tmp_path, arm, seed)
            d.mkdir(parents=True)
            (d / "metrics.jsonl").write_text(json.dumps({"train/samples": 1000, "val/acc": 0.9,
                                                         "train/elapsed_s": wall}) + "\n")
    result = stats.analyse(tmp_path, ["uniform", "rho"], 2, [90.0])
    rows = {r["policy"]: r for r in result["rows"]}
    # (80/100 + 60/50) / 2 = 1.0, where unpaired means would say 70/75
    assert rows["rho"]["wall_ratio"] == pytest.approx(1.0) and rows["uniform"]["wall_ratio"] == pytest.approx(1.0)
    assert "| 1.00 |" in report.markdown_table(result)


def test_nothing_outside_the_study_imports_it():
    """The harnesses sit on top of the runtime: the runtime must run without them."""
    study = ROOT / "controller" / "study"
    offenders = []
    for part in ("configs", "blender_gen", "trainer", "controller"):
        for path in (ROOT / part).rglob("*.py"):
            if path.is_relative_to(study):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                if any(n == "otfgen.controller.study" or n.startswith("otfgen.controller.study.") for n in names):
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
