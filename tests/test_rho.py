"""The rho policy: elites by rank per request and class, weights by elite rate per class × parameter bin, and
exploration by whole prior requests. It must cut regions a factorised policy cannot express, keep
a weak effect beside an overwhelming one, and stay uniform without evidence."""

import numpy as np
import pytest

from conftest import drive_policy
from otfgen.blender_gen import families
from otfgen.blender_gen.space import bin_index
from otfgen.controller import policies

SPACE = families.default_space("mnist2d")
CTX = {"num_classes": 10, "budget_requests": 200, "label_param": "label"}


def drive(policy, signal, requests=120, n=256, seed=0, space=SPACE):
    return drive_policy(policy, space, signal, requests, n, seed)


def share(policy, name, pred, label=None, n=20000, draws=20, space=SPACE):
    """Share of samples (of one class) whose bin of `name` satisfies pred, over many acts (so the
    prior requests count at their rate)."""
    hits = total = 0
    for d in range(draws):
        params, _ = space.sample(policy.act(), 50 + d, n // draws)
        b = bin_index(space[name], params[name], policy.k[name])
        m = params["label"] == label if label is not None else np.ones(len(b), bool)
        hits += int(pred(b[m]).sum())
        total += int(m.sum())
    return hits / total


def thin_1s_thick_8s(params):
    b = bin_index(SPACE["thickness"], params["thickness"], 16)
    good = ((params["label"] == 1) & (b <= 3)) | ((params["label"] == 8) & (b >= 12))
    return np.where(good, 1.0, 0.0)


def test_rho_cuts_a_joint_region_a_factorised_policy_cannot_express():
    policy = drive(policies.make("rho", SPACE, 16, CTX), thin_1s_thick_8s)
    thin = lambda b: b <= 3  # noqa: E731
    thick = lambda b: b >= 12  # noqa: E731
    # uniform gives 4/16 = 0.25 of each; a factorised row could not favour both at once
    assert share(policy, "thickness", thin, label=1) > 0.6
    assert share(policy, "thickness", thick, label=8) > 0.6
    assert share(policy, "thickness", thin, label=8) < 0.1
    # a class with no preference stays near uniform
    assert 0.12 < share(policy, "thickness", thin, label=4) < 0.38


def test_ranks_keep_a_weak_effect_beside_an_overwhelming_one():
    """An inverted image scores 50 below a plain one, thick strokes 0.5 above thin ones: an average
    of raw scores would be all inversion; elites by rank see both."""
    def signal(params):
        b = bin_index(SPACE["thickness"], params["thickness"], 16)
        return np.where(params["invert"] == 0, 0.0, -50.0) + np.where(b >= 8, 0.5, 0.0)

    wide = families.default_space("mnist2d_wide")
    policy = drive(policies.make("rho", wide, 16, CTX), signal, space=wide)
    assert share(policy, "invert", lambda b: b == 1, space=wide) < 0.1  # prior requests alone leave 0.05
    assert share(policy, "thickness", lambda b: b >= 8, space=wide) > 0.7  # uniform: 0.5


def test_without_signal_or_with_pure_noise_it_stays_near_uniform():
    policy = policies.make("rho", SPACE, 16, CTX)
    for i in range(20):
        action = policy.act()
        params, _ = SPACE.sample(action, i, 256)
        policy.observe(action, params, np.ones(256, np.float32), None)
    assert policy.act() == {}  # no signal, no departure
    policy = drive(policies.make("rho", SPACE, 16, CTX), lambda p: np.zeros(len(p["label"])), requests=120)
    for name in ("thickness", "rotation", "box"):
        rows = policy.joint_probs(name)
        # uniform is 0.0625 per bin: noise stays within 2× of it, per class row (the compounding
        # CEM update of the first version reached 0.27 and kept drifting)
        assert 0.031 < rows.min() and rows.max() < 0.125, (name, rows.min(), rows.max())


def test_prior_requests_come_at_their_share_and_actions_are_valid_and_seeded():
    a = drive(policies.make("rho", SPACE, 16, CTX | {"prior_share": 0.3}), thin_1s_thick_8s, requests=30)
    b = drive(policies.make("rho", SPACE, 16, CTX | {"prior_share": 0.3}), thin_1s_thick_8s, requests=30)
    acts = [a.act() for _ in range(400)]
    assert acts == [b.act() for _ in range(400)]  # the same seed, the same decisions
    prior = sum(1 for x in acts if x == {}) / len(acts)
    assert 0.22 < prior < 0.38
    steered = next(x for x in acts if x)
    probs = SPACE.check_action(steered)
    assert probs["thickness|label"].shape == (10, 16)
    assert probs["thickness|label"].min() >= 0.05 / 16 - 1e-4  # the per-bin floor


@pytest.mark.parametrize("options", [{"elite": 1.0}, {"prior_share": 1.0}, {"rate": 0.0}, {"forget": 1.0}])
def test_bad_options_fail_with_their_name(options):
    with pytest.raises(ValueError, match="policy.options"):
        policies.make("rho", SPACE, 16, CTX | options)


def render(n, seed):
    params, seeds = SPACE.sample({}, seed, n)
    return families.load("mnist2d").render(params, seeds)


def test_reducible_loss_signal_scores_inverted_and_upside_down_digits_below_plain_ones():
    """The reference (trained on the 'real' split) reads upside-down digits badly, the discriminator
    rejects inverted ones; each judge alone misses one of the two (docs/experiments.md)."""
    import torch

    from otfgen.trainer.models import SmallCNN, to_input
    from otfgen.trainer.judges import RealSignal

    torch.manual_seed(0)
    real_x, real_y = render(500, 1)
    net = SmallCNN(width=4, hidden=16, input_blur=1.0).train(False)
    state = torch.get_rng_state()
    sig = RealSignal("reducible_loss", net, real_x, real_y, torch.device("cpu"), 10, seed=0)
    # the reference has learnt its split: well above chance (0.1). 200 steps on these 500 renders
    # reach 0.72-0.92 over seeds 0-4 (0.72 at seed 0 on some CPUs); the gaps below hold at 0.72 too
    assert sig.ref_acc > 0.6
    asym = np.isin(real_y, [2, 3, 4, 5, 7])  # digits that do not read as themselves upside down
    gaps_inv, gaps_rot = [], []
    for step in range(40):
        x, y = render(120, 100 + step)
        x[:40] = 255 - x[:40]  # inverted
        x[40:80] = x[40:80, ::-1, ::-1]  # upside down
        s = sig(None, net(to_input(torch.from_numpy(x))), torch.from_numpy(y.astype(np.int64)),
                to_input(torch.from_numpy(x)))
        assert s.shape == (120,) and s.min() >= 0 and s.max() <= 1
        up = np.isin(y[40:80], [2, 3, 4, 5, 7])
        gaps_inv.append(s[80:].mean() - s[:40].mean())
        gaps_rot.append(s[80:][np.isin(y[80:], [2, 3, 4, 5, 7])].mean() - s[40:80][up].mean())
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left as it was
    assert asym.any()
    assert np.mean(gaps_inv[-10:]) > 0.3  # percentiles: plain well above inverted ...
    assert np.mean(gaps_rot) > 0.15  # ... and upright above upside down, from the first minibatch
    assert "signal/ref_train_acc" in sig.summary() and "signal/disc_loss" in sig.summary()


def test_selection_keeps_the_share_the_signal_rates_most_useful():
    from otfgen.trainer.judges import select

    sig = np.array([0.2, 0.9, 0.1, 0.7, 0.5, 0.3, 0.8, 0.0], np.float32)
    assert select(sig, 0.25, "reducible_loss").tolist() == [1, 6]  # the top quarter, in stream order
    assert select(sig, 0.25, "feature_distance").tolist() == [2, 7]  # a distance: the smallest are best
    assert select(sig, 1.0, "realism").tolist() == list(range(8))
    assert select(sig, 0.01, "grad_alignment").tolist() == [1]  # never an empty minibatch
    assert select(np.zeros(8, np.float32), 0.5, "reducible_loss").tolist() == [0, 1, 2, 3]
