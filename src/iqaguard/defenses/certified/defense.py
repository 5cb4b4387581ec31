"""The certified-defense base: parameters shared by the six methods and ``protect``."""
from __future__ import annotations

from numbers import Integral

from ...errors import InputError
from ...limits import MAX_SAMPLES
from ...metrics.base import Metric
from ..base import Defense
from ..purification._checks import real


def count(value, name: str, lo: int = 1, hi: int = MAX_SAMPLES) -> int:
    """An integer in [lo, hi]; by default a Monte-Carlo sample count (``limits.MAX_SAMPLES``)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or not lo <= value <= hi:
        raise InputError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    return int(value)


class CertifiedDefense(Defense):
    """``protect(metric)`` returns a :class:`~.smoothing.SmoothedMetric` with ``certify``.

    Randomized (Monte-Carlo smoothing) and differentiable in the sense the adaptive attack needs:
    the smoothed metric's ``noisy(x, k)`` is the differentiable EOT objective through its noisy,
    denoised base. Parameters common to all six: ``sigma`` (noise std on [0,1] images), ``n``
    (samples behind the score and the bound), ``alpha`` (failure probability of the certificate).
    """

    family = "certified"
    randomized = True
    differentiable = True

    def _common(self, sigma, n, alpha) -> None:
        self.sigma = real(sigma, "sigma", lo=0.0, lo_open=True, hi=10.0)
        self.n = count(n, "n")
        self.alpha = real(alpha, "alpha", lo=0.0, lo_open=True, hi=0.5)

    def protect(self, metric: Metric):  # pragma: no cover
        raise NotImplementedError
