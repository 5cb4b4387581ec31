"""Smoothed metrics: the base metric seen through Gaussian noise (and a denoiser), with certificates.

A ``SmoothedMetric`` wraps a metric ``f`` and a denoiser ``D``. Its base function on a noisy
sample z = x + σ·ε is ``b(z) = f(D(z))``; the denoiser ends in [0, 1] (``clamp`` for plain
smoothing), so the metric's input check always passes. Clamping and denoising are deterministic
post-processing of the Gaussian sample, so every certificate below is a certificate for the
function ``f ∘ D`` and holds unchanged (Cohen et al. 2019 and Chiang et al. 2020 certify any
base function of x + σ·ε). Randomized denoisers (DensePure's reverse runs) are covered too: the
probability is then over ε and the denoiser's draws together.

Subclasses define the certificate: :class:`PercentileSmoothedMetric` (``ms``/``dms``) and
:class:`BinnedSmoothedMetric` (``rs``/``drs``/``ddrs``/``densepure``).

Randomness. ``seeds`` is None or one int per image. With seeds, every draw for image i comes
from its own ``torch.Generator`` seeded with ``derive_seed(seeds[i], stream)``; the streams are
``"estimate"`` (the n samples behind the score and the bound), ``"select"`` (the n0 samples that
pick the class) and ``"noisy:<c>"`` for the c-th call of :meth:`noisy` since ``seeds`` was last
set (repeated EOT calls get fresh draws, and setting the seeds restarts the count, so an image's
draws depend on its seed and the calls made for it, never on what the object served before). Noise is drawn in fixed blocks of samples, so
the draws of an image depend on neither the batch nor the chunk size. Without seeds every draw comes
from torch's global generator.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Real
from typing import Callable, Sequence

import numpy as np
import torch

from ...errors import InputError
from ...metrics.base import Metric
from ...seeds import derive_seed
from . import bounds

# A denoiser maps a batch of noisy samples of one image (values unbounded) and that image's
# generator (or None) to images in [0, 1].
Denoiser = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]

CHUNK_VALUES = 1 << 23   # noisy samples per base-metric call: ≈ 8M values (32 MB of input)
BLOCK = 16               # noise is drawn BLOCK samples at a time


def clamp_denoiser(z: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """No denoiser: the noisy sample clipped to the valid image range."""
    return z.clamp(0, 1)


@dataclass
class Certificate:
    """Per image: the smoothed ``score`` and an interval [``lo``, ``hi``] that contains the smoothed
    score of every x + δ with ‖δ‖₂ ≤ eps, with probability ≥ 1 − alpha over the sampling noise.
    ``abstained`` images have no (two-sided) certificate: their ``lo``/``hi`` are −inf/+inf on the
    side(s) that could not be bounded. Float tensors (N,), ``abstained`` bool (N,)."""

    score: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    abstained: torch.Tensor
    eps: float = 0.0
    alpha: float = 0.001

    def rows(self) -> list[dict]:
        return [dict(score=float(s), lo=float(a), hi=float(b), abstained=bool(z))
                for s, a, b, z in zip(self.score, self.lo, self.hi, self.abstained)]


class SmoothedMetric(Metric):
    """Base of the smoothed metrics. ``smoothed(x[, ref])`` is the median of the n base scores
    (stream ``"estimate"``), identical to ``certify(x, …).score`` under the same seeds."""

    differentiable = True

    def __init__(self, metric: Metric, sigma: float, n: int, alpha: float,
                 denoiser: Denoiser = clamp_denoiser, method: str = ""):
        super().__init__()
        if not isinstance(metric, Metric):
            raise InputError(f"protect() needs an iqaguard Metric, got {type(metric).__name__}")
        self.metric = metric
        self.like(metric)
        self.sigma, self.n, self.alpha = float(sigma), int(n), float(alpha)
        self.denoiser = denoiser
        self.method = method
        self._common: int | None = None   # inside common_noise(): the seed of its global draws (0 with seeds)
        self.seeds = None
        self.forwards = 0          # base-metric forward passes (images × samples)
        self.chunk: int | None = None   # samples per base call; None: from CHUNK_VALUES

    @property
    def seeds(self) -> Sequence[int] | None:
        return self._seeds

    @seeds.setter
    def seeds(self, value: Sequence[int] | None) -> None:
        """Setting the seeds (even to the same values) restarts the count of :meth:`noisy` calls."""
        self._seeds = None if value is None else list(value)
        self._noisy_calls = 0

    @contextmanager
    def common_noise(self):
        """Inside, every :meth:`noisy` call draws the same noise (stream ``"noisy:common"``; without
        seeds, from one seed drawn from the global generator on entry): candidates compared with common random
        numbers, so an attack's keep-best check compares images, not draws. With fresh draws it
        discarded 8 of 20 adaptive ℓ2 PGD results on iqg-cnn × ms (EOT-4). Outside calls keep their
        count."""
        outer = self._common
        if outer is None:   # without seeds, one seed from the global generator for every call inside
            self._common = 0 if self.seeds is not None else int(torch.randint(0, 2 ** 62, ()).item())
        try:
            yield
        finally:
            self._common = outer

    # ------------------------------------------------------------ sampling

    def _generator(self, i: int, stream: str, device) -> torch.Generator | None:
        if self.seeds is None:
            return None
        g = torch.Generator(device=device)
        g.manual_seed(derive_seed(int(self.seeds[i]), stream))
        return g

    def _check_seeds(self, n_images: int) -> None:
        if self.seeds is not None and len(self.seeds) != n_images:
            raise InputError(f"seeds must have one entry per image: {len(self.seeds)} for a batch of {n_images}")

    def _chunk(self, x1: torch.Tensor) -> int:
        """Samples per base-metric call: a multiple of BLOCK (so draws do not depend on it)."""
        want = self.chunk if self.chunk is not None else CHUNK_VALUES // x1.numel()
        return BLOCK * max(1, -(-min(self.n, int(want)) // BLOCK))

    def _noise(self, x1: torch.Tensor, m: int, gen: torch.Generator | None) -> torch.Tensor:
        """m noisy copies of one image (1×C×H×W). Noise is drawn in blocks of BLOCK samples (the
        last block truncated), so an image's draws do not depend on the chunk size."""
        blocks = [torch.randn((BLOCK,) + tuple(x1.shape[1:]), generator=gen, device=x1.device, dtype=x1.dtype)
                  for _ in range(-(-m // BLOCK))]
        return x1 + self.sigma * torch.cat(blocks)[:m]

    def _base(self, z: torch.Tensor, ref1: torch.Tensor | None, gen: torch.Generator | None) -> torch.Tensor:
        """Base scores of a batch of noisy samples of one image: f(D(z)), shape (m,)."""
        y = self.denoiser(z, gen)
        self.forwards += y.shape[0]
        if ref1 is None:
            return self.metric(y)
        return self.metric(y, ref1.expand(y.shape[0], -1, -1, -1))

    @torch.no_grad()
    def _samples(self, x: torch.Tensor, ref: torch.Tensor | None, m: int, stream: str) -> torch.Tensor:
        """(N, m) base scores: m noisy samples per image, image i from its own stream."""
        out = torch.empty((x.shape[0], m), dtype=torch.float64)
        for i in range(x.shape[0]):
            x1 = x[i:i + 1]
            ref1 = None if ref is None else ref[i:i + 1]
            gen = self._generator(i, stream, x.device)
            step, done = self._chunk(x1), 0
            while done < m:
                k = min(step, m - done)
                out[i, done:done + k] = self._base(self._noise(x1, k, gen), ref1, gen).double().cpu()
                done += k
        return out

    def _check_input(self, x, ref):
        self.check_input(x, ref)
        self._check_seeds(x.shape[0])

    # ------------------------------------------------------------ the metric interface

    def score(self, x, ref):
        self._check_seeds(x.shape[0])
        s = self._samples(x, ref, self.n, "estimate")
        return self._point(s).to(torch.float32).to(x.device)

    def _point(self, samples: torch.Tensor) -> torch.Tensor:
        """The smoothed score from (N, n) samples: the sample median (lower median for even n)."""
        return samples.sort(dim=1).values[:, (samples.shape[1] - 1) // 2]

    def noisy(self, x: torch.Tensor, ref: torch.Tensor | None = None, k: int = 1) -> torch.Tensor:
        """Differentiable mean of the base (denoised) metric over k noise draws, shape (N,).

        The objective the adaptive ℓ2 attack with EOT differentiates. With seeds, the c-th call since
        ``seeds`` was set draws image i's noise from stream ``"noisy:c"``; without, from the global
        generator. Inside :meth:`common_noise` every call draws the same noise.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be an integer >= 1, got {k!r}")
        self._check_input(x, ref)
        if self._common is None:
            self._noisy_calls += 1
            return self._noisy_means(x, ref, k, f"noisy:{self._noisy_calls - 1}")
        if self.seeds is not None:
            return self._noisy_means(x, ref, k, "noisy:common")
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(self._common)
            return self._noisy_means(x, ref, k, "noisy:common")

    def _noisy_means(self, x, ref, k: int, stream: str) -> torch.Tensor:
        means = []
        for i in range(x.shape[0]):
            x1 = x[i:i + 1]
            ref1 = None if ref is None else ref[i:i + 1]
            gen = self._generator(i, stream, x.device)
            means.append(self._base_noisy(self._noise(x1, k, gen), ref1, gen).mean())
        return torch.stack(means).to(torch.float32)

    def _base_noisy(self, z, ref1, gen):
        """Base scores used by :meth:`noisy` (differentiable); the base function by default."""
        return self._base(z, ref1, gen)

    # ------------------------------------------------------------ certificates

    def certify(self, x: torch.Tensor, eps: float, alpha: float | None = None,
                ref: torch.Tensor | None = None) -> Certificate:
        """Smoothed score and an interval valid for every ‖δ‖₂ ≤ eps w.p. ≥ 1 − alpha."""
        if isinstance(eps, bool) or not isinstance(eps, Real) or not math.isfinite(eps) or eps < 0:
            raise InputError(f"eps must be a finite number >= 0 (an ℓ2 radius), got {eps!r}")
        alpha = self.alpha if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0 < alpha < 1:
            raise InputError(f"alpha must be a number in (0, 1), got {alpha!r}")
        self._check_input(x, ref)
        score, lo, hi, abst = self._certify(x, ref, float(eps), float(alpha))
        return Certificate(score.float(), lo.float(), hi.float(), abst, float(eps), float(alpha))

    def _certify(self, x, ref, eps, alpha):  # pragma: no cover
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"method={self.method}, sigma={self.sigma}, n={self.n}, alpha={self.alpha}"


class PercentileSmoothedMetric(SmoothedMetric):
    """Percentile smoothing (Chiang et al. 2020, median smoothing when ``percentile`` = 0.5).

    The bound is the pair of order statistics (k_lo, k_hi) of the n samples that bound the
    p_lo-th and p_hi-th percentiles of the base score at x, p_lo/hi = Φ(Φ⁻¹(p) ∓ eps/σ)
    (:func:`bounds.percentile_levels`, :func:`bounds.order_statistic_indices`).
    """

    def __init__(self, metric, sigma, n, alpha, percentile: float = 0.5, denoiser=clamp_denoiser, method=""):
        super().__init__(metric, sigma, n, alpha, denoiser, method)
        self.percentile = float(percentile)

    def _point(self, samples):
        k = min(samples.shape[1] - 1, max(0, math.ceil(self.percentile * samples.shape[1]) - 1))
        return samples.sort(dim=1).values[:, k]

    def _certify(self, x, ref, eps, alpha):
        s = self._samples(x, ref, self.n, "estimate").sort(dim=1).values
        score = self._point(s)
        p_lo, p_hi = bounds.percentile_levels(self.percentile, eps, self.sigma)
        k_lo, k_hi = bounds.order_statistic_indices(p_lo, p_hi, self.n, alpha)
        n_img = x.shape[0]
        lo = s[:, k_lo - 1] if k_lo >= 1 else torch.full((n_img,), -math.inf, dtype=s.dtype)
        hi = s[:, k_hi - 1] if k_hi <= self.n else torch.full((n_img,), math.inf, dtype=s.dtype)
        abst = torch.full((n_img,), k_lo < 1 or k_hi > self.n, dtype=torch.bool)
        return score, lo, hi, abst


class BinnedSmoothedMetric(SmoothedMetric):
    """The study's binned classifier under randomized smoothing (Cohen et al. 2019).

    The score is binned into ``bins`` equal classes over ``score_range`` plus one class below and
    one above (:func:`bounds.bin_edges`). n0 samples (stream ``"select"``) pick the top class c_A,
    n samples (stream ``"estimate"``) give the Clopper–Pearson lower bound p_A of its
    probability; the certified radius is σ·Φ⁻¹(p_A). The certificate is c_A's edges when
    p_A ≥ 1/2 and the radius ≥ eps, else abstained with (−inf, +inf). The smoothed score is the
    median of the n samples; whenever more than half of them fall in one class, the median lies
    in that class, so score and class agree.
    """

    def __init__(self, metric, sigma, n, alpha, n0: int = 100, bins: int = 10, denoiser=clamp_denoiser, method=""):
        super().__init__(metric, sigma, n, alpha, denoiser, method)
        self.n0, self.bins = int(n0), int(bins)
        self.edges = bounds.bin_edges(self.score_range, self.bins)
        self.last_radius: torch.Tensor | None = None   # radius of the last certify call (−1: abstain)

    def _certify(self, x, ref, eps, alpha):
        sel = self._samples(x, ref, self.n0, "select")
        est = self._samples(x, ref, self.n, "estimate")
        score = self._point(est)
        n_img, n_cls = x.shape[0], self.bins + 2
        lo = torch.full((n_img,), -math.inf, dtype=torch.float64)
        hi = torch.full((n_img,), math.inf, dtype=torch.float64)
        abst = torch.ones(n_img, dtype=torch.bool)
        radius = torch.full((n_img,), -1.0, dtype=torch.float64)
        for i in range(n_img):
            c_a = int(np.bincount(bounds.to_bins(sel[i].numpy(), self.edges), minlength=n_cls).argmax())
            n_a = int((bounds.to_bins(est[i].numpy(), self.edges) == c_a).sum())
            r = bounds.cohen_radius(bounds.clopper_pearson_lower(n_a, self.n, alpha), self.sigma)
            radius[i] = r
            if r >= eps and r >= 0:
                lo[i], hi[i] = float(self.edges[c_a]), float(self.edges[c_a + 1])
                abst[i] = False
        self.last_radius = radius
        return score, lo, hi, abst
