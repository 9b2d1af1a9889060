"""The align policy and its signal: joint class × parameter regions, and a gradient alignment
that is what a finite difference of the real loss says it is."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import drive_policy
from otfgen.blender_gen import families
from otfgen.blender_gen.space import bin_index
from otfgen.controller import policies
from otfgen.trainer.models import SmallCNN, to_input
from otfgen.trainer.judges import RealSignal

SPACE = families.default_space("mnist2d")
CTX = {"num_classes": 10, "budget_requests": 500, "label_param": "label"}


def crafted_signal(params) -> np.ndarray:
    """Helps only thin 1s and thick 8s: a joint region no per-parameter row can express."""
    b = bin_index(SPACE["thickness"], params["thickness"], 8)
    good = ((params["label"] == 1) & (b <= 1)) | ((params["label"] == 8) & (b >= 6))
    return np.where(good, 1.0, 0.0)


def drive(policy, requests=300, n=256, seed=0):
    return drive_policy(policy, SPACE, crafted_signal, requests, n, seed)


def thin_share(action, label: int, n=20000) -> float:
    params, _ = SPACE.sample(action, 7, n)
    b = bin_index(SPACE["thickness"], params["thickness"], 8)
    return float(np.mean(b[params["label"] == label] <= 1))


def test_joint_policy_finds_a_region_a_factorised_one_cannot_express():
    joint = drive(policies.make("align", SPACE, 8, {**CTX, "floor": 0.3, "steer_label": True}))
    flat = drive(policies.make("align", SPACE, 8, {**CTX, "floor": 0.3, "joint": False, "steer_label": True}))
    ja, fa = joint.act(), flat.act()
    # the joint policy draws thin strokes for 1s and thick ones for 8s, each far above uniform's 2/8
    assert thin_share(ja, 1) > 0.6
    assert 1 - thin_share(ja, 8) > 0.8 and thin_share(ja, 8) < 0.15
    # one row for every class cannot: what it gives 1s it gives 8s too
    assert abs(thin_share(fa, 1) - thin_share(fa, 8)) < 0.05
    assert thin_share(ja, 1) - thin_share(ja, 8) > 0.4
    # classes 1 and 8 carry the signal, so they are drawn more often than the floor alone gives
    p = np.asarray(ja["label"])
    assert p[1] > 0.1 and p[8] > 0.1 and p.min() >= 0.3 / 10 - 1e-9
    assert joint.joint_probs("thickness").shape == (10, 8)


def test_without_signal_the_policy_stays_uniform():
    policy = policies.make("align", SPACE, 8, CTX)
    params, _ = SPACE.sample({}, 1, 64)
    for _ in range(20):
        policy.observe({}, params, np.ones(64, np.float32), None)
    assert policy.act() == {}


def test_alignment_agrees_with_a_finite_difference_of_the_real_loss():
    torch.manual_seed(0)
    net = SmallCNN(width=4, hidden=16, dropout=0.0).double().train(False)
    g = torch.Generator().manual_seed(1)
    real_x = torch.randint(0, 256, (40, 28, 28), generator=g, dtype=torch.uint8)
    real_y = torch.randint(0, 10, (40,), generator=g)
    x = torch.randint(0, 256, (3, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.tensor([2, 5, 7])
    double = lambda t: to_input(t).double()  # noqa: E731 - float64 so the difference is exact enough

    sig = RealSignal("grad_alignment", net, real_x.numpy(), real_y.numpy(), torch.device("cpu"), 10)
    import otfgen.trainer.judges as signals_mod

    orig = signals_mod.to_input
    signals_mod.to_input = double
    try:
        with torch.no_grad():
            feats = net.embed(double(x))
            align = sig(feats, net.head(feats), y)
    finally:
        signals_mod.to_input = orig
    linear = net.head[1]

    def real_loss() -> float:
        with torch.no_grad():
            return F.cross_entropy(net(double(real_x)), real_y).item()

    eta = 1e-4
    base = real_loss()
    for i in range(3):
        w0 = linear.weight.detach().clone()
        linear.weight.grad = None
        F.cross_entropy(net(double(x[i:i + 1])), y[i:i + 1]).backward()
        with torch.no_grad():
            linear.weight -= eta * linear.weight.grad
        change = real_loss() - base
        with torch.no_grad():
            linear.weight.copy_(w0)
        assert change == pytest.approx(-eta * float(align[i]), rel=0.02, abs=1e-10)
    assert np.any(np.abs(align) > 1e-4)  # the test is not passing on zeros


def test_by_default_classes_stay_balanced_and_parameters_follow_their_class():
    policy = drive(policies.make("align", SPACE, 8, CTX), requests=40)
    action = policy.act()
    assert "label" not in action and "thickness|label" in action  # classes uniform, rows per class
    params, _ = SPACE.sample(action, 3, 20000)
    assert np.bincount(params["label"], minlength=10).min() > 1800


def test_additive_model_measures_each_parameter_with_the_others_explained_away():
    """A strong effect of one parameter (inversion) inflates the spread every other parameter's
    cell averages are judged against; the additive fit measures the weak thickness effect against
    the residual spread instead, so it steers thickness where the averages barely do."""
    space = families.declared_space(families.load("mnist2d"))

    def run(model):
        policy = policies.make("align", space, 8, {**CTX, "model": model})
        rng = np.random.default_rng(0)
        for i in range(120):
            action = policy.act()
            params, _ = space.sample(action, 2000 + i, 256)
            thick = bin_index(space["thickness"], params["thickness"], 8)
            s = -6.0 * (params["invert"] == 1) - 0.3 * (thick >= 6) + 0.3 * rng.standard_normal(256)
            policy.observe(action, params, np.ones(256, np.float32), s.astype(np.float32))
        p = policy.joint_probs("thickness")
        return policy, float(p[:, 6:].sum(1).mean()), float(policy.joint_probs("invert")[:, 1].mean())

    additive, thick_add, inv_add = run("additive")
    _, thick_avg, inv_avg = run("average")
    assert inv_add < 0.15 and inv_avg < 0.15  # both see the strong effect
    assert thick_add < 0.08 < thick_avg  # uniform: 0.25; the floor alone: 0.05
    assert additive.act()["thickness|label"][3] == pytest.approx(additive.joint_probs("thickness")[3], abs=1e-4)
    with pytest.raises(ValueError, match="model"):
        policies.make("align", SPACE, 8, {**CTX, "model": "gmm"})
