"""The judges: what the trainer measures for a policy, per generated sample, against the real
reward split (the module is named for them, not for OS signals).

The controller's info names the signal its policy learns from (``protocol.SIGNALS``):

- ``feature_distance`` (``match``): ‖φ(x) − μ_real‖² of L2-normalised penultimate features φ,
  μ_real their mean over the reward split (a linear-kernel MMD proxy, Meta-Sim style).
- ``grad_alignment`` (``align``): how much one SGD step on the sample would lower the reward
  split's loss, to first order in the last layer: with h the penultimate features, p the softmax
  and y the one-hot label, the sample's gradient of the classifier weights is (p − y) hᵀ and the
  reward split's mean gradient is G = mean_r (p_r − y_r) h_rᵀ, so the alignment is
  ⟨(p − y) hᵀ, G⟩ = (p − y)ᵀ G h (Learning to Reweight, Ren et al. 2018; DoGE, Fan et al. 2023;
  the one-step hypergradient of DADA, Li et al. 2020). Positive: the sample pulls the model
  the way the real data wants it to go.
- ``realism`` (``realism``): the logit of a small class-conditional discriminator trained online
  to tell the reward split's real images from the generated ones (real = 1): how real the sample
  looks for its class. Unlike the other two it does not ask the task model, so it is informative
  from the first minibatch, before the model has learned anything (Active Domain Randomization,
  Mehta et al. 2019, scores randomised environments by such a discriminator against a
  reference). The discriminator sees the input through the task model's fixed blur, so the edge
  profiles the model is blind to do not dominate it.
- ``reducible_loss`` (``rho``): two judges, each as a percentile within the minibatch, averaged.
  (1) The reducible loss: the task model's loss on the sample minus that of a reference model
  trained once, at the start, on the reward split alone (RHO-LOSS, Mindermann et al. 2022:
  "learnable, worth learning, not yet learnt"); high where the current model is still wrong and a
  model of the real data is right, so an upside-down 7 scores low, and so does a digit already
  learnt. (2) ``realism``'s discriminator logit. The reference has no "none of these" answer: it
  reads an inverted image (a white blob) confidently as an 8, so inverted 8s looked like the best
  8s (the first try, docs/experiments.md); the discriminator rejects them at once, but it is
  nearly blind to orientation, which the reference sees.

The reference (μ_real or G) is recomputed from the reward split every ``every`` steps, in eval
mode, so the signal tracks the current model at a bounded cost.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from torch import nn

from otfgen.blender_gen import protocol
from otfgen.configs.schema import ConfigError
from otfgen.trainer.models import to_input

KINDS = tuple(k for k in protocol.SIGNALS if k != "none")  # what RealSignal computes: every signal there is


class Discriminator(nn.Module):
    """Real or generated, given the class: a projection discriminator (Miyato & Koyama 2018) small
    beside the task model — two 3×3 convs on a 14×14 view, so its cost per minibatch stays a few
    percent of the training step's."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 8, hidden: int = 64):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(14), nn.Conv2d(in_channels, width, 3, padding=1), act(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), act(), nn.Flatten(),
            nn.Linear(2 * width * 49, hidden), act())
        self.out = nn.Linear(hidden, 1)
        self.embed = nn.Embedding(num_classes, hidden)
        nn.init.zeros_(self.embed.weight)  # starts unconditional; the class term is learned

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.out(h).squeeze(1) + (self.embed(y) * h).sum(1)


class RealSignal:
    def __init__(self, kind: str, net, reward_x: np.ndarray, reward_y: np.ndarray, device: torch.device,
                 num_classes: int, every: int = 50, seed: int = 0):
        if kind not in KINDS:
            raise ValueError(f"unknown signal '{kind}'")
        self.kind, self.net, self.device, self.num_classes, self.every = kind, net, device, num_classes, max(1, every)
        self.x = torch.from_numpy(reward_x)
        self.y = torch.from_numpy(reward_y.astype(np.int64))
        self.ref: torch.Tensor | None = None
        self.steps = 0
        self.time_s = 0.0  # wall time spent computing the signal: its trainer-side cost
        if kind in ("realism", "reducible_loss"):
            gen = torch.Generator().manual_seed(seed)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                channels = 1 if self.x.dim() == 3 else self.x.shape[-1]
                self.disc = Discriminator(channels, num_classes).to(device)
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
            # rho's discriminator learns on every second minibatch: a step cost it 3.4 ms of its
            # 4.6 (2 CPU cores), and the generated distribution moves slowly beside 256 samples
            self.disc_every = 2 if kind == "reducible_loss" else 1
            self.disc_calls = 0
            self.real_in = self._view(to_input(self.x.to(device)))
            self.real_y = self.y.to(device)
            self.gen = gen
            self.disc_loss: float | None = None
        if kind == "reducible_loss":
            t0 = time.perf_counter()
            self.ref_net, self.ref_acc = train_reference(self._view, self.x, self.y, num_classes, device, seed)
            self.time_s += time.perf_counter() - t0  # part of the signal's cost

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        """The task model's fixed input blur, if it has one (trainer/models.py)."""
        return self.net.blur(x) if hasattr(self.net, "blur") else x

    def _realism(self, fake: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Score the minibatch (``fake``: through the task model's blur) with the discriminator as
        it stands, then (on every ``disc_every``-th call) train it one step on (up to) 64 real
        images against 64 of these."""
        self.disc.train(False)
        with torch.no_grad():
            score = self.disc(fake, y)
        self.disc_calls += 1
        if (self.disc_calls - 1) % self.disc_every:
            return score
        self.disc.train(True)
        m = min(64, len(self.real_y), len(y))
        i = torch.randint(len(self.real_y), (m,), generator=self.gen).to(self.device)
        j = torch.randint(len(y), (m,), generator=self.gen).to(self.device)
        logits = self.disc(torch.cat([self.real_in[i], fake[j]]), torch.cat([self.real_y[i], y[j]]))
        # one-sided label smoothing (real = 0.9): a discriminator that wins outright saturates and
        # scores every generated sample alike
        target = torch.cat([torch.full((m,), 0.9), torch.zeros(m)]).to(logits)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        self.disc_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.disc_opt.step()
        self.disc_loss = float(loss.detach())
        return score

    @torch.no_grad()
    def refresh(self) -> None:
        was_training = self.net.training
        self.net.train(False)
        feats, grads = [], []
        for i in range(0, len(self.y), 1000):
            x = to_input(self.x[i:i + 1000].to(self.device))
            h = self.net.embed(x)
            if self.kind == "feature_distance":
                feats.append(F.normalize(h, dim=1))
            else:
                y = F.one_hot(self.y[i:i + 1000].to(self.device), self.num_classes).to(h.dtype)
                err = self.net.head(h).softmax(1) - y
                grads.append(err.t() @ h)  # [C, H]: summed per-sample classifier gradients
        self.net.train(was_training)
        if self.kind == "feature_distance":
            self.ref = torch.cat(feats).mean(0)
        else:
            self.ref = torch.stack(grads).sum(0) / len(self.y)

    def __call__(self, feats: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
                 inputs: torch.Tensor | None = None, blurred: bool = False) -> np.ndarray:
        """The signal of each generated sample of a minibatch, float32 [n]; ``inputs`` are the
        model's inputs of those samples (``realism`` reads them), ``blurred``: already through the
        task model's input blur (``SmallCNN.blur``), which the judges then do not repeat."""
        t0 = time.perf_counter()
        if self.kind in ("realism", "reducible_loss") and inputs is None:
            raise ValueError(f"the {self.kind} signal needs the generated samples' inputs")
        if inputs is not None:  # both judges see the input through the task model's blur, once
            inputs = inputs.detach() if blurred else self._view(inputs.detach())
        if self.kind == "realism":
            out = self._realism(inputs, y).float().cpu().numpy()
        elif self.kind == "reducible_loss":
            with torch.no_grad():
                task = F.cross_entropy(logits.detach(), y, reduction="none")
                ref = F.cross_entropy(self.ref_net(inputs), y, reduction="none")  # it learnt on this view
            real = self._realism(inputs, y)
            # each judge as a percentile within the minibatch, averaged: both must agree
            out = ((_percentile(task - ref) + _percentile(real)) / 2).float().cpu().numpy()
        else:
            out = self._model_signal(feats, logits, y)
        self.time_s += time.perf_counter() - t0
        return out

    def summary(self) -> dict[str, float]:
        """Figures for metrics.jsonl: the signal's cost and, for ``realism``, the discriminator's loss
        (ln 2 ≈ 0.69 at chance; 0.16, the floor that label smoothing leaves, when it tells every
        sample apart)."""
        out = {"signal/time_s": round(self.time_s, 4)}
        if self.kind in ("realism", "reducible_loss") and self.disc_loss is not None:
            out["signal/disc_loss"] = round(self.disc_loss, 4)
        if self.kind == "reducible_loss":
            out["signal/ref_train_acc"] = round(self.ref_acc, 4)
        return out

    @torch.no_grad()
    def _model_signal(self, feats: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        if self.ref is None or (self.kind == "grad_alignment" and self.steps % self.every == 0):
            self.refresh()
        self.steps += 1
        feats, ref = feats.detach(), self.ref.to(feats.dtype)
        if self.kind == "feature_distance":
            out = (F.normalize(feats, dim=1) - ref).pow(2).sum(1)
        else:
            err = logits.detach().softmax(1) - F.one_hot(y, self.num_classes).to(logits.dtype)
            out = ((err @ ref) * feats).sum(1)
        return out.float().cpu().numpy()


# which way each signal points: +1 where a higher value means a more useful sample
DIRECTION = {"feature_distance": -1.0, "grad_alignment": 1.0, "realism": 1.0, "reducible_loss": 1.0}


def check_select(share: float, signal: str, policy: str) -> None:
    """``trainer.select``: a share in (0, 1], below 1 only for a policy with a signal. Checked at
    start-up against the policy's declared signal (controller.config.check), and by the trainer
    against the signal its controller names, for a trainer started on its own."""
    if not 0.0 < share <= 1.0:
        raise ConfigError(f"trainer.select={share}: expected a share in (0, 1]")
    if share < 1.0 and signal == "none":
        raise ConfigError(f"trainer.select={share} picks samples by the policy's signal, and policy={policy} has "
                          "none: use rho, realism, align or match")


def select(sig: np.ndarray, share: float, kind: str) -> np.ndarray:
    """Indices of the ``share`` of samples (at least one) that the signal rates most useful, in
    their original order; ties broken by position, so a constant signal keeps the first ones."""
    n = len(sig)
    k = max(1, min(n, int(round(share * n))))
    order = np.argsort(-DIRECTION[kind] * np.asarray(sig, dtype=np.float64), kind="stable")
    return np.sort(order[:k])


def _percentile(v: torch.Tensor) -> torch.Tensor:
    """Each value's rank within the tensor, scaled to [0, 1] (0.5 for a single value)."""
    if v.numel() < 2:
        return torch.full_like(v, 0.5, dtype=torch.float32)
    return v.argsort().argsort().float() / (v.numel() - 1)


class Reference(nn.Module):
    """``reducible_loss``'s reference: a classifier of the reward split alone, on a 14×14 view (three
    3×3 convs, one max-pooling). Half the resolution of the task model: at 28×28 and 8 channels the
    same judge cost 3.5 s to train and 4.5 ms per 128-image forward pass on 2 CPU cores, nearly
    all of it per-op overhead of tiny convolutions; at 14×14 it trains in about 1 s (warm),
    forwards in about 2 ms and reads the held-out real images as well (93.5% of 4,500 digits,
    77.2% of 1,500 garments; docs/experiments.md). Larger images are pooled to 14×14 too."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 8, hidden: int = 64):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.net = nn.Sequential(
            nn.AdaptiveAvgPool2d(14), *block(in_channels, width), *block(width, width), nn.MaxPool2d(2),
            *block(width, 2 * width), nn.Flatten(), nn.Linear(2 * width * 49, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_reference(view, x: torch.Tensor, y: torch.Tensor, num_classes: int, device: torch.device, seed: int,
                    steps: int = 200, batch: int = 64):
    """The reward split's reference classifier (``Reference``), in eval mode, and its accuracy on
    that split. ``view`` maps model inputs to what the judges see (the task model's input blur):
    the reference learns from that view and scores it. Shifts of up to 2 px, so it reads generated
    images by their shape rather than by their exact position; its own RNG."""
    channels = 1 if x.dim() == 3 else x.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 7919)
        ref = Reference(channels, num_classes).to(device)
        gen = torch.Generator().manual_seed(seed + 7919)
        with torch.no_grad():
            xin = view(to_input(x.to(device)))
        yd = y.to(device)
        opt = torch.optim.AdamW(ref.parameters(), lr=2e-3, weight_decay=1e-3)
        ref.train(True)
        for _ in range(steps):
            i = torch.randint(len(yd), (min(batch, len(yd)),), generator=gen).to(device)
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            xb = torch.roll(xin[i], shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(ref(xb), yd[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        ref.train(False)
        for p in ref.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            acc = float((ref(xin).argmax(1) == yd).float().mean())
    return ref, acc
