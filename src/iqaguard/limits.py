"""Upper bounds on method parameters, and the checks that apply them.

Each bound is far above any published setting, so no real configuration hits it, and low enough
that a typo (``steps=99999999999999999999``) fails in a millisecond with a one-line InputError
instead of running for years or asking for an exabyte of memory.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

from .errors import InputError

#: Iterations of an attack, optimiser or sampler. Published settings: I-FGSM 10 (the study),
#: PGD up to 1 000, C&W up to 10 000 iterations; 100 000 is ten times the largest.
MAX_STEPS = 100_000
#: Black-box query budgets. Square Attack and Parsimonious use 10 000 per image (ImageNet);
#: query-budget sweeps stop at 100 000.
MAX_QUERIES = 1_000_000
#: Monte-Carlo samples (randomized smoothing ``n``, ``n0``, votes, population sizes). Cohen et al.
#: 2019 certify with n = 100 000.
MAX_SAMPLES = 1_000_000
#: Training epochs (attacks and defenses train for 2-5 epochs in the study).
MAX_EPOCHS = 10_000
#: Training batch sizes and evaluation chunks (the study: 4-8).
MAX_BATCH = 1_000_000
#: Pixel sizes (patch sides, crops, output sides): 65 536 px is larger than any IQA dataset image.
MAX_SIDE = 1 << 16
#: Network widths (channels): the shipped networks use 16-80.
MAX_WIDTH = 4096
#: Network depths (blocks, layers): the shipped networks use 8-32.
MAX_DEPTH = 1000
#: Learning rates and step sizes of optimisers: published values are <= 2.5 (stAdv's L-BFGS).
MAX_LR = 1000.0
#: Any other non-negative real without a natural bound (loss weights, penalties, amounts):
#: published values are <= 50 (stAdv's adversarial weight).
MAX_REAL = 1e6
#: Seeds: torch and numpy both accept any integer in [0, 2**63).
MAX_SEED = (1 << 63) - 1


def integer(value, name: str, minimum: int = 1, maximum: int = MAX_SAMPLES) -> int:
    """An integer in [minimum, maximum]; floats with an integral value (``10.0``) are accepted."""
    if isinstance(value, bool) or not isinstance(value, (Integral, float)) \
            or (isinstance(value, float) and not value.is_integer()):
        raise InputError(f"{name} must be an integer in {minimum}..{maximum}, got {value!r}")
    if not minimum <= value <= maximum:
        raise InputError(f"{name} must be an integer in {minimum}..{maximum}, got {value!r}")
    return int(value)


def real(value, name: str, *, lo: float | None = None, hi: float | None = MAX_REAL,
         lo_open: bool = False, what: str = "") -> float:
    """A finite real number within the given bounds (``lo_open`` excludes ``lo``)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise InputError(f"{name} must be a finite number{what}, got {value!r}")
    v = float(value)
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise InputError(f"{name} must be {'>' if lo_open else '>='} {lo}{what}, got {value!r}")
    if hi is not None and v > hi:
        raise InputError(f"{name} must be <= {hi:g}{what}, got {value!r}")
    return v


def seed(value, name: str = "seed", optional: bool = True):
    """A seed in [0, 2**63), or None when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or not 0 <= value <= MAX_SEED:
        allowed = "an integer in [0, 2**63)" + (" or None" if optional else "")
        raise InputError(f"{name} must be {allowed}, got {value!r}")
    return int(value)
