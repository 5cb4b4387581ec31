"""Parameter checks shared by the attacks: each returns the clean value or raises InputError
naming the parameter."""
from __future__ import annotations

import math

from ..errors import InputError


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number, got {value!r}")
    return float(value)


def nonneg(value, name: str) -> float:
    v = _number(value, name)
    if not math.isfinite(v) or v < 0:
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def positive(value, name: str) -> float:
    v = _number(value, name)
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def integer(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value \
            or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def unit(value, name: str, low_open: bool = False) -> float:
    """A number in [0, 1] (or (0, 1] with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}")
    if not (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0):
        raise InputError(f"{name} must be in {'(0' if low_open else '[0'}, 1], got {value!r}")
    return float(value)


def seed(value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InputError(f"seed must be an integer or None, got {value!r}")
    return value
