"""Generate where generated data helps the real task: per-sample gradient alignment, per class × region.

The trainer reports, for every generated sample, how well its last-layer loss gradient agrees
with the mean gradient of the small real reward split (trainer/judges.py, ``grad_alignment``):
positive when a step on the sample would also lower the real loss. This signal sees the
sim-to-real gap that learning progress on generated data cannot: an inverted digit may be
hard (high loss, high progress) and still useless for real digits.

Regions are joint over the class and each other parameter: for class c and parameter p, one
moving average of the alignment per bin of p, so "thin strokes help 1s, thick strokes help 8s"
is representable (a factorised policy has one row per parameter for all classes). The action
draws the class from its own row, then each parameter's bin from the row of the sample's class
(``"p|label"`` actions, blender_gen/space.py). A row becomes probabilities by Boltzmann weights
on each cell's effect size — (cell mean − row mean) / the per-sample spread of the signal — and
an exploration floor; a cell never seen counts as the row's best, so it is tried. An effect
size, not a z-score across cells: z-scoring stretches pure noise between cells to unit spread,
so rows went sharp on noise (the first version, docs/experiments.md). The class itself is
drawn uniformly unless ``steer_label``: steering it let one class take 43% of the samples.
With ``joint=false`` the same method runs factorised (one row per parameter), for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otfgen.blender_gen.space import bin_index
from otfgen.controller.policies import ClassRegions, Policy, PolicyArgs, args_from, boltzmann, timed


@dataclass(frozen=True)
class AlignArgs(PolicyArgs):
    rate: float = 0.1
    """moving-average rate of a cell's mean alignment (per request that contains the cell)"""
    temperature: float = 0.2
    """Boltzmann temperature on a cell's effect size (its mean alignment minus the row's, in units
    of the per-sample standard deviation of the alignment)"""
    floor: float = 0.2
    """probability mass spread uniformly over bins (exploration floor); lower than the per-parameter
    policies' because every parameter's floor lands partly on useless extremes, and those multiply"""
    warmup_requests: int = 8
    """requests observed before departing from uniform"""
    joint: bool = True
    """cells per (class, parameter bin); false: per parameter bin only"""
    steer_label: bool = False
    """also steer the class distribution (else uniform over classes)"""
    model: str = "average"
    """how a cell's value is estimated: "average" (one moving average per cell, alone) or
    "additive" (per class, a ridge regression of the signal on every parameter's bins at once,
    so each parameter's effect is measured with the others' explained away)"""
    forget: float = 0.05
    """additive model: the weight of older requests shrinks by this share per request"""
    ridge: float = 4.0
    """additive model: ridge penalty, in samples' worth of evidence per coefficient"""


class Align(Policy):
    name = "align"
    signal = "grad_alignment"
    args_class = AlignArgs

    def __init__(self, space, bins=8, options=None, seed=0):
        super().__init__(space, bins, options, seed)
        self.args = args_from(self.args_class, self.options)
        self.regions = ClassRegions(space, self.options, bins)
        self.label, self.n_cls, self.names, self.k = (self.regions.label, self.regions.n_cls, self.regions.names,
                                                      self.regions.k)
        rows = self.n_cls if self.args.joint else 1
        self.avg = {n: np.full((rows, self.k[n]), np.nan) for n in self.names}
        self.cls_avg = np.full(self.n_cls, np.nan)
        self.var = None  # moving average of the per-sample variance of the signal
        self.observed = 0
        if self.args.model not in ("average", "additive"):
            raise ValueError(f"policy.options.model={self.args.model!r}: expected 'average' or 'additive'")
        if self.args.model == "additive":
            # one design column per (parameter, bin) plus an intercept; per class (one row when not joint)
            self.offsets = np.cumsum([1] + [self.k[n] for n in self.names])
            d = int(self.offsets[-1])
            self.xtx = np.zeros((rows, d, d))
            self.xty = np.zeros((rows, d))
            self.yty = np.zeros(rows)
            self.cnt = np.zeros(rows)
            self._fit_at, self._fitted = None, None  # the fit of the last observation, reused by act()

    @timed
    def observe(self, action, params, losses, signal=None):
        if signal is None:
            return
        s = np.asarray(signal, np.float64)
        v = float(s.var())
        self.var = v if self.var is None else self.var + self.args.rate * (v - self.var)
        c = self.regions.class_index(params)
        self._update(self.cls_avg[None, :], c, s, self.n_cls)
        if self.args.model == "additive":
            self._fit(params, c, s)
            self.observed += 1
            return
        for n in self.names:
            b = bin_index(self.space[n], params[n], self.k[n])
            rows = self.avg[n].shape[0]
            cell = (c if rows > 1 else 0) * self.k[n] + b
            self._update(self.avg[n], cell, s, rows * self.k[n])
        self.observed += 1

    def _update(self, table: np.ndarray, cell: np.ndarray, values: np.ndarray, size: int) -> None:
        flat = table.reshape(-1)
        cnt = np.bincount(cell, minlength=size)
        seen = cnt > 0
        mean = np.bincount(cell, weights=values, minlength=size)[seen] / cnt[seen]
        cur = flat[seen]
        flat[seen] = np.where(np.isnan(cur), mean, cur + self.args.rate * (mean - cur))

    def _fit(self, params, c: np.ndarray, s: np.ndarray) -> None:
        x = np.zeros((len(s), int(self.offsets[-1])))
        x[:, 0] = 1.0
        for j, n in enumerate(self.names):
            x[np.arange(len(s)), self.offsets[j] + bin_index(self.space[n], params[n], self.k[n])] = 1.0
        keep = 1.0 - self.args.forget
        self.xtx *= keep
        self.xty *= keep
        self.yty *= keep
        self.cnt *= keep
        rows = c if self.xtx.shape[0] > 1 else np.zeros_like(c)
        for r in np.unique(rows):
            m = rows == r
            self.xtx[r] += x[m].T @ x[m]
            self.xty[r] += x[m].T @ s[m]
            self.yty[r] += s[m] @ s[m]
            self.cnt[r] += m.sum()

    def _additive_effects(self) -> tuple[np.ndarray, float]:
        """Per row the ridge coefficients [rows, d], and the residual std of the signal around the fit
        (pooled over rows): the noise an effect is measured against. Refitted once per observation."""
        if self._fit_at == self.observed:
            return self._fitted
        d = self.xtx.shape[1]
        pen = self.args.ridge * np.eye(d)
        pen[0, 0] = 1e-6  # the intercept is not shrunk
        beta = np.stack([np.linalg.solve(a + pen, b) for a, b in zip(self.xtx, self.xty)])
        # residual sum of squares of the fit, Σ(s − xβ)² = sᵀs − 2βᵀXᵀs + βᵀXᵀXβ
        rss = self.yty - 2 * np.einsum("rd,rd->r", beta, self.xty) + np.einsum("rd,rde,re->r", beta, self.xtx, beta)
        resid = float(max(rss.sum(), 0.0) / max(self.cnt.sum(), 1.0))
        self._fit_at, self._fitted = self.observed, (beta, np.sqrt(resid) + 1e-12)
        return self._fitted

    def _row_probs(self, row: np.ndarray) -> np.ndarray:
        if np.all(np.isnan(row)):
            return np.full(row.size, 1.0 / row.size)
        r = np.where(np.isnan(row), np.nanmax(row), row)  # unseen: as good as the best, so it is tried
        effect = (r - r.mean()) / (np.sqrt(self.var or 0.0) + 1e-12)
        return boltzmann(effect, self.args.temperature, self.args.floor)

    @timed
    def act(self):
        if self.observed < self.args.warmup_requests:
            return {}
        # 4 decimals: the action is the parameter log's record of the request (replay samples from
        # exactly these weights), and a joint action has a row per class for every parameter
        action = {self.label: _rounded(self._row_probs(self.cls_avg))} if self.args.steer_label else {}
        for n in self.names:
            rows = [_rounded(p) for p in self.joint_probs(n)]
            if len(rows) > 1:
                action[f"{n}|{self.label}"] = rows
            else:
                action[n] = rows[0]
        return action

    def probs(self):
        """Per parameter: the class-averaged distribution over bins (what the plots show); the class
        row is what is drawn, uniform unless ``steer_label``."""
        k = self.cls_avg.size
        out = {self.label: self._row_probs(self.cls_avg) if self.args.steer_label else np.full(k, 1.0 / k)}
        for n in self.names:
            out[n] = self.joint_probs(n).mean(0)
        return out

    def joint_probs(self, name: str) -> np.ndarray:
        """[classes, bins] of one parameter (one row when not joint)."""
        if self.args.model == "additive":
            if self.observed < self.args.warmup_requests:
                return np.full((self.xtx.shape[0], self.k[name]), 1.0 / self.k[name])
            beta, sd = self._additive_effects()
            j = self.names.index(name)
            eff = beta[:, self.offsets[j]:self.offsets[j + 1]]
            eff = (eff - eff.mean(1, keepdims=True)) / sd
            return np.stack([boltzmann(e, self.args.temperature, self.args.floor) for e in eff])
        return np.stack([self._row_probs(r) for r in self.avg[name]])


def _rounded(p: np.ndarray) -> list[float]:
    return [round(float(x), 4) for x in p]


ARGS = AlignArgs
POLICY = Align
