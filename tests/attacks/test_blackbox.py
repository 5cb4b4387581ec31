"""Black-box ℓ∞ attacks (square-attack, parsimonious, grad-est): budgets, query counts, no
gradient use, analytic optima on linear metrics, and the published Square Attack schedule.

Analytic checks: on a linear metric ``mean(w·x)`` every single-block flip is independent, so a
full parsimonious pass at block size 1 reaches the ℓ∞ optimum ``x + eps·sign(w)`` exactly; the
NES estimate of a linear metric converges to the (tile-summed) gradient, so its sign agrees with
``sign(w)`` on most pixels (expected cosine ≈ sqrt(P/(P+d)) for P probes in d dimensions,
Ilyas et al. 2018 / Nesterov & Spokoiny 2017).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import iqaguard.attacks  # noqa: F401  (registers the attacks)
from iqaguard.attacks.blackbox import _square_p
from iqaguard.errors import InputError
from iqaguard.metrics.base import wrap_metric
from iqaguard.registry import ATTACKS

BLACKBOX = ("square-attack", "parsimonious", "grad-est")
SMALL = {"square-attack": dict(n_queries=300, seed=0),
         "parsimonious": dict(n_queries=60, block_size=8, seed=0),
         "grad-est": dict(steps=3, pairs=10, seed=0)}
# the attack's own queries + 3 per image for the base class's final comparison (input, candidate,
# 8-bit candidate; attacks/base.py)
EXPECTED_QUERIES = {"square-attack": 300 + 3, "parsimonious": 60 + 3, "grad-est": 2 * 10 * 3 + 1 + 3}


def images(n=2, size=32, seed=0, lo=0.0, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, 3, size, size, generator=g)
    return torch.round(x * 255) / 255


class ConvNet(nn.Module):
    """Fixed random 3×3 conv response, NR, higher-better, output in (0,1)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(123)
        self.register_buffer("k", torch.randn(1, 3, 3, 3, generator=g))

    def forward(self, x):
        return torch.sigmoid(4 * torch.nn.functional.conv2d(x - 0.5, self.k, padding=1).mean(dim=(1, 2, 3)))


def convnet():
    return wrap_metric(ConvNet(), mode="NR", score_range=(0.0, 1.0), name="convnet")


class Linear(nn.Module):
    def __init__(self, size, seed=3):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(1, 3, size, size, generator=g))

    def forward(self, x):
        return (self.w * x).mean(dim=(1, 2, 3))


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("this metric has no gradient")


def no_grad_metric():
    def score(x):
        assert not torch.is_grad_enabled(), "black-box attack queried with autograd enabled"
        return torch.sigmoid(_NoBackward.apply(x).mean(dim=(1, 2, 3)) * 4 - 2)
    return wrap_metric(score, mode="NR", score_range=(0.0, 1.0), differentiable=False, name="nograd")


def gain(attack, metric, x, ref=None):
    with torch.no_grad():
        s = metric(x) if ref is None else metric(x, ref)
    return attack.gain(metric, s)


@pytest.mark.parametrize("name", BLACKBOX)
def test_raises_score_within_linf_budget_and_counts_queries(name):
    x = images()
    metric = convnet()
    attack = ATTACKS.create(name, eps=8 / 255, **SMALL[name])
    assert attack.white_box is False and attack.threat == "linf"
    adv = attack(metric, x)
    q = attack.quantize(adv, x)
    assert (q - x).abs().max() <= 8 / 255 + 1e-6
    assert q.min() >= 0 and q.max() <= 1
    improvement = gain(attack, metric, q) - gain(attack, metric, x)
    assert (improvement > 1e-3).all(), improvement
    assert attack.stats.queries == EXPECTED_QUERIES[name] * x.shape[0]
    assert attack.stats.grad_calls == 0 and attack.stats.batch == 2


@pytest.mark.parametrize("name", BLACKBOX)
def test_params_round_trip_and_seed_reproducible(name):
    attack = ATTACKS.create(name, **SMALL[name])
    again = ATTACKS.create(name, **attack.params)
    assert again.params == attack.params
    assert attack.eps == pytest.approx(4 / 255)  # the study's middle ℓ∞ level
    x, metric = images(n=1, size=16), convnet()
    assert torch.equal(attack(metric, x), again(metric, x))


@pytest.mark.parametrize("name", BLACKBOX)
def test_metric_without_gradient_works(name):
    x = images(n=2, size=16, lo=0.2, hi=0.8)
    metric = no_grad_metric()
    attack = ATTACKS.create(name, eps=4 / 255, **SMALL[name])
    adv = attack(metric, x)
    assert (gain(attack, metric, adv) > gain(attack, metric, x)).all()
    assert attack.stats.queries > 0


@pytest.mark.parametrize("name", BLACKBOX)
def test_full_reference_metric_and_worse_direction(name):
    x = images(n=2, size=16, seed=1, lo=0.3, hi=0.7)
    ref = images(n=2, size=16, seed=2, lo=0.3, hi=0.7)
    metric = wrap_metric(lambda a, b: -((a - b) ** 2).mean(dim=(1, 2, 3)), mode="FR",
                         score_range=(-1.0, 0.0), name="neg_mse")
    attack = ATTACKS.create(name, eps=8 / 255, **SMALL[name])
    adv = attack(metric, x, ref)
    assert (gain(attack, metric, adv, ref) > gain(attack, metric, x, ref)).all()
    with pytest.raises(InputError):
        attack(metric, x)
    worse = ATTACKS.create(name, eps=8 / 255, direction="worse", **SMALL[name])
    nr = convnet()
    adv = worse(nr, x)
    assert (nr(adv) < nr(x)).all()


@pytest.mark.parametrize("name,bad", [
    ("square-attack", dict(eps=-1)), ("square-attack", dict(n_queries=0)),
    ("square-attack", dict(p_init=0)), ("square-attack", dict(p_init=1.5)),
    ("square-attack", dict(seed=1.5)), ("parsimonious", dict(block_size=0)),
    ("parsimonious", dict(n_queries=2.5)), ("parsimonious", dict(eps="a")),
    ("grad-est", dict(sigma=0)), ("grad-est", dict(tile=0)), ("grad-est", dict(pairs=True)),
    ("grad-est", dict(steps=0)), ("grad-est", dict(eta=-0.1)), ("grad-est", dict(direction="up")),
])
def test_bad_params(name, bad):
    with pytest.raises(InputError):
        ATTACKS.create(name, **bad)


def test_square_schedule_matches_paper():
    # Andriushchenko et al. 2020 (App. A): p halves at iterations 10, 50, 200, 500, 1000, 2000,
    # 4000, 6000, 8000 of a 10,000-iteration run; other budgets rescale the iteration index.
    expect = {0: 0.05, 10: 0.05, 11: 0.025, 51: 0.0125, 201: 0.05 / 8, 501: 0.05 / 16,
              1001: 0.05 / 32, 2001: 0.05 / 64, 4001: 0.05 / 128, 6001: 0.05 / 256, 8001: 0.05 / 512,
              9999: 0.05 / 512}
    for it, p in expect.items():
        assert _square_p(0.05, it, 10000) == pytest.approx(p)
    assert _square_p(0.05, 5, 1000) == pytest.approx(0.025)  # 5/1000 -> 50/10000
    assert _square_p(0.05, 6, 1000) == pytest.approx(0.0125)  # 6/1000 -> 60/10000


def test_square_starts_from_x_and_accepts_only_improvements():
    """The study's square-attack/run.py starts from x (not the paper's stripes): with one query
    (the initial score) the result is x itself; later candidates are kept only if they improve."""
    x = torch.full((1, 3, 16, 16), 0.5)
    metric = wrap_metric(Linear(16), mode="NR", score_range=(-1.0, 1.0), name="linear")
    init = ATTACKS.create("square-attack", eps=0.1, n_queries=1, seed=3)(metric, x)
    assert torch.equal(init, x)
    attack = ATTACKS.create("square-attack", eps=0.1, n_queries=300, seed=3)
    adv = attack(metric, x)
    assert gain(attack, metric, adv) > gain(attack, metric, x) + 1e-3
    d = adv - x
    assert ((d.abs() < 1e-6) | ((d.abs() - 0.1).abs() < 1e-6)).all()   # window values x ± eps


def test_parsimonious_reaches_linear_optimum():
    size = 8
    x = images(n=2, size=size, lo=0.2, hi=0.8)
    lin = Linear(size)
    metric = wrap_metric(lin, mode="NR", score_range=(-1.0, 1.0), name="linear")
    # one pass over 3·8·8 pixel blocks + the initial query: every flip is decided independently
    attack = ATTACKS.create("parsimonious", eps=0.05, block_size=1, n_queries=3 * size * size + 1, seed=1)
    adv = attack(metric, x)
    assert torch.allclose(adv, x + 0.05 * lin.w.sign(), atol=1e-6)


def test_parsimonious_refines_block_grid():
    # a 32 px budget at block 8 has 3·16 = 48 blocks; queries beyond 49 run at block 4, so the
    # perturbation is no longer constant on 8×8 blocks but always on 4×4 ones.
    x = images(n=1, size=32, lo=0.2, hi=0.8)
    attack = ATTACKS.create("parsimonious", eps=0.05, block_size=8, n_queries=49 + 150, seed=0)
    metric = wrap_metric(Linear(32), mode="NR", score_range=(-1.0, 1.0), name="linear")
    d = attack(metric, x) - x
    blocks4 = d.unfold(2, 4, 4).unfold(3, 4, 4)
    assert torch.allclose(blocks4, blocks4[..., :1, :1].expand_as(blocks4), atol=1e-6)
    assert torch.allclose(d.abs(), torch.full_like(d, 0.05), atol=1e-6)
    blocks8 = d.unfold(2, 8, 8).unfold(3, 8, 8)
    assert not torch.allclose(blocks8, blocks8[..., :1, :1].expand_as(blocks8), atol=1e-6)


def test_grad_est_normalised_step_follows_linear_gradient_and_tiles():
    """The study's grad-est/run.py step: eta·ĝ/‖ĝ‖₂ with ĝ and its norm on the tile. With tile 8
    on 16 px, ĝ estimates the gradient summed over the 4 tile copies; one step inside a wide box
    moves the tile by exactly eta in ℓ2 along ĝ, and the change is periodic with period 8."""
    size, tile = 16, 8
    x = torch.full((1, 3, size, size), 0.5)
    lin = Linear(size)
    metric = wrap_metric(lin, mode="NR", score_range=(-1.0, 1.0), name="linear")
    attack = ATTACKS.create("grad-est", eps=0.5, tile=tile, pairs=1600, steps=1, eta=0.1, seed=0)
    adv = attack(metric, x)
    d = adv - x
    assert torch.equal(d[..., :tile, :tile], d[..., tile:, tile:])
    assert float(d[..., :tile, :tile].norm()) == pytest.approx(0.1, rel=1e-5)
    w_tiled = lin.w.unfold(2, tile, tile).unfold(3, tile, tile).sum(dim=(2, 3))
    cos = torch.nn.functional.cosine_similarity(d[..., :tile, :tile].flatten(), w_tiled.flatten(), dim=0)
    # 1600 antithetic directions in 192 dims: expected cosine ≈ sqrt(P/(P+d)) = sqrt(1600/1792) ≈ 0.94
    assert cos > 0.85, cos


def test_grad_est_gains_at_defaults_inside_small_box():
    """At its default parameters (eta 0.1 > 2·eps) the normalised step still moves inside the
    4/255 box instead of jumping to a corner, and raises a smooth score."""
    x = images(n=1, size=32, lo=0.2, hi=0.8)
    metric = convnet()
    attack = ATTACKS.create("grad-est", steps=5, seed=0)
    adv = attack(metric, x)
    d = (adv - x).abs()
    assert d.max() <= 4 / 255 + 1e-6
    assert (d > 0).float().mean() > 0.5 and (d < 4 / 255 - 1e-4).float().mean() > 0.3   # not all corners
    assert gain(attack, metric, adv) > gain(attack, metric, x)
