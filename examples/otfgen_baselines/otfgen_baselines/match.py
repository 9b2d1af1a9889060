"""Move the parameter distribution so generated data looks, to the current model, like real data.

In the spirit of Fast AutoAugment (Lim et al. 2019: choose augmentations whose data the model
sees as matching held-out real data) and Meta-Sim (Kar et al. 2019: tune a scene generator's
parameters by matching real-data feature distributions with an MMD). This is for the
data-constrained case: a small real set exists, and its *reward* split (never the split results
are reported on) gives the feature mean μ_real of the current model's penultimate layer. For
each generated sample the trainer reports d = ‖φ(x) − μ_real‖² (φ L2-normalised): averaged
over a region it is the linear-kernel MMD² between that region and the real set plus the
region's own spread. Regions with low distance get more probability, with Boltzmann weights on
the per-parameter normalised distance and an exploration floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otfgen.controller.policies import BinPolicy, PolicyArgs, RegionStats, args_from, boltzmann, timed


@dataclass(frozen=True)
class MatchArgs(PolicyArgs):
    warmup_requests: int = 8
    """requests observed before departing from uniform"""
    rate: float = 0.05
    """moving-average rate of a bin's mean feature distance"""
    temperature: float = 1.0
    """Boltzmann temperature on distances normalised by their spread across bins"""


class Match(BinPolicy):
    name = "match"
    signal = "feature_distance"  # the trainer computes each sample's distance to the real features

    def __init__(self, space, bins=8, options=None, seed=0):
        super().__init__(space, bins, options, seed)
        self.args = args_from(MatchArgs, self.options)
        steer = self.options.get("params") or [p.name for p in space if p.name != self.options.get("label_param", "label")]
        # the label is left uniform: matching per-class feature means would trade classes for realism
        self.stats = RegionStats(space, bins, list(steer), self.args.rate, self.args.rate)
        self.observed = 0

    def _dist(self, name: str) -> np.ndarray:
        k = self.stats.k[name]
        d = self.stats.fast[name]
        if self.observed < self.args.warmup_requests or np.all(np.isnan(d)):
            return np.full(k, 1.0 / k)
        d = np.where(np.isnan(d), np.nanmin(d), d)  # unseen bins: as good as the best (explore them)
        z = (d - d.min()) / (d.std() + 1e-9)
        return boltzmann(-z, self.args.temperature, self.args.floor)

    @timed
    def observe(self, action, params, losses, signal=None):
        if signal is None:
            return
        self.stats.update(params, signal)
        self.observed += 1


ARGS = MatchArgs
POLICY = Match
