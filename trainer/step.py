"""One training step, shared by the trainer and the benchmark scripts: model, loss, optimiser.

AdamW with a one-cycle schedule (15% warm-up) and per-sample cross-entropy. The per-sample
losses are returned because the policies learn from them; a caller that changes the loss (the
sim2real script's mixup or trimming) computes its own per-sample losses with ``loss`` and hands
them to ``update``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pick_device(name: str) -> torch.device:
    """``auto`` is CUDA when there is one, else the CPU; an explicit device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name}: CUDA is not available on this machine (use auto or cpu)")
    return dev


class TrainStep:
    def __init__(self, model: nn.Module, total_steps: int, lr: float = 3e-3, weight_decay: float = 1e-4,
                 pct_start: float = 0.15, label_smoothing: float = 0.0):
        self.model = model
        self.total_steps = max(1, total_steps)
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=lr, total_steps=self.total_steps,
                                                         pct_start=pct_start)
        self.label_smoothing = label_smoothing
        self.steps = 0

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample cross-entropy [B]."""
        return F.cross_entropy(logits, y, reduction="none", label_smoothing=self.label_smoothing)

    def update(self, losses: torch.Tensor) -> float:
        """Mean of the per-sample losses, backward, optimiser and schedule step; the mean."""
        loss = losses.mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        # the schedule ends at total_steps; a stream may run a step or two longer than planned
        if self.sched.last_epoch + 1 < self.total_steps:
            self.sched.step()
        self.steps += 1
        return loss.item()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Train on (x, y) once; the per-sample losses measured before the update, detached."""
        losses = self.loss(self.model(x), y)
        self.update(losses)
        return losses.detach()
