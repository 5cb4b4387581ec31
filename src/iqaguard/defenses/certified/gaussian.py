"""``rs``, ``drs``, ``ms``, ``dms``: Gaussian smoothing of a metric, without or with the DnCNN denoiser.

``rs``/``drs``: the study's 12-class binned classifier certified by randomized smoothing
(Cohen et al. 2019); ``drs`` adds the DnCNN denoiser (denoised smoothing, Salman et al. 2020).
``ms``/``dms``: percentile (median) smoothing with order-statistic bounds (Chiang et al. 2020).
The denoiser is applied to the clipped noisy sample, as in the study (clip, then DnCNN, then clip).
"""
from __future__ import annotations

from functools import lru_cache

import torch

from ...errors import InputError
from ...registry import DEFENSES
from ..purification._checks import real
from .defense import CertifiedDefense, count
from .dncnn import load_dncnn
from .smoothing import BinnedSmoothedMetric, PercentileSmoothedMetric, clamp_denoiser


@lru_cache(maxsize=4)
def _dncnn(path: str):
    return load_dncnn(path)


class DnCNNDenoiser:
    """clip → DnCNN → clip; the net is moved to the input's device on first use."""

    def __init__(self, weights: str, sigma: float):
        if not isinstance(weights, str):
            raise InputError(f"denoiser_weights must be a file path (str), got {weights!r}")
        self.net, trained_sigma = _dncnn(weights)
        if abs(trained_sigma - sigma) > 1e-9:
            raise InputError(f"the DnCNN weights were trained at sigma={trained_sigma}, but the smoothing "
                             f"sigma is {sigma}; train one with scripts/train_dncnn.py --sigma {sigma} "
                             f"and pass it as denoiser_weights")

    def __call__(self, z: torch.Tensor, gen) -> torch.Tensor:
        p = next(self.net.parameters())
        if p.device != z.device:
            self.net.to(z.device)
        return self.net(z.clamp(0, 1)).clamp(0, 1)


def _bins(value) -> int:
    return count(value, "bins", 1, 10_000)   # score-range bins: the study uses 10


@DEFENSES.register("rs")
class RS(CertifiedDefense):
    """Randomized smoothing of the binned metric (the study's RS): σ 0.12, n0 100, n 1000, α 0.001, 10 bins."""

    denoised = False

    def __init__(self, sigma: float = 0.12, n0: int = 100, n: int = 1000, alpha: float = 0.001, bins: int = 10):
        self._common(sigma, n, alpha)
        self.n0 = count(n0, "n0")
        self.bins = _bins(bins)
        self._denoiser = clamp_denoiser

    def protect(self, metric):
        return BinnedSmoothedMetric(metric, self.sigma, self.n, self.alpha, n0=self.n0, bins=self.bins,
                                    denoiser=self._denoiser, method=self.name or "rs")


@DEFENSES.register("drs")
class DRS(RS):
    """RS with the DnCNN denoiser before the metric (denoised smoothing; the study's DRS with the
    denoiser actually on). ``denoiser_weights``: empty = the shipped σ = 0.12 DnCNN."""

    denoised = True

    def __init__(self, sigma: float = 0.12, n0: int = 100, n: int = 1000, alpha: float = 0.001, bins: int = 10,
                 denoiser_weights: str = ""):
        super().__init__(sigma, n0, n, alpha, bins)
        self.denoiser_weights = denoiser_weights
        self._denoiser = DnCNNDenoiser(denoiser_weights, self.sigma)


@DEFENSES.register("ms")
class MS(CertifiedDefense):
    """Median smoothing (the study's MS): σ 0.12, n 1000, α 0.001; ``percentile`` 0.5 = the median."""

    denoised = False

    def __init__(self, sigma: float = 0.12, n: int = 1000, alpha: float = 0.001, percentile: float = 0.5):
        self._common(sigma, n, alpha)
        self.percentile = real(percentile, "percentile", lo=0.0, lo_open=True, hi=1.0)
        if self.percentile >= 1.0:
            raise InputError(f"percentile must be in (0, 1), got {percentile!r}")
        self._denoiser = clamp_denoiser

    def protect(self, metric):
        return PercentileSmoothedMetric(metric, self.sigma, self.n, self.alpha, percentile=self.percentile,
                                        denoiser=self._denoiser, method=self.name or "ms")


@DEFENSES.register("dms")
class DMS(MS):
    """MS with the DnCNN denoiser before the metric (the study's DMS)."""

    denoised = True

    def __init__(self, sigma: float = 0.12, n: int = 1000, alpha: float = 0.001, percentile: float = 0.5,
                 denoiser_weights: str = ""):
        super().__init__(sigma, n, alpha, percentile)
        self.denoiser_weights = denoiser_weights
        self._denoiser = DnCNNDenoiser(denoiser_weights, self.sigma)
