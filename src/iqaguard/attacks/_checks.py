"""Parameter checks shared by the attacks: each returns the clean value or raises InputError
naming the parameter. Every check has an upper bound (``iqaguard.limits``), so no parameter can
ask for an endless loop or an impossible allocation."""
from __future__ import annotations

import math

from .. import limits
from ..errors import InputError
from ..limits import MAX_DEPTH, MAX_EPOCHS, MAX_LR, MAX_QUERIES, MAX_REAL, MAX_SIDE, MAX_STEPS  # noqa: F401


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number, got {value!r}")
    return float(value)


def nonneg(value, name: str, maximum: float = MAX_REAL) -> float:
    v = _number(value, name)
    if not math.isfinite(v) or v < 0:
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    if v > maximum:
        raise InputError(f"{name} must be <= {maximum:g}, got {value!r}")
    return v


def positive(value, name: str, maximum: float = MAX_REAL) -> float:
    v = _number(value, name)
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")
    if v > maximum:
        raise InputError(f"{name} must be <= {maximum:g}, got {value!r}")
    return v


def lr(value, name: str = "lr") -> float:
    """A learning rate / step size: finite, > 0, at most ``limits.MAX_LR``."""
    return positive(value, name, maximum=MAX_LR)


def linf(value, name: str = "eps") -> float:
    """An ℓ∞ radius on [0,1] images: in [0, 1] (a radius of 1 already allows every image)."""
    return unit(value, name)


def integer(value, name: str, minimum: int = 1, maximum: int = limits.MAX_SAMPLES) -> int:
    return limits.integer(value, name, minimum, maximum)


def steps(value, name: str = "steps", minimum: int = 1) -> int:
    return limits.integer(value, name, minimum, MAX_STEPS)


def queries(value, name: str = "n_queries") -> int:
    return limits.integer(value, name, 1, MAX_QUERIES)


def unit(value, name: str, low_open: bool = False) -> float:
    """A number in [0, 1] (or (0, 1] with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}")
    if not (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0):
        raise InputError(f"{name} must be in {'(0' if low_open else '[0'}, 1], got {value!r}")
    return float(value)


def seed(value, name: str = "seed"):
    return limits.seed(value, name, optional=True)
