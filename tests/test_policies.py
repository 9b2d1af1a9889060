"""Policies: they move probability toward what a synthetic reward favours, keep their exploration
floor, and compute state and reward correctly on crafted feedback."""

import numpy as np
import pytest

from otfgen.blender_gen.space import ParamSpace, bin_index
from otfgen.controller import policies
from otfgen.controller.policies import RegionStats, n_bins

SPACE = ParamSpace.from_mapping({
    "label": {"kind": "int", "low": 0, "high": 9},
    "slant": {"kind": "float", "low": -0.5, "high": 0.5},
    "width": {"kind": "float", "low": 1.0, "high": 3.0},
    "fill": {"kind": "choice", "choices": ["flat", "stripes", "dots"]},
})
CTX = {"num_classes": 10, "budget_requests": 500}


def favoured(params):
    """The region a synthetic reward favours: slant in its top eighth."""
    return params["slant"] >= 0.375


def drive(policy, requests, learnable=True, seed=0):
    for i in range(requests):
        action = policy.act()
        params, _ = SPACE.sample(action, seed * 100_000 + i, 128)
        fav = favoured(params)
        # in the favoured region the loss keeps falling (learning progress); elsewhere it is flat
        phase = (i % 60) / 12.0
        losses = np.where(fav, 2.0 * np.exp(-phase), 1.0) if learnable else np.ones(128)
        realism = np.where(fav, 0.2, 1.0)  # features of the favoured region look real
        policy.observe(action, params, losses.astype(np.float32), realism.astype(np.float32))
    return policy


@pytest.mark.parametrize("name,requests,options", [
    ("bandit", 120, {}),
    ("match", 60, {}),
    ("ppo", 400, {"params": ["slant", "label"], "rollout": 8, "floor": 0.25, "window": 2}),
])
def test_policy_moves_toward_the_rewarded_region(name, requests, options):
    policy = drive(policies.make(name, SPACE, 8, {**CTX, **options}, seed=1), requests)
    p = np.asarray(policy.probs()["slant"])
    assert p.shape == (8,) and abs(p.sum() - 1) < 1e-6
    assert p[-1] > 0.3 and p[-1] == p.max(), p  # uniform would be 0.125
    # and the actions it issues really generate more of that region
    params, _ = SPACE.sample(policy.act(), 999, 4000)
    assert favoured(params).mean() > 0.25


@pytest.mark.parametrize("name", ["bandit", "match", "ppo"])
def test_exploration_floor_holds(name):
    floor = 0.2
    extra = {"rollout": 8} if name == "ppo" else {}
    policy = drive(policies.make(name, SPACE, 8, {**CTX, "floor": floor, **extra}, seed=2), 200)
    for pname, probs in policy.probs().items():
        k = len(probs)
        assert min(probs) >= floor / k - 1e-9, (pname, probs)
    action = policy.act()
    SPACE.check_action(action)  # every action is valid for the space
    for pname, w in action.items():
        if not pname.startswith("_"):
            w = np.asarray(w) / np.sum(w)
            assert w.min() >= floor / len(w) - 1e-9


def test_bandit_does_not_chase_an_unlearnable_hard_region():
    # a region that is hard (high loss) but never improves earns no progress: no collapse onto it
    policy = policies.make("bandit", SPACE, 8, CTX, seed=0)
    for i in range(150):
        action = policy.act()
        params, _ = SPACE.sample(action, i, 128)
        losses = np.where(favoured(params), 5.0, 1.0).astype(np.float32)  # hard, constant
        policy.observe(action, params, losses)
    assert max(policy.probs()["slant"]) < 0.3


def test_uniform_policy_is_uniform():
    policy = policies.make("uniform", SPACE, 8, CTX)
    assert policy.act() == {}
    params, _ = SPACE.sample(policy.act(), 0, 8000)
    hist = np.bincount(bin_index(SPACE["slant"], params["slant"], 8), minlength=8) / 8000
    assert np.all(np.abs(hist - 0.125) < 0.02)


def test_bins_invert_the_samplers_binning():
    for name in ("slant", "label", "fill"):
        p = SPACE[name]
        k = n_bins(p, 8)
        for b in range(k):
            w = np.zeros(k)
            w[b] = 1
            params, _ = SPACE.sample({name: w.tolist()}, b, 200)
            assert np.all(bin_index(p, params[name], k) == b), (name, b)
    assert n_bins(SPACE["label"], 8) == 10 and n_bins(SPACE["fill"], 8) == 3


def test_region_stats_progress_on_crafted_feedback():
    stats = RegionStats(SPACE, 8, ["slant"], fast=0.5, slow=0.1)
    params = {"slant": np.array([-0.5, -0.5, 0.45, 0.45], dtype=np.float32)}
    stats.update(params, np.array([1.0, 1.0, 2.0, 2.0]))
    stats.update(params, np.array([1.0, 1.0, 1.0, 1.0]))
    # bin 0: flat at 1 -> no progress; bin 7: 2 then 1 -> fast=1.5, slow=1.9 -> progress 0.4
    prog = stats.progress("slant")
    assert prog[0] == 0 and abs(prog[7] - 0.4) < 1e-9 and np.all(prog[1:7] == 0)
    assert stats.count["slant"].tolist() == [4, 0, 0, 0, 0, 0, 0, 4]


def test_ppo_reads_per_class_accuracy_into_its_state():
    policy = policies.make("ppo", SPACE, 8, CTX)
    policy.observe_validation({"reward/acc_class": [0.1 * i for i in range(10)]})
    state = policy._state()
    assert np.allclose(state[:10].numpy(), [0.1 * i for i in range(10)])


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="tempreature"):
        policies.make("bandit", SPACE, 8, {"tempreature": 1.0})
    with pytest.raises(ValueError, match="unknown policy 'greedy'"):
        policies.make("greedy", SPACE)


RETIRED = ("bandit", "ppo", "match", "align", "realism")  # measured, no gain or beaten by rho


def test_the_core_holds_uniform_and_rho_and_the_retired_five_come_from_the_plugin():
    """The five are found only through the installed examples/otfgen_baselines (README's test
    command installs it), with their options as config and the signals the trainer computes."""
    import tomllib
    from importlib.metadata import entry_points

    from conftest import ROOT
    from otfgen.controller import config

    assert policies.NAMES == ("uniform", "rho")
    assert sorted(p.stem for p in (ROOT / "configs" / "policy").glob("*.yaml")) == ["rho", "uniform"]
    assert not any((ROOT / "controller" / "policies" / f"{n}.py").exists() for n in RETIRED)
    plugin = ROOT / "examples" / "otfgen_baselines"
    declared = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]["entry-points"]["otfgen.policies"]
    assert declared == {n: f"otfgen_baselines.{n}" for n in RETIRED}

    installed = {ep.name: ep.value for ep in entry_points(group=policies.ENTRY_POINTS)}
    missing = [n for n in RETIRED if installed.get(n) != declared[n]]
    assert not missing, f"{missing} not installed: pip install -e examples/otfgen_baselines"
    assert set(RETIRED) <= set(policies.names())
    assert {n: policies.signal_of(n) for n in RETIRED} == {
        "bandit": "none", "ppo": "none", "match": "feature_distance", "align": "grad_alignment", "realism": "realism"}
    assert set(RETIRED) <= set(config.policy_args())  # their Args are their config (policy.options)
    for n in RETIRED:
        module = policies._module(n)
        assert module.__name__ == f"otfgen_baselines.{n}" and module.POLICY.name == n
        assert config.compose([f"policy={n}"]).policy.options == policies.args_class(n)()
