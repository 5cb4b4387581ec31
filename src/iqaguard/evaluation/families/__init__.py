"""Defense families as plug-ins of the grid: one small module per family.

The worker's loop is the same for every defense: score the clean and the attacked batch through
``defense.protect(metric)``, attack the protected metric itself for the adaptive column, and write
one row per image. What differs per family — how the protected metric is obtained (a purifier
wraps, a trained defense is fitted first, a certified one smooths), what the adaptive attack
differentiates, and which extra columns a cell fills — lives in a :class:`Family` subclass here.
``FAMILIES`` maps ``Defense.family`` to it; ``make_plan`` refuses a family that is not in it.
"""
from __future__ import annotations

from .base import Defended, Family
from .certified import Certified
from .purification import Purification
from .training import Training

FAMILIES: dict[str, Family] = {f.name: f for f in (Purification(), Training(), Certified())}

__all__ = ["FAMILIES", "Family", "Defended", "family_of"]


def family_of(defense) -> Family:
    from ...errors import InputError

    fam = getattr(defense, "family", None)
    if fam not in FAMILIES:
        raise InputError(f"defense {getattr(defense, 'name', type(defense).__name__)!r} has family {fam!r}; "
                         f"the grid runs {', '.join(FAMILIES)}")
    return FAMILIES[fam]
