"""The statistics behind the certificates: Clopper–Pearson bounds (Cohen et al. 2019), Cohen's
certified radius, order-statistic bounds of smoothed percentiles (Chiang et al. 2020) and the
study's 12-class binning of a score.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided (1 − alpha) lower confidence bound of a binomial proportion from k of n.

    The Clopper–Pearson bound Beta⁻¹(alpha; k, n − k + 1) — what Cohen et al.'s
    ``proportion_confint(k, n, alpha=2·alpha, method="beta")[0]`` computes; 0 when k = 0.
    """
    if k <= 0:
        return 0.0
    return float(stats.beta.ppf(alpha, k, n - k + 1))


def cohen_radius(p_lower: float, sigma: float) -> float:
    """Certified ℓ2 radius σ·Φ⁻¹(p_A) of the smoothed classifier; −1 means abstain (p_A < 1/2)."""
    if p_lower < 0.5:
        return -1.0
    return float(sigma * stats.norm.ppf(p_lower)) if p_lower < 1 else math.inf


def percentile_levels(p: float, eps: float, sigma: float) -> tuple[float, float]:
    """(p_lo, p_hi) = Φ(Φ⁻¹(p) ∓ eps/σ): for every ‖δ‖₂ ≤ eps the p-th percentile of the smoothed
    score at x + δ lies between the p_lo-th and p_hi-th percentiles at x (Chiang et al. 2020, Thm. 1)."""
    z = stats.norm.ppf(p)
    return float(stats.norm.cdf(z - eps / sigma)), float(stats.norm.cdf(z + eps / sigma))


def order_statistic_indices(p_lo: float, p_hi: float, n: int, alpha: float) -> tuple[int, int]:
    """1-based order-statistic indices (k_lo, k_hi) of n samples with
    P(X₍k_lo₎ ≤ q(p_lo)) ≥ 1 − alpha/2 and P(X₍k_hi₎ ≥ q(p_hi)) ≥ 1 − alpha/2.

    X₍k₎ < q(p) needs at least k samples below q(p), each with probability ≤ p, so
    P(X₍k₎ < q(p)) ≤ P(Bin(n, p) ≥ k): k_hi is the smallest k with P(Bin(n, p_hi) ≤ k − 1) ≥ 1 − alpha/2.
    Symmetrically k_lo is the largest k with P(Bin(n, p_lo) ≤ k − 1) ≤ alpha/2. The two sides share
    alpha (union bound), so the interval holds with probability ≥ 1 − alpha. k_lo = 0 or
    k_hi = n + 1 means n samples cannot bound that side (the certificate abstains).
    """
    ks = np.arange(1, n + 1)
    cdf_hi = stats.binom.cdf(ks - 1, n, p_hi)
    ok_hi = np.nonzero(cdf_hi >= 1 - alpha / 2)[0]
    k_hi = int(ks[ok_hi[0]]) if ok_hi.size else n + 1
    cdf_lo = stats.binom.cdf(ks - 1, n, p_lo)
    ok_lo = np.nonzero(cdf_lo <= alpha / 2)[0]
    k_lo = int(ks[ok_lo[-1]]) if ok_lo.size else 0
    return k_lo, k_hi


def bin_edges(score_range: tuple[float, float], bins: int) -> np.ndarray:
    """Class edges of the study's binning: class 0 = (−∞, lo], class k = (lo+(k−1)d, lo+kd] for
    k = 1..bins with d = (hi − lo)/bins, class bins+1 = (hi, ∞). Returns bins+3 edges."""
    lo, hi = score_range
    inner = np.linspace(lo, hi, bins + 1)
    return np.concatenate([[-np.inf], inner, [np.inf]])


def to_bins(scores, edges: np.ndarray) -> np.ndarray:
    """Class index of each score (right-closed bins, as the study's ``MetricClassifier``)."""
    return np.searchsorted(edges[1:-1], np.asarray(scores, dtype=np.float64), side="left")
