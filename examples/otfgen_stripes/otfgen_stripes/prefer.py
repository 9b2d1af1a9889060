"""prefer: an example policy from outside otfgen — a fixed preference for one class.

Every request draws the label parameter with ``weight`` times more mass on class ``label`` than
on each other class; the other parameters stay uniform. It learns nothing (see
controller/policies/rho.py for one that does), which keeps the example to the interface.
"""

from dataclasses import dataclass

import numpy as np

from otfgen.controller.policies import Policy, PolicyArgs, args_from, n_bins


@dataclass(frozen=True)
class PreferArgs(PolicyArgs):
    label: int = 0
    """the class to draw more often"""
    weight: float = 3.0
    """its weight relative to each other class"""


class Prefer(Policy):
    name = "prefer"

    def __init__(self, space, bins=8, options=None, seed=0):
        super().__init__(space, bins, options, seed)
        self.args = args_from(PreferArgs, self.options)  # unknown keys fail with their names
        self.label_param = self.options["label_param"]  # supplied by the controller
        p = space[self.label_param]
        w = np.ones(n_bins(p, bins))
        w[self.args.label] = self.args.weight
        self.weights = w / w.sum()

    def act(self):
        return {self.label_param: self.weights.tolist()}  # JSON-able: it goes into params.jsonl

    def probs(self):
        return {self.label_param: self.weights}


ARGS = PreferArgs  # policy.options.label=1 / policy.options.weight=5 on the command line
POLICY = Prefer
