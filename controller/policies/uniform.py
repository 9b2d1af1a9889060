"""Uniform domain randomisation (Tobin et al. 2017): every parameter uniform over its range."""

from otfgen.controller.policies import Policy


class Uniform(Policy):
    name = "uniform"

    def act(self) -> dict[str, list[float]]:
        return {}  # an empty action means uniform over every declared range


POLICY = Uniform
