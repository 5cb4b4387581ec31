"""``no-defense``: the identity, the baseline every defense is compared with."""
from __future__ import annotations

from ...registry import DEFENSES
from ..base import Purifier


@DEFENSES.register("no-defense")
class NoDefense(Purifier):
    """Returns the image unchanged (the study's ``no-defence``)."""

    differentiable = True
    identity = True     # its adaptive column is the transfer one: the attack already saw this metric

    def __init__(self):
        pass

    def transform(self, x, gens):
        return x
