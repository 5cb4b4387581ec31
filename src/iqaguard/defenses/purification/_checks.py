"""Constructor-parameter checks shared by the purifiers: bad values fail early, naming the parameter."""
from __future__ import annotations

import math
from numbers import Integral, Real

import torch

from ...errors import InputError


def odd_kernel(value, name: str = "kernel_size") -> int:
    """A positive odd integer (a centred k×k window)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InputError(f"{name} must be an odd integer >= 1, got {value!r}")
    if value < 1 or value % 2 == 0:
        raise InputError(f"{name} must be an odd integer >= 1, got {value}")
    return int(value)


def int_in(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or not lo <= value <= hi:
        raise InputError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    return int(value)


def real(value, name: str, *, lo: float | None = None, hi: float | None = None,
         lo_open: bool = False, what: str = "") -> float:
    """A finite real number within the given bounds (``lo_open`` excludes ``lo``)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise InputError(f"{name} must be a finite number{what}, got {value!r}")
    v = float(value)
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise InputError(f"{name} must be {'>' if lo_open else '>='} {lo}{what}, got {value!r}")
    if hi is not None and v > hi:
        raise InputError(f"{name} must be <= {hi}{what}, got {value!r}")
    return v


def fits_reflect(x: torch.Tensor, kernel_size: int) -> None:
    """Reflect padding by k//2 needs each side longer than k//2 (torch's ``reflect`` rule)."""
    pad = kernel_size // 2
    h, w = x.shape[-2:]
    if pad and (h <= pad or w <= pad):
        raise InputError(
            f"x is {h}x{w}, too small for kernel_size={kernel_size} with reflect padding "
            f"(each side must exceed {pad})")
