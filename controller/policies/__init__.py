"""Policies decide what to generate next. One module each, one interface, chosen by ``policy=<name>``.

Built in: ``uniform`` (every parameter uniform over its range: the baseline) and ``rho`` (the
recommended policy, with ``trainer.select=0.25``). Installed packages add more through the
``otfgen.policies`` entry points (docs/extending.md); the policies that were measured and showed
no gain, or were beaten by ``rho`` (``bandit``, ``ppo``, ``match``, ``align``, ``realism``),
are such a package, ``examples/otfgen_baselines``. What a policy gets to work with, and what
``rho`` does with it:

- **action**: per parameter of the family's space, weights over equal-width bins of its range
  (or over its choices; an int range of at most 32 values gets one bin per value), optionally
  one row of weights per class (``"param|label"``: joint regions such as "thin strokes for 1s,
  thick for 8s"); parameters left out are drawn uniformly. ``ParamSpace.sample`` does the
  drawing, so every family, 2D or 3D, gets every policy for free. ``rho`` steers 16 bins per
  parameter and one row per class.
- **signal**: besides each generated sample's training loss (measured before the step that
  trains on it), what the trainer judges each sample by against the small real *reward* split
  (``Policy.signal``; the menu is ``protocol.SIGNALS``, otfgen.trainer.judges computes them).
  ``rho``'s, ``reducible_loss``, is two judges as ranks within the minibatch, averaged: the
  reducible loss (the task model's loss minus that of a reference model trained once on the
  reward split: learnable, worth learning, not yet learnt — RHO-LOSS) and a discriminator
  trained online to tell the reward split from generated images. A signal measured against
  real data is what sees the sim-to-real gap; the loss on generated data alone cannot (an
  inverted digit is hard, and useless for real digits). Validation adds per-class accuracy on
  the reward split.
- **weights**: ``rho`` ranks each request's samples per class by the signal and keeps, per
  class × parameter bin, the share of its samples in the top quarter, with forgetting, shrunk
  toward the pooled rate against binomial noise; a row's weights are that rate (over the
  elite share) raised to a power, so whole regions are cut rather than down-weighted.
- **exploration floor**: a learning policy keeps one in every action (``PolicyArgs.floor``,
  applied by ``with_floor``: at least ``floor / K`` on each of K bins), so it cannot collapse
  onto a region; ``rho`` also draws a share of whole requests from the prior.
- **schedule**: policies observe every delivered request's samples (one message per 256) and
  every validation, and act once per request.
"""

from __future__ import annotations

import functools
import importlib
import time
from dataclasses import dataclass, fields
from typing import Any, List, Mapping, Optional

import numpy as np

from otfgen.blender_gen import protocol
from otfgen.configs import plugins
from otfgen.blender_gen.space import Param, ParamSpace, bin_index

NAMES = ("uniform", "rho")  # built in; more come from entry points (examples/otfgen_baselines has five)
ENTRY_POINTS = "otfgen.policies"  # name -> a module with POLICY (and ARGS), as the built-in ones


def external() -> dict:
    """Entry points of group ``otfgen.policies`` by name (a built-in name always wins)."""
    return plugins.installed(ENTRY_POINTS, frozenset(NAMES))


def names() -> tuple[str, ...]:
    """Every policy ``policy=NAME`` accepts: the built-in ones, then installed ones by name."""
    return NAMES + tuple(sorted(external()))


def n_bins(p: Param, bins: int) -> int:
    """Choices and small int ranges (≤ 32 values, e.g. a class label) get one bin per value."""
    return p.n_options if p.kind == "choice" or (p.kind == "int" and p.n_options <= max(bins, 32)) else bins


class ClassRegions:
    """What a policy with one row of bin weights per class needs to know of the space: the label
    parameter, its number of classes, the other steered parameters and their bin counts."""

    def __init__(self, space: ParamSpace, options: Mapping[str, Any], bins: int):
        self.label = options.get("label_param", "label")
        self.n_cls = space[self.label].n_options
        self.names = [n for n in (options.get("params") or [p.name for p in space]) if n != self.label]
        self.k = {n: n_bins(space[n], bins) for n in self.names}
        self._low = int(space[self.label].low) if space[self.label].kind == "int" else 0

    def class_index(self, params: Mapping[str, np.ndarray]) -> np.ndarray:
        """Each sample's row: its label value counted from 0."""
        return np.asarray(params[self.label], np.int64) - self._low


class RegionStats:
    """Per (parameter, bin) moving averages of a per-sample signal at a fast and a slow rate."""

    def __init__(self, space: ParamSpace, bins: int, names: list[str], fast: float, slow: float):
        self.space, self.names, self.fast_rate, self.slow_rate = space, names, fast, slow
        self.k = {n: n_bins(space[n], bins) for n in names}
        self.fast = {n: np.full(self.k[n], np.nan) for n in names}
        self.slow = {n: np.full(self.k[n], np.nan) for n in names}
        self.count = {n: np.zeros(self.k[n], dtype=np.int64) for n in names}

    def update(self, params: Mapping[str, np.ndarray], values: np.ndarray) -> None:
        for n in self.names:
            b = bin_index(self.space[n], params[n], self.k[n])
            cnt = np.bincount(b, minlength=self.k[n])
            seen = cnt > 0
            mean = np.bincount(b, weights=values, minlength=self.k[n])[seen] / cnt[seen]
            for avg, rate in ((self.fast[n], self.fast_rate), (self.slow[n], self.slow_rate)):
                cur = avg[seen]
                avg[seen] = np.where(np.isnan(cur), mean, cur + rate * (mean - cur))
            self.count[n] += cnt

    def progress(self, n: str) -> np.ndarray:
        """slow − fast: positive while the region's signal is falling; 0 where never seen."""
        return np.nan_to_num(self.slow[n] - self.fast[n], nan=0.0)


def boltzmann(score: np.ndarray, temperature: float, floor: float) -> np.ndarray:
    """exp(score / T) normalised, mixed with the exploration floor (higher score, more weight)."""
    w = np.exp((score - score.max()) / temperature)
    return with_floor(w, floor)


def with_floor(probs: np.ndarray, floor: float) -> np.ndarray:
    """Mix with the uniform distribution: each of K bins keeps at least floor / K (along the last
    axis, so a [classes, K] table is mixed row by row)."""
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(-1, keepdims=True)
    return (1.0 - floor) * probs + floor / probs.shape[-1]


class Policy:
    """The interface. Subclasses override what they use; the defaults do nothing."""

    name = "base"
    # what the trainer must compute per generated sample against the real reward split, besides
    # its loss: one of protocol.SIGNALS (otfgen.trainer.judges says what each measures)
    signal = "none"

    def __init__(self, space: ParamSpace, bins: int = 8, options: Mapping[str, Any] | None = None, seed: int = 0):
        self.space, self.bins, self.options, self.seed = space, bins, dict(options or {}), seed
        self.time_s = 0.0  # wall time spent inside the policy: its cost, reported as policy/time_s

    def act(self) -> dict[str, list[float]]:
        """The action for the next request (JSON-able: it is written to the parameter log)."""
        return {}

    def observe(self, action: Mapping[str, Any], params: Mapping[str, np.ndarray], losses: np.ndarray,
                signal: np.ndarray | None = None) -> None:
        """Per-sample training losses (and, if the policy asks for one, each sample's ``signal`` against
        the real reward split) of one delivered request, with the action and params that made it."""

    def observe_validation(self, metrics: Mapping[str, Any]) -> None:
        """Validation metrics from the trainer (``val/acc``, ``reward/acc_class`` …)."""

    def probs(self) -> dict[str, list[float]]:
        """The current distribution over bins per steered parameter (for plots)."""
        return {}

    def summary(self) -> dict[str, Any]:
        """Namespaced figures for metrics.jsonl (``policy/...``)."""
        out: dict[str, Any] = {"policy/time_s": round(self.time_s, 4)}
        probs = self.probs()
        if probs:
            out["policy/probs"] = {k: [round(float(x), 4) for x in v] for k, v in probs.items()}
        return out



@dataclass(frozen=True)
class PolicyArgs:
    """What every learning policy takes: which parameters it steers and its exploration floor."""

    params: Optional[List[str]] = None
    """parameters to steer (default: every parameter of the scene)"""
    floor: float = 0.5
    """probability mass spread uniformly over bins (exploration floor)"""


CONTEXT_KEYS = ("params", "num_classes", "budget_requests", "label_param")  # options the controller itself supplies


def args_from(cls, options: Mapping[str, Any], extra: tuple[str, ...] = CONTEXT_KEYS):
    """A hyper-parameter dataclass from ``policy.options``; an unknown key fails with its name."""
    known = {f.name for f in fields(cls)}
    unknown = set(options) - known - set(extra)
    if unknown:
        raise ValueError(f"policy.options: unknown keys {sorted(unknown)}; allowed: {sorted(known | set(extra))}")
    default = cls()

    def cast(k, v):
        d = getattr(default, k)
        return v if d is None or v is None else type(d)(v)

    return cls(**{k: cast(k, v) for k, v in options.items() if k in known})


class timed:
    """Adds the wrapped method's wall time to ``self.time_s``."""

    def __init__(self, fn):
        self.fn = fn

    def __set_name__(self, owner, name):
        fn = self.fn

        def wrapper(obj, *a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(obj, *a, **kw)
            finally:
                obj.time_s += time.perf_counter() - t0

        wrapper.__doc__, wrapper.__name__ = fn.__doc__, fn.__name__
        setattr(owner, name, wrapper)


class BinPolicy(Policy):
    """A policy that draws each steered parameter (``stats.names``) from its own row of bin
    probabilities, ``_dist(name)``, once it has observed ``args.warmup_requests`` requests."""

    observed = 0

    def _dist(self, name: str) -> np.ndarray:
        raise NotImplementedError

    @timed
    def act(self):
        if self.observed < self.args.warmup_requests:
            return {}
        return {n: self._dist(n).tolist() for n in self.stats.names}

    def probs(self):
        return {n: self._dist(n) for n in self.stats.names}


@functools.lru_cache(maxsize=None)
def _module(name: str):
    if name in NAMES:
        return importlib.import_module(f"{__name__}.{name}")
    ep = external().get(name)
    if ep is None:
        raise ValueError(f"unknown policy '{name}'; available: {list(names())}")
    module = plugins.load(ep, "policy", ValueError)
    policy = getattr(module, "POLICY", None)
    if not (isinstance(policy, type) and issubclass(policy, Policy)):
        raise ValueError(f"policy '{name}' ({ep.value}) defines no POLICY subclass of controller.policies.Policy")
    if policy.signal not in protocol.SIGNALS:
        raise ValueError(f"policy '{name}' ({ep.value}) asks for signal '{policy.signal}', which the trainer does "
                         f"not compute; one of {list(protocol.SIGNALS)}")
    return module


def args_class(name: str):
    """The policy's hyper-parameter dataclass (``policy.options``), or None if it has none."""
    return getattr(_module(name), "ARGS", None)


def signal_of(name: str) -> str:
    """What the trainer must compute against the real reward split for this policy (the
    controller says so in its info to the trainer; the trainer imports no policy code)."""
    return _module(name).POLICY.signal


def make(name: str, space: ParamSpace, bins: int = 8, options: Mapping[str, Any] | None = None,
         seed: int = 0) -> Policy:
    return _module(name).POLICY(space, bins=bins, options=options, seed=seed)
