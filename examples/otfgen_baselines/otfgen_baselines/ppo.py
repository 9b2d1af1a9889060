"""An AutoAugment-style controller trained online with PPO.

AutoAugment (Cubuk et al. 2019) trains a controller network that emits sub-policies
(operations with magnitudes) and rewards it with a child model's accuracy — over 5,000 GPU
hours of outer-loop training. Here the same idea runs online, inside one training run: a
small network reads the state (per-class accuracy on the reward split, per-bin loss averages,
progress) and emits a sub-policy — one bin per parameter, i.e. a region of the scene space —
used for the next ``window`` requests. Its reward is the learning progress of the regions it
chose (``RegionStats.progress``: how fast their loss falls), and it is updated with PPO's
clipped objective (Schulman et al. 2017), written after CleanRL's ppo.py. Each decision is a one-step episode
(a contextual bandit), so the advantage is reward − V(state).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from otfgen.controller.policies import Policy, PolicyArgs, RegionStats, args_from, timed, with_floor


@dataclass(frozen=True)
class PPOArgs(PolicyArgs):
    window: int = 4
    """requests generated from one sub-policy before the next decision"""
    rollout: int = 16
    """decisions with rewards collected per PPO update"""
    epochs: int = 4
    """optimisation passes over a rollout"""
    lr: float = 3e-3
    """Adam learning rate of the controller network"""
    clip: float = 0.2
    """PPO ratio clip ε"""
    ent_coef: float = 0.01
    """entropy bonus: keeps the controller exploring"""
    vf_coef: float = 0.5
    """value-loss weight"""
    hidden: int = 64
    """controller MLP width"""
    floor: float = 0.85
    """share of each request's probability spread uniformly over bins (exploration floor); high,
    because a sub-policy puts its remaining mass on one bin of every parameter at once"""
    fast: float = 0.3
    """fast moving-average rate of the per-bin loss"""
    slow: float = 0.03
    """slow moving-average rate"""
    reward_scale: float = 1.0
    """rewards are progress normalised by its running mean magnitude, times this"""


class PolicyNet(nn.Module):
    """The controller network: state -> one categorical head per steered parameter, and a value."""

    def __init__(self, state_dim: int, head_sizes: list[int], hidden: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(state_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.logits = nn.Linear(hidden, sum(head_sizes))
        self.value = nn.Linear(hidden, 1)
        self.head_sizes = head_sizes
        nn.init.zeros_(self.logits.weight)  # start uniform over bins
        nn.init.zeros_(self.logits.bias)

    def dists(self, state: torch.Tensor):
        h = self.body(state)
        heads = torch.split(self.logits(h), self.head_sizes, dim=-1)
        return [torch.distributions.Categorical(logits=x) for x in heads], self.value(h).squeeze(-1)


class PPO(Policy):
    name = "ppo"

    def __init__(self, space, bins=8, options=None, seed=0):
        super().__init__(space, bins, options, seed)
        self.args = args_from(PPOArgs, self.options)
        a = self.args
        self.names = list(self.options.get("params") or [p.name for p in space])
        self.stats = RegionStats(space, bins, self.names, a.fast, a.slow)
        self.num_classes = int(self.options.get("num_classes", 10))
        self.budget_requests = max(1, int(self.options.get("budget_requests", 1000)))
        self.heads = [self.stats.k[n] for n in self.names]
        state_dim = self.num_classes + sum(self.heads) + 1
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.net = PolicyNet(state_dim, self.heads, a.hidden)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=a.lr)
        self.class_acc = np.zeros(self.num_classes, dtype=np.float32)
        self.requests = 0
        self.current: dict | None = None  # the sub-policy in use: decision record
        self.left = 0
        self.pending: dict[int, dict] = {}  # decision id -> record awaiting its requests' losses
        self.ready: deque[dict] = deque()
        self.decisions = 0
        self.lp_scale = 1e-3
        self.updates = 0
        self.last_loss = {}

    def _state(self) -> torch.Tensor:
        loss = [np.nan_to_num(self.stats.fast[n], nan=0.0) for n in self.names]
        loss = np.concatenate(loss) if loss else np.zeros(0)
        loss = loss / (np.abs(loss).mean() + 1e-9)
        prog = np.array([min(1.0, self.requests / self.budget_requests)])
        return torch.as_tensor(np.concatenate([self.class_acc, loss, prog]), dtype=torch.float32)

    def _decide(self) -> None:
        state = self._state()
        with torch.no_grad():
            dists, value = self.net.dists(state)
            choice = [torch.multinomial(d.probs, 1, generator=self.gen)[0] for d in dists]
            logp = sum(d.log_prob(c) for d, c in zip(dists, choice))
        rec = {"id": self.decisions, "state": state, "choice": torch.stack(choice), "logp": logp, "value": value,
               "requests": self.args.window, "lp": []}
        self.decisions += 1
        self.pending[rec["id"]] = rec
        self.current, self.left = rec, self.args.window

    @timed
    def act(self):
        if self.left <= 0:
            self._decide()
        self.left -= 1
        self.requests += 1
        rec = self.current
        action: dict = {"_decision": rec["id"]}  # metadata: ignored by the sampler, kept in the log
        for n, k, c in zip(self.names, self.heads, rec["choice"].tolist()):
            onehot = np.zeros(k)
            onehot[c] = 1.0
            action[n] = with_floor(onehot, self.args.floor).tolist()
        return action

    @timed
    def observe(self, action, params, losses, signal=None):
        self.stats.update(params, losses)
        did = action.get("_decision")
        rec = self.pending.get(did)
        if rec is None:
            return
        # reward: progress of the bins this sub-policy chose, normalised by its running magnitude
        lp = float(np.mean([self.stats.progress(n)[c] for n, c in zip(self.names, rec["choice"].tolist())]))
        self.lp_scale = 0.95 * self.lp_scale + 0.05 * abs(lp)
        rec["lp"].append(lp / (self.lp_scale + 1e-9))
        if len(rec["lp"]) >= rec["requests"]:
            rec["reward"] = self.args.reward_scale * float(np.mean(rec["lp"]))
            self.ready.append(self.pending.pop(did))
            if len(self.ready) >= self.args.rollout:
                self._update()

    def _update(self) -> None:
        a = self.args
        batch = [self.ready.popleft() for _ in range(a.rollout)]
        states = torch.stack([r["state"] for r in batch])
        choices = torch.stack([r["choice"] for r in batch])
        old_logp = torch.stack([r["logp"] for r in batch])
        rewards = torch.tensor([r["reward"] for r in batch], dtype=torch.float32)
        values = torch.stack([r["value"] for r in batch])
        advantages = rewards - values  # one-step episodes: return = reward
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        for _ in range(a.epochs):
            dists, new_values = self.net.dists(states)
            new_logp = sum(d.log_prob(choices[:, i]) for i, d in enumerate(dists))
            entropy = sum(d.entropy() for d in dists).mean()
            ratio = (new_logp - old_logp).exp()
            pg_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - a.clip, 1 + a.clip)).mean()
            v_loss = 0.5 * ((new_values - rewards) ** 2).mean()
            loss = pg_loss - a.ent_coef * entropy + a.vf_coef * v_loss
            self.opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.net.parameters(), 0.5)
            self.opt.step()
        self.updates += 1
        self.last_loss = {"policy/pg_loss": pg_loss.item(), "policy/v_loss": v_loss.item(),
                          "policy/entropy": entropy.item(), "policy/reward": rewards.mean().item()}

    @timed
    def observe_validation(self, metrics):
        acc = metrics.get("reward/acc_class") or metrics.get("val/acc_class")
        if acc and len(acc) == self.num_classes:
            self.class_acc = np.array([0.0 if a is None else a for a in acc], dtype=np.float32)

    def probs(self):
        with torch.no_grad():
            dists, _ = self.net.dists(self._state())
        return {n: with_floor(d.probs.numpy(), self.args.floor) for n, d in zip(self.names, dists)}

    def summary(self):
        return {**super().summary(), **self.last_loss, "policy/updates": self.updates}


ARGS = PPOArgs
POLICY = PPO
