"""Generate what is learnable, worth learning and not yet learnt: reducible loss, by elite rate per class × bin.

The signal (trainer/judges.py, ``reducible_loss``) is each generated sample's loss under the
task model minus its loss under a small reference model trained once on the real reward split
(RHO-LOSS, Mindermann et al. 2022). It is high where the task model is still wrong about a
sample that a model of real data reads as its class; an inverted, occluded or upside-down digit
scores low (no model of real digits reads it), and so does a digit the task model has already
learnt. So the stream starts on the real-looking part of the space and moves on as it is learnt.

The region model cuts whole regions rather than down-weighting them:

- **elite, by rank**: in each delivered request, per class, the top ``elite`` share of samples
  by the signal is elite. Ranks, not the raw value: one distractor's verdict (an inverted image)
  is so large that any average of raw values is mostly that parameter (``realism``'s first try,
  docs/experiments.md); ranks within one request also ignore the drift of the signal as the
  model learns.
- **elite rate per class × parameter bin**: the share of a bin's samples that were elite, with
  forgetting, shrunk toward that bin's rate over all classes, and that toward the elite share
  itself, by positive-part James–Stein shrinkage against the binomial noise of its counts: a
  class departs from the pooled rate only as far as its own evidence carries it (joint regions
  such as "thick strokes for 0s, thin for 1s" stay expressible), and noise moves nothing.
- **weights**: each class row ∝ (rate / elite share) ^ ``sharpness``, eased in at ``rate`` per
  request. A function of the current evidence, not a product of every past step: the
  cross-entropy method's compounding update (the first version of this policy) let pure noise
  drive a bin to 4× its share in 120 requests, and turned digits of a class upside down on a
  signal that had no opinion on their orientation.
- **exploration at the level of whole samples**: a ``prior_share`` of requests is drawn from the
  prior (every parameter uniform) rather than a floor on every parameter's every bin, whose
  leaks multiply across ~18 parameters; a small per-bin ``floor`` stays in the steered ones.

Steering and exploration leave part of the stream in useless regions (the prior requests, the
floors, bins not yet cut). ``trainer.select`` keeps those samples out of the gradient: the
trainer trains on the share of each minibatch the same signal rates highest (RHO-LOSS's online
batch selection), while this policy still observes every sample. The two together did far more
than either alone (docs/experiments.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otfgen.blender_gen.space import bin_index
from otfgen.controller.policies import ClassRegions, Policy, PolicyArgs, args_from, timed, with_floor


@dataclass(frozen=True)
class RhoArgs(PolicyArgs):
    elite: float = 0.25
    """share of each request's samples of a class that count as elite (by their signal's rank)"""
    sharpness: float = 8.0
    """exponent on a bin's elite rate over the elite share: 8 gives a bin at 1.5× the share 26× the
    weight of an average one, and a bin that never holds an elite none beyond the floor; chosen on
    the reward split, not the report (mnist2d_wide, seed 0: 2 → 21%, 4 → 57%, 8 → 76%,
    docs/experiments.md)"""
    rate: float = 0.1
    """share of the weights moved toward the current evidence's per request"""
    forget: float = 0.05
    """elite-rate estimates: the weight of older requests shrinks by this share per request"""
    prior_share: float = 0.1
    """share of requests drawn from the prior over the whole space (exploration of whole samples)"""
    floor: float = 0.05
    """probability mass spread uniformly over the bins of each parameter in steered requests"""
    warmup_requests: int = 8
    """requests observed before departing from uniform"""


class Rho(Policy):
    name = "rho"
    signal = "reducible_loss"
    args_class = RhoArgs

    def __init__(self, space, bins=16, options=None, seed=0):
        super().__init__(space, bins, options, seed)
        self.args = args_from(self.args_class, self.options)
        a = self.args
        if not 0.0 < a.elite < 1.0:
            raise ValueError(f"policy.options.elite={a.elite}: expected a share in (0, 1)")
        if not 0.0 <= a.prior_share < 1.0:
            raise ValueError(f"policy.options.prior_share={a.prior_share}: expected a share in [0, 1)")
        if not (0.0 < a.rate <= 1.0 and 0.0 <= a.forget < 1.0 and 0.0 <= a.floor <= 1.0 and a.sharpness >= 0.0):
            raise ValueError("policy.options: need 0 < rate <= 1, 0 <= forget < 1, 0 <= floor <= 1, sharpness >= 0")
        self.regions = ClassRegions(space, self.options, bins)
        self.label, self.n_cls, self.names, self.k = (self.regions.label, self.regions.n_cls, self.regions.names,
                                                      self.regions.k)
        self.q = {n: np.full((self.n_cls, self.k[n]), 1.0 / self.k[n]) for n in self.names}
        self.count = {n: np.zeros((self.n_cls, self.k[n])) for n in self.names}
        self.elites = {n: np.zeros((self.n_cls, self.k[n])) for n in self.names}
        self.observed = 0
        self.rng = np.random.default_rng(seed)

    def _elite_mask(self, c: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Per class present, its top ``elite`` share by signal (at least one when it has two samples)."""
        elite = np.zeros(len(s), dtype=bool)
        for cls in np.unique(c):
            idx = np.flatnonzero(c == cls)
            if idx.size < 2:
                continue
            top = max(1, int(round(self.args.elite * idx.size)))
            elite[idx[np.argsort(-s[idx], kind="stable")[:top]]] = True
        return elite

    def _shrunk(self, elites: np.ndarray, count: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """Elite rates pulled toward ``centre`` by positive-part James–Stein shrinkage of each row
        (one parameter's bins) against the binomial noise of its counts: a row whose deviations are
        within what noise gives keeps about 2/K of them, a clear effect keeps nearly all. Per row,
        not per bin: bin by bin, the shrinkage left enough noise that the exponent turned pure noise
        into bins at 3× their share (tests/test_rho.py)."""
        e = self.args.elite
        raw = np.where(count > 0, elites / np.maximum(count, 1e-12), centre)
        d = raw - centre
        z2 = (d * d / (e * (1.0 - e) / np.maximum(count, 1.0))).sum(-1, keepdims=True)  # Σ (d / se)²
        k = d.shape[-1]
        return centre + np.clip(1.0 - max(k - 2, 1) / np.maximum(z2, 1e-12), 0.0, 1.0) * d

    @timed
    def observe(self, action, params, losses, signal=None):
        if signal is None:
            return
        a = self.args
        s = np.asarray(signal, np.float64)
        c = self.regions.class_index(params)
        e = self._elite_mask(c, s).astype(np.float64)
        keep = 1.0 - a.forget
        for n in self.names:
            k = self.k[n]
            cell = c * k + bin_index(self.space[n], params[n], k)
            cnt, eli = self.count[n], self.elites[n]
            cnt *= keep
            eli *= keep
            cnt += np.bincount(cell, minlength=self.n_cls * k).reshape(self.n_cls, k)
            eli += np.bincount(cell, weights=e, minlength=self.n_cls * k).reshape(self.n_cls, k)
            pooled = self._shrunk(eli.sum(0), cnt.sum(0), np.full(k, a.elite))
            rate = self._shrunk(eli, cnt, pooled[None, :])
            target = (rate / a.elite) ** a.sharpness + 1e-12
            target /= target.sum(1, keepdims=True)
            self.q[n] = (1.0 - a.rate) * self.q[n] + a.rate * target
        self.observed += 1

    @timed
    def act(self):
        if self.observed < self.args.warmup_requests or self.rng.random() < self.args.prior_share:
            return {}
        # 4 decimals: the action is the parameter log's record of the request (replay draws from
        # exactly these weights); one row per class for every parameter
        return {f"{n}|{self.label}": np.round(self.joint_probs(n), 4).tolist() for n in self.names}

    def probs(self):
        """Per parameter the distribution a sample is drawn from, averaged over classes and over
        prior and steered requests (what the plots show); classes are drawn uniformly."""
        out = {self.label: np.full(self.n_cls, 1.0 / self.n_cls)}
        if self.observed < self.args.warmup_requests:
            return out | {n: np.full(self.k[n], 1.0 / self.k[n]) for n in self.names}
        ps = self.args.prior_share
        for n in self.names:
            out[n] = (1.0 - ps) * self.joint_probs(n).mean(0) + ps / self.k[n]
        return out

    def joint_probs(self, name: str) -> np.ndarray:
        """[classes, bins] of one parameter in a steered request."""
        return with_floor(self.q[name], self.args.floor)


ARGS = RhoArgs
POLICY = Rho
