"""Generate what looks real for its class: a discriminator's verdict, per class × region.

The trainer trains a small class-conditional discriminator online, the reward split's real
images against the generated stream, and reports each generated sample's logit
(trainer/judges.py, ``realism``). Averaged over a region it says how close that region's
images come to real ones of the class; the region model is ``align``'s (one moving average per
class × parameter bin, Boltzmann weights on effect sizes, an exploration floor).

Why a second real-data signal: the gradient alignment asks the task model, and a model that
has not started learning — the usual state early in a wide space (docs/experiments.md) —
gives alignments that are noise, so the policy cannot help it start. The discriminator needs
no trained task model: inverted, occluded or smeared images are told apart from real ones
within a few dozen minibatches. What it cannot see is usefulness beyond realism: it favours
typical images, and only the floor keeps the rare ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from otfgen_baselines.align import Align, AlignArgs


@dataclass(frozen=True)
class RealismArgs(AlignArgs):
    model: str = "additive"
    """"additive" (per class, a ridge regression of the signal on every parameter's bins at once)
    or "average" (one moving average per cell): the discriminator's verdict on an inverted image
    is so strong that, judged against the spread it leaves, every other parameter's cell averages
    looked like noise (the first try, docs/experiments.md)"""


class Realism(Align):
    name = "realism"
    signal = "realism"
    args_class = RealismArgs


ARGS = RealismArgs
POLICY = Realism
