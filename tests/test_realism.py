"""The realism signal: a discriminator trained online on the reward split scores generated images
that look like it above ones that do not, for their class, before any task model has learned."""

import numpy as np
import torch

from otfgen.blender_gen import families
from otfgen.blender_gen.space import bin_index
from otfgen.controller import policies
from otfgen.trainer.models import SmallCNN, to_input
from otfgen.trainer.judges import RealSignal

SPACE = families.default_space("mnist2d")


def render(n, seed, invert=None):
    """n mnist2d digits from the tuned space; the first `invert` of them inverted."""
    params, seeds = SPACE.sample({}, seed, n)
    images, labels = families.load("mnist2d").render(params, seeds)
    if invert:
        images[:invert] = 255 - images[:invert]
    return images, labels


def test_discriminator_scores_inverted_images_below_plain_ones():
    torch.manual_seed(0)
    real_x, real_y = render(300, 1)
    net = SmallCNN(width=4, hidden=16, input_blur=1.0)
    sig = RealSignal("realism", net, real_x, real_y, torch.device("cpu"), 10, seed=0)
    state = torch.get_rng_state()
    gaps = []
    for step in range(40):
        x, y = render(128, 100 + step, invert=64)  # half of each minibatch inverted
        s = sig(None, None, torch.from_numpy(y), to_input(torch.from_numpy(x)))
        assert s.shape == (128,) and s.dtype == np.float32
        gaps.append(float(s[64:].mean() - s[:64].mean()))
    # the global RNG (the task model's dropout, the real-data draws) is left as it was
    assert torch.equal(torch.get_rng_state(), state)
    assert np.mean(gaps[:3]) < 0.5  # it starts knowing nothing ...
    assert np.mean(gaps[-10:]) > 2.0  # ... and ends telling inverted from plain by logits apart
    assert sig.summary()["signal/disc_loss"] < 0.6 and sig.summary()["signal/time_s"] > 0


def test_realism_policy_moves_away_from_what_the_discriminator_rejects():
    policy = policies.make("realism", SPACE, 8, {"num_classes": 10, "budget_requests": 100, "label_param": "label"})
    assert policy.signal == "realism"
    rng = np.random.default_rng(0)
    for i in range(60):
        action = policy.act()
        params, _ = SPACE.sample(action, 500 + i, 256)
        b = bin_index(SPACE["thickness"], params["thickness"], 8)
        s = np.where(b >= 6, -3.0, 0.0) + rng.standard_normal(256)  # thick strokes look fake
        policy.observe(action, params, np.ones(256, np.float32), s.astype(np.float32))
    params, _ = SPACE.sample(policy.act(), 9, 20000)
    thick = np.mean(bin_index(SPACE["thickness"], params["thickness"], 8) >= 6)
    assert thick < 0.1  # uniform gives 2/8; the floor alone leaves 0.2 * 2/8 = 0.05


def test_the_plotted_class_row_is_the_one_drawn():
    """Classes are drawn uniformly unless steer_label: the plots must not show a steered row."""
    policy = policies.make("realism", SPACE, 8, {"num_classes": 10, "budget_requests": 100, "label_param": "label"})
    rng = np.random.default_rng(1)
    for i in range(20):
        action = policy.act()
        params, _ = SPACE.sample(action, 900 + i, 256)
        s = np.where(params["label"] == 3, 2.0, 0.0) + rng.standard_normal(256)  # class 3 looks real
        policy.observe(action, params, np.ones(256, np.float32), s.astype(np.float32))
    assert "label" not in policy.act()
    assert np.allclose(policy.probs()["label"], 0.1)
    steered = policies.make("realism", SPACE, 8, {"num_classes": 10, "budget_requests": 100, "label_param": "label",
                                                  "steer_label": True})
    for i in range(20):
        action = steered.act()
        params, _ = SPACE.sample(action, 900 + i, 256)
        s = np.where(params["label"] == 3, 2.0, 0.0) + rng.standard_normal(256)
        steered.observe(action, params, np.ones(256, np.float32), s.astype(np.float32))
    assert np.argmax(steered.probs()["label"]) == 3 and steered.act()["label"][3] > 0.3
