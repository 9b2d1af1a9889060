"""What the trainer measures for a policy, per generated sample, against the real reward split.

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

The reference (μ_real or G) is recomputed from the reward split every ``every`` steps, in eval
mode, so the signal tracks the current model at a bounded cost.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trainer.models import to_input


class RealSignal:
    def __init__(self, kind: str, net, reward_x: np.ndarray, reward_y: np.ndarray, device: torch.device,
                 num_classes: int, every: int = 50):
        if kind not in ("feature_distance", "grad_alignment"):
            raise ValueError(f"unknown signal '{kind}'")
        self.kind, self.net, self.device, self.num_classes, self.every = kind, net, device, num_classes, max(1, every)
        self.x = torch.from_numpy(reward_x)
        self.y = torch.from_numpy(reward_y.astype(np.int64))
        self.ref: torch.Tensor | None = None
        self.steps = 0

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

    @torch.no_grad()
    def __call__(self, feats: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """The signal of each generated sample of a minibatch, float32 [n]."""
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
