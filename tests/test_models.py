"""SmallCNN's optional input blur: what it does to pixels, checkpoints, and bad values."""

import pytest
import torch
import torch.nn.functional as F

from otfgen.trainer.models import SmallCNN


def test_input_blur_is_a_normalised_gaussian_of_the_given_std():
    m = SmallCNN(input_blur=1.0)
    delta = torch.zeros(1, 1, 15, 15)
    delta[0, 0, 7, 7] = 1.0
    assert m.blur_kernel.shape[-1] == 7  # radius 3 std
    out = F.conv2d(delta, m.blur_kernel, padding=3)[0, 0]
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)  # flat regions keep their level
    r = torch.arange(15.0) - 7
    var_x = (out.sum(0) * r**2).sum().item()
    assert var_x == pytest.approx(1.0, abs=0.03)  # 7 taps truncate a std-1 Gaussian only slightly


def test_blur_changes_the_features_and_zero_is_off():
    torch.manual_seed(0)
    plain = SmallCNN()
    blurred = SmallCNN(input_blur=1.0)
    blurred.load_state_dict(plain.state_dict())  # the kernel is not in the state dict
    assert "blur_kernel" not in plain.state_dict() and "blur_kernel" not in blurred.state_dict()
    plain.eval(), blurred.eval()
    x = (torch.rand(4, 1, 28, 28) > 0.8).float()
    with torch.no_grad():
        assert not torch.allclose(plain(x), blurred(x))
        # same weights, same blur: a rebuilt model reproduces the outputs (checkpoints reload)
        again = SmallCNN(input_blur=1.0)
        again.load_state_dict(blurred.state_dict())
        again.eval()
        torch.testing.assert_close(again(x), blurred(x))


def test_wide_blur_gets_a_wide_kernel():
    m = SmallCNN(input_blur=2.5)
    k = m.blur_kernel[0, 0]
    r = torch.arange(k.shape[-1], dtype=torch.float32) - k.shape[-1] // 2
    assert (k.sum(0) * r**2).sum().item() == pytest.approx(2.5**2, rel=0.05)  # not truncated to 7 taps
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("bad", [-0.5, 10.0])
def test_out_of_range_blur_is_refused(bad):
    with pytest.raises(ValueError, match="input_blur"):
        SmallCNN(input_blur=bad)


def test_selection_back_propagates_exactly_the_samples_select_picks():
    """trainer.select < 1: of a minibatch's generated samples, the ones ``select()`` picks from the
    signal (and every real image of few-real mode) reach backward, and no other. Seen through the
    input gradient: a sample left out of the forward pass gets none."""
    from otfgen.trainer.judges import select
    from otfgen.trainer.step import TrainStep
    from otfgen.trainer.train import learn

    n_gen, n = 12, 16  # 12 generated, then 4 real images
    sig = torch.tensor([5.0, 0.3, 9.0, 0.1, 7.0, 2.0, 8.0, 0.2, 6.0, 4.0, 3.0, 1.0])

    class Signal:  # what trainer.judges.RealSignal is to learn(): a kind and per-sample values
        kind = "feature_distance"  # a distance: the smallest are the most useful

        def __call__(self, feats, logits, y, inputs, blurred=False):
            assert len(y) == n_gen  # judged: the generated samples only
            return sig

    torch.manual_seed(0)
    net = SmallCNN(width=4, hidden=16, input_blur=1.0)
    x = torch.rand(n, 1, 28, 28, requires_grad=True)
    y = torch.arange(n) % 10
    losses, got, trained = learn(net, net, TrainStep(net, total_steps=4), Signal(), 0.25, x, y, n_gen)
    picked = select(sig.numpy(), 0.25, "feature_distance")
    assert picked.tolist() == [1, 3, 7] and trained == 3
    assert len(losses) == n_gen and got is sig
    reached_backward = (x.grad.flatten(1).abs().sum(1) > 0).nonzero().flatten().tolist()
    assert reached_backward == [*picked.tolist(), *range(n_gen, n)]
