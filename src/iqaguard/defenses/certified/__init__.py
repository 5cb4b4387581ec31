"""Certified defenses: ``protect`` returns a smoothed metric whose ``certify(x, eps)`` gives a score
interval valid for every ‖δ‖₂ ≤ eps with probability ≥ 1 − alpha. Importing registers
``rs``, ``drs``, ``ms``, ``dms``, ``ddrs`` and ``densepure``."""
from . import gaussian, diffusion  # noqa: F401
from .command import certify_command  # noqa: F401
from .smoothing import Certificate, SmoothedMetric  # noqa: F401
