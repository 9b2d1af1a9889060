"""A non-stationary bandit over parameter regions, driven by learning progress.

Teacher–student curriculum learning (Matiisen et al., "Teacher-Student Curriculum Learning",
2017): the teacher samples the tasks on which the student's score changes fastest, using the
absolute slope so that forgetting is revisited too. Here a "task" is a bin of one parameter
(factorised: one bandit per parameter), the score is the loss of the current model on fresh
samples from that bin, and the slope is the gap between a slow and a fast moving average.
Arms are drawn with Boltzmann weights over normalised progress, mixed with a uniform
exploration floor as in EXP3 (Auer et al. 2002), so every bin keeps ≥ floor/K probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otfgen.controller.policies import BinPolicy, PolicyArgs, RegionStats, args_from, boltzmann, timed


@dataclass(frozen=True)
class BanditArgs(PolicyArgs):
    warmup_requests: int = 8
    """requests observed before departing from uniform"""
    fast: float = 0.3
    """rate of the fast moving average of a bin's loss (per request that contains the bin)"""
    slow: float = 0.03
    """rate of the slow moving average"""
    temperature: float = 1.0
    """Boltzmann temperature on progress normalised by its mean magnitude across bins"""


class Bandit(BinPolicy):
    name = "bandit"

    def __init__(self, space, bins=8, options=None, seed=0):
        super().__init__(space, bins, options, seed)
        self.args = args_from(BanditArgs, self.options)
        steer = self.options.get("params") or [p.name for p in space]
        self.stats = RegionStats(space, bins, list(steer), self.args.fast, self.args.slow)
        self.observed = 0

    def _dist(self, name: str) -> np.ndarray:
        k = self.stats.k[name]
        if self.observed < self.args.warmup_requests:
            return np.full(k, 1.0 / k)
        lp = np.abs(self.stats.progress(name))
        return boltzmann(lp / (lp.mean() + 1e-12), self.args.temperature, self.args.floor)

    @timed
    def observe(self, action, params, losses, signal=None):
        self.stats.update(params, losses)
        self.observed += 1


ARGS = BanditArgs
POLICY = Bandit
