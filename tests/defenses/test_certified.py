"""Certified defenses: the bounds against closed forms, soundness of the certificates on a toy
metric whose smoothed percentiles are known exactly, a deliberately wrong bound that the same
check catches, per-image seeding, abstention, parameters and the registry.

The toy metric is the mean pixel value f(x) = w·x, w = 1/d. Under x + σε its value is
N(w·x, σ²/d) (clamping to [0,1] is negligible: the toy images sit ≥ 0.44 ≥ 3.6σ from both
ends, so a pixel is clipped with probability < 3·10⁻⁴ and by < 0.1σ, a shift of the mean below
10⁻⁵σ/√d). The worst ℓ2 perturbation of size eps moves every pixel by eps/√d and the score by
eps/√d, so the exact median at the worst case is w·x ± eps/√d.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import iqaguard as ig
import iqaguard.defenses  # noqa: F401
from iqaguard.attacks.base import Attack
from iqaguard.defenses.certified import Certificate, SmoothedMetric, bounds
from iqaguard.errors import InputError
from iqaguard.metrics.base import Metric
from iqaguard.registry import DEFENSES

CERTIFIED = ["rs", "drs", "ms", "dms", "ddrs", "densepure"]
SIDE = 8
D = 3 * SIDE * SIDE          # pixels of a toy image
SD = 0.12 / math.sqrt(D)     # std of the toy score under the default noise


def toy_metric():
    return ig.wrap_metric(lambda x: x.mean(dim=(1, 2, 3)), score_range=(0.0, 1.0), name="toy-mean")


def flat(n, value):
    return torch.full((n, 3, SIDE, SIDE), float(value))


def binom_quantile(k, p, q=0.999):
    """The q-quantile of Bin(k, p): a count of failures the test tolerates."""
    return int(stats.binom.ppf(q, k, p))


# ---------------------------------------------------------------- the statistics

def test_clopper_pearson_and_radius():
    # all n successes: the bound solves p^n = alpha (Beta(n, 1) quantile), 0.001^(1/1000)
    assert bounds.clopper_pearson_lower(1000, 1000, 0.001) == pytest.approx(0.001 ** (1 / 1000), rel=1e-12)
    assert bounds.clopper_pearson_lower(0, 1000, 0.001) == 0.0
    # coverage of the one-sided bound: P(lower > p) <= alpha, exactly by summing the binomial
    p, n, a = 0.7, 200, 0.05
    miss = sum(stats.binom.pmf(k, n, p) for k in range(n + 1) if bounds.clopper_pearson_lower(k, n, a) > p)
    assert miss <= a
    assert bounds.cohen_radius(0.49, 0.12) == -1.0
    assert bounds.cohen_radius(stats.norm.cdf(2.0), 0.12) == pytest.approx(0.24)


def test_order_statistic_indices_cover_exactly():
    """k_hi/k_lo satisfy their binomial conditions and are the tightest that do."""
    n, alpha = 1000, 0.001
    p_lo, p_hi = bounds.percentile_levels(0.5, 0.25, 0.12)
    assert p_hi == pytest.approx(stats.norm.cdf(0.25 / 0.12)) and p_lo == pytest.approx(1 - p_hi)
    k_lo, k_hi = bounds.order_statistic_indices(p_lo, p_hi, n, alpha)
    assert stats.binom.cdf(k_hi - 1, n, p_hi) >= 1 - alpha / 2 > stats.binom.cdf(k_hi - 2, n, p_hi)
    assert stats.binom.cdf(k_lo - 1, n, p_lo) <= alpha / 2 < stats.binom.cdf(k_lo, n, p_lo)
    assert k_lo + k_hi == n + 1                               # symmetric for the median
    # eps = 0: the median's own confidence interval
    k0_lo, k0_hi = bounds.order_statistic_indices(0.5, 0.5, n, alpha)
    assert k0_lo < 500 < k0_hi
    # too large a radius for n samples: both sides abstain (index outside 1..n)
    assert bounds.order_statistic_indices(*bounds.percentile_levels(0.5, 0.4, 0.12), n, alpha) == (0, n + 1)


def test_bins_match_the_study():
    """The study's MetricClassifier: class 0 for s <= lo, class i for lo+(i-1)d < s <= lo+id, 11 above hi."""
    edges = bounds.bin_edges((2.0, 12.0), 10)
    assert len(edges) == 13 and edges[0] == -np.inf and edges[-1] == np.inf
    got = bounds.to_bins([1.0, 2.0, 2.5, 3.0, 3.0001, 11.99, 12.0, 12.01], edges)
    assert got.tolist() == [0, 0, 1, 1, 2, 10, 10, 11]


# ---------------------------------------------------------------- soundness on the toy metric

def test_ms_interval_soundness_closed_form():
    """1000 independent certificates (defaults: σ 0.12, n 1000, α 0.001, eps 0.25): the interval
    must contain the exact worst-case medians w·x ± eps/√d at most as often as α allows."""
    runs, eps, v = 1000, 0.25, 0.5
    sm = ig.create_defense("ms").protect(toy_metric())
    sm.seeds = list(range(runs))
    cert = sm.certify(flat(runs, v), eps)
    assert not cert.abstained.any()
    shift = eps / math.sqrt(D)
    violations = int(((cert.hi < v + shift) | (cert.lo > v - shift)).sum())
    assert violations <= binom_quantile(runs, 0.001)        # ≤ 4 of 1000 (α·runs = 1 expected at most)
    # the interval is not vacuous: its half-width is a few worst-case shifts, not the whole range
    half = float(((cert.hi - cert.lo) / 2).mean())
    assert shift < half < 2 * shift
    assert float(cert.score.sub(v).abs().max()) < 5 * SD     # the smoothed score is the median


def test_ms_attacked_score_within_certificate_and_wrong_bound_fails():
    """The smoothed score of the worst-case attacked image x + eps·u stays in the certificate for
    eps, and leaves the (wrong) certificate computed for eps/2 almost every time."""
    runs, eps, v = 100, 0.25, 0.5
    sm = ig.create_defense("ms").protect(toy_metric())
    sm.seeds = list(range(runs))
    x = flat(runs, v)
    right, wrong = sm.certify(x, eps), sm.certify(x, eps / 2)
    sm.seeds = [s + 10_000 for s in range(runs)]              # fresh noise for the attacked images
    for sign in (1, -1):
        attacked = sm(x + sign * eps / math.sqrt(D))           # ‖δ‖₂ = eps exactly
        inside = (attacked >= right.lo) & (attacked <= right.hi)
        assert int((~inside).sum()) <= binom_quantile(runs, 0.001)
        wrong_inside = (attacked >= wrong.lo) & (attacked <= wrong.hi)
        assert int((~wrong_inside).sum()) >= 0.9 * runs


def test_rs_soundness_and_wrong_radius_fails():
    """RS on the toy metric, score range (0,1) in 10 bins. At v = 0.55 (a bin centre, 5.8 score
    stds from both edges) every certificate at eps = 0.25 is the bin [0.5, 0.6] and the exact class
    probability at the worst shift stays > 1/2. At v = 0.6 − 0.2/√d the exact robust radius is 0.2:
    the certificate for eps/2 = 0.125 is granted, and the attack with ‖δ‖ = 0.25 leaves the bin."""
    runs, eps = 200, 0.25
    rs = ig.create_defense("rs").protect(toy_metric())
    rs.seeds = list(range(runs))
    cert = rs.certify(flat(runs, 0.55), eps)
    assert not cert.abstained.any()
    assert torch.all(cert.lo == 0.5) and torch.allclose(cert.hi, torch.tensor(0.6))
    worst = 0.55 + eps / math.sqrt(D)
    p_class_worst = stats.norm.cdf((0.6 - worst) / SD) - stats.norm.cdf((0.5 - worst) / SD)
    assert p_class_worst > 0.5
    # a bound granted for a smaller eps is violated by the larger attack
    v = 0.6 - 0.2 / math.sqrt(D)
    x = flat(runs, v)
    small, right = rs.certify(x, eps / 2), rs.certify(x, eps)
    assert float((~small.abstained).float().mean()) > 0.9 and bool(right.abstained.all())
    rs.seeds = [s + 10_000 for s in range(runs)]
    attacked = rs(x + eps / math.sqrt(D))
    left = (~small.abstained) & ((attacked < small.lo) | (attacked > small.hi))
    assert int(left.sum()) >= 0.9 * int((~small.abstained).sum())


# ---------------------------------------------------------------- seeds, determinism, interface

@pytest.mark.parametrize("name", ["ms", "rs"])
def test_seeding_is_per_image(name):
    """Batch of three vs. each image alone with its seed: identical scores, bounds and noisy means."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand((3, 3, SIDE, SIDE), generator=g) * 0.5 + 0.25
    sm = ig.create_defense(name, n=200).protect(toy_metric())
    sm.seeds = [11, 22, 33]
    c = sm.certify(x, 0.1)
    sm.seeds = [11, 22, 33]
    noisy = sm.noisy(x, k=4)
    for i, s in enumerate([11, 22, 33]):
        one = ig.create_defense(name, n=200).protect(toy_metric())
        one.seeds = [s]
        ci = one.certify(x[i:i + 1], 0.1)
        assert torch.equal(ci.score, c.score[i:i + 1]) and torch.equal(ci.lo, c.lo[i:i + 1])
        assert torch.equal(ci.hi, c.hi[i:i + 1]) and torch.equal(ci.abstained, c.abstained[i:i + 1])
        one.seeds = [s]
        assert torch.equal(one.noisy(x[i:i + 1], k=4), noisy[i:i + 1])
    # chunking does not change the draws
    sm.chunk = 7
    sm.seeds = [11, 22, 33]
    assert torch.equal(sm.certify(x, 0.1).score, c.score)
    # the score equals certify's score under the same seeds; other seeds give other draws
    assert torch.equal(sm(x), c.score)
    sm.seeds = [12, 22, 33]
    assert not torch.equal(sm(x)[:1], c.score[:1])


def test_noisy_is_differentiable_and_fresh_per_call():
    sm = ig.create_defense("ms").protect(toy_metric())
    x = torch.full((2, 3, SIDE, SIDE), 0.5, requires_grad=True)
    sm.seeds = [1, 2]
    a = sm.noisy(x, k=3)
    a.sum().backward()
    # d mean / d x = 1/d per pixel (no pixel clipped at 0.5 ± a few σ)
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / D))
    b = sm.noisy(x, k=3)
    assert not torch.equal(a.detach(), b.detach())          # per-call counter: fresh draws
    sm2 = ig.create_defense("ms").protect(toy_metric())
    sm2.seeds = [1, 2]
    assert torch.equal(sm2.noisy(x, k=3).detach(), a.detach())   # but reproducible
    sm.seeds = None
    assert not torch.equal(sm.noisy(x, k=3), sm.noisy(x, k=3))   # global generator


@pytest.mark.parametrize("seeds", [[1, 2], None])
def test_common_noise_draws_the_same_noise_for_every_call(seeds):
    """Inside ``common_noise`` every ``noisy`` call draws the same noise, so two images are compared
    under common random numbers: on the linear toy metric (no pixel clipped) their difference is
    exact. The per-call count outside is not advanced by the calls inside. Without seeds the draws
    come from torch's global generator, seeded here: a draw beyond 4.08 σ clips a pixel of x + 0.01
    (about 5 % of generator states), and the test would then depend on the tests run before it."""
    torch.manual_seed(0)
    sm = ig.create_defense("ms").protect(toy_metric())
    x = torch.full((2, 3, SIDE, SIDE), 0.5)
    sm.seeds = seeds
    with sm.common_noise():
        a, b, c = sm.noisy(x, k=3), sm.noisy(x, k=3), sm.noisy(x + 0.01, k=3)
    assert torch.equal(a, b)
    torch.testing.assert_close(c - a, torch.full((2,), 0.01), atol=1e-6, rtol=0)
    assert not torch.equal(sm.noisy(x, k=3), a)       # outside: fresh draws again
    if seeds is not None:
        fresh = ig.create_defense("ms").protect(toy_metric())
        fresh.seeds = seeds
        sm.seeds = seeds
        with sm.common_noise():
            sm.noisy(x, k=3)
        assert torch.equal(sm.noisy(x, k=3), fresh.noisy(x, k=3))   # still the first counted call


class _OneLevelUp(Attack):
    """Adds one 8-bit level to every pixel: raises the toy score by 1/255 exactly."""
    threat, budget_param, budget = "l2", "eps", 1.0

    def perturb(self, metric, x, ref):
        return x + 1 / 255


def test_keep_best_on_the_eot_target_compares_under_common_noise():
    """The adaptive attack's keep-best check scores the input, the candidate and its 8-bit version on
    the EOT target (mean over 4 noise draws). A real gain of 1/255 is below the noise of one EOT-4
    estimate (σ/√d/2 = 0.0043 on the toy metric): with fresh draws per call the check discarded
    the candidates on 18 of 40 images (seeds 0–39), with common draws on none. (On iqg-cnn × ms the
    fresh-draw check discarded 8 of 20 adaptive ℓ2 PGD results.)"""
    from iqaguard.evaluation.families.certified import _EOTNoise

    x = torch.full((40, 3, SIDE, SIDE), 128 / 255)
    sm = ig.create_defense("ms").protect(toy_metric())
    sm.seeds = list(range(40))
    attack = _OneLevelUp()
    attack(_EOTNoise(sm, 4), x)
    assert bool(attack.improved.all())

    class Fresh(Metric):            # the same target without common_noise(): what the check did before
        def __init__(self, target):
            super().__init__()
            self.target = target
            self.like(target)
        def score(self, x, ref):
            return self.target(x)

    sm.seeds = list(range(40))
    attack(Fresh(_EOTNoise(sm, 4)), x)
    assert 4 <= int((~attack.improved).sum()) <= 30


def test_smoothed_metric_interface_and_forwards():
    m = ig.create_metric("iqg-cnn")
    sm = ig.create_defense("rs", n0=10, n=30).protect(m)
    assert isinstance(sm, SmoothedMetric) and isinstance(sm, Metric)
    assert (sm.mode, sm.lower_better, sm.score_range, sm.name, sm.params) == \
        (m.mode, m.lower_better, m.score_range, m.name, m.params)
    assert sm.differentiable
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    sm.seeds = [0, 1]
    cert = sm.certify(x, 0.1)
    assert isinstance(cert, Certificate)
    for t in (cert.score, cert.lo, cert.hi):
        assert t.shape == (2,) and t.dtype == torch.float32
    assert cert.abstained.shape == (2,) and cert.abstained.dtype == torch.bool
    assert sm.forwards == 2 * (10 + 30)
    assert sm(x).shape == (2,) and sm.forwards == 2 * (10 + 30 + 30)
    sm.noisy(x, k=2)
    assert sm.forwards == 2 * (10 + 30 + 30 + 2)
    sm.seeds = [1]
    with pytest.raises(InputError, match="one entry per image"):
        sm(x)


def test_abstention():
    # ms: eps beyond what n samples can bound → both sides infinite
    sm = ig.create_defense("ms").protect(toy_metric())
    sm.seeds = [0]
    c = sm.certify(flat(1, 0.5), 0.5)
    assert bool(c.abstained[0]) and c.lo[0] == -math.inf and c.hi[0] == math.inf and math.isfinite(c.score[0])
    # n = 100 bounds the median at eps = 0 but not at eps = 0.25
    sm = ig.create_defense("ms", n=100).protect(toy_metric())
    sm.seeds = [0]
    assert not bool(sm.certify(flat(1, 0.5), 0.0).abstained[0])
    assert bool(sm.certify(flat(1, 0.5), 0.25).abstained[0])
    # rs: a toy image on a bin edge has p_A ≈ 1/2 → abstain even at eps = 0
    rs = ig.create_defense("rs").protect(toy_metric())
    rs.seeds = [0]
    c = rs.certify(flat(1, 0.5), 0.0)
    assert bool(c.abstained[0]) and c.lo[0] == -math.inf and c.hi[0] == math.inf
    assert float(rs.last_radius[0]) == -1.0
    # the overflow class is certified with one infinite edge
    c = rs.certify(flat(1, 0.5), 0.0)
    rs_hi = ig.create_defense("rs").protect(ig.wrap_metric(lambda x: x.mean(dim=(1, 2, 3)) + 5,
                                                           score_range=(0.0, 1.0), name="toy-high"))
    rs_hi.seeds = [0]
    c = rs_hi.certify(flat(1, 0.5), 0.25)
    assert not bool(c.abstained[0]) and c.lo[0] == 1.0 and c.hi[0] == math.inf


# ---------------------------------------------------------------- parameters and registry

def test_registry_family_and_defaults():
    for name in CERTIFIED:
        cls = DEFENSES.factory(name)
        assert cls.family == "certified" and cls.randomized and cls.differentiable
        d = DEFENSES.defaults(name)
        assert (d["sigma"], d["n"], d["alpha"]) == (0.12, 1000, 0.001)     # the study's settings
        if name not in ("ms", "dms"):
            assert d["n0"] == 100 and d["bins"] == 10
    assert set(CERTIFIED) <= set(ig.list_defenses())
    d = ig.create_defense("ms:sigma=0.25,n=500")
    assert ig.create_defense("ms", **d.params).params == d.params


@pytest.mark.parametrize("name,bad", [
    ("rs", dict(sigma=0)), ("rs", dict(sigma=-0.1)), ("rs", dict(sigma="a")), ("rs", dict(n=0)),
    ("rs", dict(n=10.5)), ("rs", dict(n0=0)), ("rs", dict(alpha=0)), ("rs", dict(alpha=0.6)),
    ("rs", dict(bins=0)), ("ms", dict(percentile=1.0)), ("ms", dict(percentile=0)), ("ms", dict(n=True)),
    ("drs", dict(sigma=0.25)),      # the shipped DnCNN was trained at 0.12
])
def test_bad_parameters(name, bad):
    with pytest.raises(InputError, match=next(iter(bad)) if name != "drs" else "sigma"):
        ig.create_defense(name, **bad)


def test_bad_certify_arguments():
    sm = ig.create_defense("ms", n=50).protect(toy_metric())
    x = flat(1, 0.5)
    for eps in (-0.1, float("nan"), "0.1"):
        with pytest.raises(InputError, match="eps"):
            sm.certify(x, eps)
    for alpha in (0, 1, 1.5):
        with pytest.raises(InputError, match="alpha"):
            sm.certify(x, 0.1, alpha=alpha)
    with pytest.raises(InputError, match=r"\[0,1\]"):
        sm.certify(x + 1, 0.1)
    with pytest.raises(InputError, match="k must"):
        sm.noisy(x, k=0)
    with pytest.raises(InputError, match="Metric"):
        ig.create_defense("ms").protect(lambda x: x)


def test_certify_command(tmp_path):
    from iqaguard.data.bundled import load_content
    from iqaguard.defenses.certified import certify_command
    from iqaguard.images import save_png

    paths = [str(save_png(load_content(c, 64), tmp_path / f"{c}.png")) for c in ("chelsea", "coffee")]
    rows = certify_command("iqg-cnn", "ms:n=64", paths, eps=0.0, alpha=0.01, seed=3)
    assert [r["image"] for r in rows] == paths
    for r in rows:
        assert set(r) >= {"score", "lo", "hi", "abstained", "eps", "alpha", "forwards", "seconds"}
        assert r["forwards"] == 64 and r["lo"] <= r["score"] <= r["hi"] and not r["abstained"]
    alone = certify_command("iqg-cnn", "ms:n=64", paths[1:], eps=0.0, alpha=0.01, seed=3)
    assert {k: v for k, v in alone[0].items() if k != "seconds"} == \
        {k: v for k, v in rows[1].items() if k != "seconds"}
    with pytest.raises(InputError, match="not certified"):
        certify_command("iqg-cnn", "jpeg", paths, eps=0.1)
    with pytest.raises(InputError, match="at least one"):
        certify_command("iqg-cnn", "ms", [], eps=0.1)
