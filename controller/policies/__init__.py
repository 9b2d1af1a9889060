"""Policies decide what to generate next. One module each, one interface, chosen by ``policy=<name>``.

A policy's *action* is, per parameter of the family's space, a list of weights over equal-width
bins of its range (or over its choices); parameters it leaves out are drawn uniformly. The space
does the drawing (``ParamSpace.sample``), so every family, 2D or 3D, gets every policy for free.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

import numpy as np

from blender_gen.space import ParamSpace

NAMES = ("uniform",)


class Policy:
    """The interface. Subclasses override what they use; the defaults do nothing."""

    name = "base"

    def __init__(self, space: ParamSpace, bins: int = 8, options: Mapping[str, Any] | None = None, seed: int = 0):
        self.space, self.bins, self.options, self.seed = space, bins, dict(options or {}), seed

    def act(self) -> dict[str, list[float]]:
        """The action for the next request (JSON-able: it is written to the parameter log)."""
        return {}

    def observe(self, params: Mapping[str, np.ndarray], losses: np.ndarray) -> None:
        """Training losses of one delivered request, per sample, with the parameters that made them."""

    def observe_validation(self, metrics: Mapping[str, Any]) -> None:
        """Validation metrics from the trainer (``val/acc``, ``val/acc_class`` …)."""

    def summary(self) -> dict[str, Any]:
        """Namespaced figures for metrics.jsonl (``policy/...``)."""
        return {}


def make(name: str, space: ParamSpace, bins: int = 8, options: Mapping[str, Any] | None = None,
         seed: int = 0) -> Policy:
    if name not in NAMES:
        raise ValueError(f"unknown policy '{name}'; available: {list(NAMES)}")
    module = importlib.import_module(f"{__name__}.{name}")
    return module.POLICY(space, bins=bins, options=options, seed=seed)
