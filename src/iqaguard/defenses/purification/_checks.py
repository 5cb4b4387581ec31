"""Constructor-parameter checks shared by the purifiers: bad values fail early, naming the parameter."""
from __future__ import annotations

from numbers import Integral

import torch

from ... import limits
from ...errors import InputError
from ...limits import MAX_REAL


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


def real(value, name: str, *, lo: float | None = None, hi: float | None = MAX_REAL,
         lo_open: bool = False, what: str = "") -> float:
    """A finite real number within the given bounds (``lo_open`` excludes ``lo``); the default
    upper bound is ``limits.MAX_REAL``."""
    return limits.real(value, name, lo=lo, hi=hi, lo_open=lo_open, what=what)


def fits_reflect(x: torch.Tensor, kernel_size: int) -> None:
    """Reflect padding by k//2 needs each side longer than k//2 (torch's ``reflect`` rule)."""
    pad = kernel_size // 2
    h, w = x.shape[-2:]
    if pad and (h <= pad or w <= pad):
        raise InputError(
            f"x is {h}x{w}, too small for kernel_size={kernel_size} with reflect padding "
            f"(each side must exceed {pad})")
