"""FGSM / I-FGSM / MI-FGSM / AMI-FGSM / PGD: budgets, directions, analytic optima, reference loops.

Toy metrics are built with ``wrap_metric`` so the tests exercise the attacks alone. Analytic
checks: on a linear metric ``mean(w·x)`` the ℓ∞ optimum is the box corner ``x + eps·sign(w)``
and the ℓ2 optimum (away from the [0,1] walls) is ``x + eps·w/‖w‖₂``. MI-FGSM and PGD-ℓ2 are
also compared with plain per-image NumPy loops written from the papers' equations
(Dong et al. 2018 eq. 6 with the ℓ1 *sum*; Madry et al. 2018 ℓ2 step + ball projection).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import iqaguard.attacks  # noqa: F401  (registers the attacks)
from iqaguard.attacks.budgets import budget_params
from iqaguard.errors import InputError
from iqaguard.metrics.base import wrap_metric
from iqaguard.registry import ATTACKS

LINF = ("fgsm", "ifgsm", "mifgsm", "pgd")


def images(n=3, size=24, seed=0, lo=0.0, hi=1.0):
    """8-bit images (as read from PNG) with values in [lo, hi]."""
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, 3, size, size, generator=g)
    return torch.round(x * 255) / 255


def brightness(lower_better=False):
    return wrap_metric(lambda x: x.mean(dim=(1, 2, 3)), mode="NR", lower_better=lower_better,
                       score_range=(0.0, 1.0), name="brightness")


class ConvNet(nn.Module):
    """A small fixed random CNN, NR, higher-better, output in (0,1)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(123)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x):
        return torch.sigmoid(self.net(x).mean(dim=(1, 2, 3)))


def convnet():
    return wrap_metric(ConvNet(), mode="NR", score_range=(0.0, 1.0), name="convnet")


class Wavy(nn.Module):
    """Element-wise nonlinear score with image-dependent gradient scale; reductions are per image,
    so a batch and its images one by one give bit-identical gradients."""

    def __init__(self, size):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.register_buffer("w", torch.randn(1, 3, size, size, generator=g))

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return (self.w * torch.sin(6 * x)).mean(dim=(1, 2, 3)) * (0.1 + 4 * m * m)


class Linear(nn.Module):
    def __init__(self, size, seed=3):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(1, 3, size, size, generator=g))

    def forward(self, x):
        return (self.w * x).mean(dim=(1, 2, 3))


def neg_mse_fr():
    return wrap_metric(lambda x, ref: -((x - ref) ** 2).mean(dim=(1, 2, 3)), mode="FR",
                       score_range=(-1.0, 0.0), name="neg_mse")


def linf(a, b):
    return float((a - b).abs().max())


# -- budget ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", LINF)
@pytest.mark.parametrize("eps", [4 / 255, 0.01, 10 / 255])
def test_linf_budget_after_quantisation(name, eps):
    x = images()
    m = convnet()
    a = ATTACKS.create(name, eps=eps)
    x_adv = a(m, x)
    assert x_adv.shape == x.shape and x_adv.dtype == torch.float32
    assert linf(x_adv, x) <= eps + 1e-6
    q = a.quantize(x_adv, x)
    # on the 8-bit grid (quantize_within's one-level step back is k/255 − 1/255, exact to ~1 ulp)
    assert float((q * 255 - torch.round(q * 255)).abs().max()) < 1e-4
    assert float(q.min()) >= 0 and float(q.max()) <= 1
    assert linf(q, x) <= eps + 1e-6
    # the attack uses its budget: the largest move is eps (up to 8-bit rounding after quantisation)
    assert linf(x_adv, x) >= eps - 1e-6
    assert a.threat == "linf" and a.budget == pytest.approx(eps)


def test_fgsm_uses_full_budget_where_not_clipped():
    x = images(lo=0.1, hi=0.9)
    eps = 4 / 255
    x_adv = ATTACKS.create("fgsm", eps=eps)(brightness(), x)
    torch.testing.assert_close(x_adv - x, torch.full_like(x, eps), atol=1e-6, rtol=0)


# -- direction / target --------------------------------------------------------------------

@pytest.mark.parametrize("name", LINF + ("pgd-l2",))
def test_direction_better_and_worse(name):
    kw = {"norm": "l2", "eps": 0.5} if name == "pgd-l2" else {}
    base = "pgd" if name == "pgd-l2" else name
    x = images()
    for metric in (convnet(), brightness(), brightness(lower_better=True)):
        s0 = metric(x)
        up = metric(ATTACKS.create(base, **kw)(metric, x))
        down = metric(ATTACKS.create(base, direction="worse", **kw)(metric, x))
        if metric.lower_better:
            assert (up < s0).all() and (down > s0).all()
        else:
            assert (up > s0).all() and (down < s0).all()


@pytest.mark.parametrize("name", LINF)
def test_fr_metric_moves_toward_better(name):
    ref = images(seed=1)
    x = images(seed=2)
    m = neg_mse_fr()
    a = ATTACKS.create(name)
    x_adv = a(m, x, ref)
    assert (m(x_adv, ref) > m(x, ref)).all()
    assert linf(x_adv, x) <= a.eps + 1e-6


def test_target_pulls_score_to_value():
    x = images(lo=0.2, hi=0.8)
    m = brightness()
    s0 = m(x)
    t = float(s0.mean()) + 0.02  # reachable: ifgsm moves brightness by alpha per step, up to 10/255
    a = ATTACKS.create("ifgsm", target=t)
    s = m(a(m, x))
    # signed steps of alpha=1/255 on every pixel: the score ends within one step of the target
    assert ((s - t).abs() <= 1 / 255 + 1e-6).all()
    assert ((s - t).abs() < (s0 - t).abs()).all()


# -- analytic and reference checks -----------------------------------------------------------

def test_ifgsm_single_full_step_equals_fgsm():
    x = images()
    m = convnet()
    for eps in (4 / 255, 0.01):
        a = ATTACKS.create("ifgsm", eps=eps, alpha=eps, steps=1)(m, x)
        b = ATTACKS.create("fgsm", eps=eps)(m, x)
        assert torch.equal(a, b)


def test_pgd_linf_reaches_box_corner_on_linear_metric():
    x = images(size=16)
    lin = Linear(16)
    eps = 6 / 255
    a = ATTACKS.create("pgd", eps=eps, random_start=False)
    x_adv = a(wrap_metric(lin), x)
    corner = (x + eps * torch.sign(lin.w)).clamp(0, 1)
    torch.testing.assert_close(x_adv, corner, atol=1e-7, rtol=0)
    # lower-better linear metric: the opposite corner
    x_adv = a(wrap_metric(lin, lower_better=True), x)
    torch.testing.assert_close(x_adv, (x - eps * torch.sign(lin.w)).clamp(0, 1), atol=1e-7, rtol=0)


def test_pgd_l2_reaches_ball_optimum_on_linear_metric():
    x = images(size=16, lo=0.4, hi=0.6)  # far from the walls: the box constraint is inactive
    lin = Linear(16)
    eps = 0.5
    a = ATTACKS.create("pgd", norm="l2", eps=eps, random_start=False)
    x_adv = a(wrap_metric(lin), x)
    w = lin.w / lin.w.norm()
    torch.testing.assert_close(x_adv, x + eps * w, atol=1e-6, rtol=0)
    assert a.threat == "l2" and a.budget == eps


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_l2_respects_ball(random_start):
    x = images()
    eps = 0.3
    a = ATTACKS.create("pgd", norm="l2", eps=eps, random_start=random_start, seed=1)
    x_adv = a(convnet(), x)
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert (norms <= eps * (1 + 1e-5)).all()
    assert (norms >= 0.9 * eps).all()  # 10 steps of 2.5·eps/10 reach the sphere
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1


def _wavy_grad_np(w, x):
    """d/dx of Wavy (higher-better, range width 1), written out by hand for the reference loops."""
    n = x.size
    m = x.mean()
    a = (w * np.sin(6 * x)).mean()
    return (w * 6 * np.cos(6 * x) / n) * (0.1 + 4 * m * m) + a * 8 * m / n


def test_mifgsm_matches_reference_loop():
    size, eps, alpha, steps, decay = 12, 10 / 255, 1 / 255, 10, 0.9
    x = images(n=3, size=size)
    x[2] = x[2] * 0.3  # different gradient scale per image: catches batch-wide normalisation
    wavy = Wavy(size)
    out = ATTACKS.create("mifgsm", eps=eps, alpha=alpha, steps=steps, decay=decay)(wrap_metric(wavy), x)
    w = wavy.w[0].double().numpy()
    for i in range(x.shape[0]):
        x0 = x[i].double().numpy()
        xa, g = x0.copy(), np.zeros_like(x0)
        for _ in range(steps):
            grad = _wavy_grad_np(w, xa)
            g = decay * g + grad / np.abs(grad).sum()  # Dong et al. 2018, eq. 6
            xa = np.clip(np.clip(xa + alpha * np.sign(g), x0 - eps, x0 + eps), 0, 1)
        np.testing.assert_allclose(out[i].double().numpy(), xa, atol=1e-6, rtol=0)


def test_pgd_l2_matches_reference_loop():
    size, eps, steps = 12, 0.4, 7
    x = images(n=2, size=size)
    wavy = Wavy(size)
    out = ATTACKS.create("pgd", norm="l2", eps=eps, steps=steps, random_start=False)(wrap_metric(wavy), x)
    alpha = 2.5 * eps / steps
    w = wavy.w[0].double().numpy()
    for i in range(x.shape[0]):
        x0 = x[i].double().numpy()
        xa = x0.copy()
        for _ in range(steps):
            grad = _wavy_grad_np(w, xa)
            d = xa + alpha * grad / np.linalg.norm(grad) - x0
            d *= min(1.0, eps / np.linalg.norm(d))
            xa = np.clip(x0 + d, 0, 1)
        np.testing.assert_allclose(out[i].double().numpy(), xa, atol=1e-5, rtol=0)


# -- reproducibility, cost, batches ----------------------------------------------------------

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_seeded_pgd_reproducible(norm):
    x = images()
    m = convnet()
    eps = 8 / 255 if norm == "linf" else 0.5
    # one tiny step: the output is dominated by the random start (keeps_best off: the base
    # class would return x for images where the random start scores below clean)
    def mk(seed, **kw):
        a = ATTACKS.create("pgd", norm=norm, eps=eps, steps=1, alpha=1e-4, seed=seed, **kw)
        a.keeps_best = False
        return a
    a, b, c = mk(5)(m, x), mk(5)(m, x), mk(6)(m, x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    nostart = mk(None, random_start=False)(m, x)
    moved = linf(a, nostart) if norm == "linf" else float((a - nostart).flatten(1).norm(dim=1).min())
    assert moved > eps / 2
    # seed=None draws from torch's global generator
    torch.manual_seed(11)
    d = mk(None)(m, x)
    torch.manual_seed(11)
    assert torch.equal(d, mk(None)(m, x))


@pytest.mark.parametrize("name,kw,calls", [
    ("fgsm", {}, 1),
    ("ifgsm", {"steps": 7}, 7),
    ("mifgsm", {"steps": 4}, 4),
    ("pgd", {"steps": 3}, 3),
    ("pgd", {"steps": 5, "norm": "l2", "eps": 0.5}, 5),
])
def test_grad_calls(name, kw, calls):
    x = images(n=2)
    a = ATTACKS.create(name, **kw)
    a(convnet(), x)
    assert a.stats.grad_calls == calls
    assert a.stats.batch == 2 and a.stats.queries == 3 * 2   # the base class's final check


@pytest.mark.parametrize("name,kw", [
    ("fgsm", {}),
    ("ifgsm", {}),
    ("mifgsm", {}),
    ("pgd", {"random_start": False}),
    ("pgd", {"random_start": False, "norm": "l2", "eps": 0.5}),
])
def test_batch_equals_one_by_one(name, kw):
    size = 16
    x = images(n=4, size=size)
    x[1] = x[1] * 0.2
    m = wrap_metric(Wavy(size))
    a = ATTACKS.create(name, **kw)
    batch = a(m, x)
    single = torch.cat([a(m, x[i:i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(batch, single, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name,kw", [(n, {}) for n in LINF] + [("pgd", {"norm": "l2", "eps": 0.5})])
def test_sum_metric_with_expanded_gradient(name, kw):
    # d(sum x)/dx comes back from autograd as a stride-0 expanded view: no in-place ops on it
    m = wrap_metric(lambda x: x.sum(dim=(1, 2, 3)), score_range=(0.0, 3 * 8 * 8))
    x = images(n=2, size=8, lo=0.1, hi=0.9)
    assert (m(ATTACKS.create(name, **kw)(m, x)) > m(x)).all()


def test_non_square_image_and_batch_of_one():
    x = images(n=1, size=20)[:, :, :, :13].contiguous()
    for name in LINF:
        x_adv = ATTACKS.create(name)(convnet(), x)
        assert x_adv.shape == x.shape


# -- errors and params -----------------------------------------------------------------------

@pytest.mark.parametrize("name", LINF)
def test_bad_input(name):
    a = ATTACKS.create(name)
    x = images(n=1)
    with pytest.raises(InputError, match="float32"):
        a(convnet(), x.double())
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        a(convnet(), bad)
    with pytest.raises(InputError, match="ref"):
        a(neg_mse_fr(), x)
    nondiff = wrap_metric(lambda x: x.mean(dim=(1, 2, 3)), differentiable=False, name="nd")
    with pytest.raises(InputError, match="differentiable"):
        a(nondiff, x)


@pytest.mark.parametrize("name,kw", [
    ("fgsm", {"eps": -0.1}), ("ifgsm", {"eps": -1 / 255}), ("ifgsm", {"steps": 0}),
    ("ifgsm", {"alpha": -0.01}), ("mifgsm", {"steps": 0}), ("mifgsm", {"decay": -1.0}),
    ("pgd", {"eps": -0.5}), ("pgd", {"steps": 0}), ("pgd", {"norm": "l1"}),
    ("pgd", {"steps": 2.5}), ("pgd", {"seed": "x"}), ("fgsm", {"direction": "up"}),
    ("ifgsm", {"eps": float("nan")}),
])
def test_bad_params(name, kw):
    with pytest.raises(InputError):
        ATTACKS.create(name, **kw)


@pytest.mark.parametrize("name,kw", [
    ("fgsm", {"eps": 0.01, "direction": "worse"}),
    ("ifgsm", {"alpha": 2 / 255, "target": 0.3}),
    ("mifgsm", {"decay": 0.5, "steps": 3}),
    ("pgd", {"norm": "l2", "eps": 0.5, "seed": 3, "random_start": False}),
    ("pgd", {}),
])
def test_params_round_trip(name, kw):
    a = ATTACKS.create(name, **kw)
    b = ATTACKS.create(name, **a.params)
    assert a.params == b.params
    for key, value in a.params.items():
        assert getattr(a, key) == value == getattr(b, key)


# -- budgets table -------------------------------------------------------------------------------

def test_budget_params():
    for name in LINF:
        assert budget_params(name, "low") == {"eps": 2 / 255}
        assert budget_params(name, "medium") == {"eps": 4 / 255}
        assert budget_params(name, "high") == {"eps": 8 / 255}
    assert budget_params("pgd:norm=linf", "high") == budget_params("pgd", "high")
    assert budget_params("pgd:norm=l2", "medium") == {"norm": "l2", "eps": 0.5}
    a = ATTACKS.create("pgd", **budget_params("pgd:norm=l2", "high"))
    assert a.threat == "l2" and a.budget == 1.0
    assert ATTACKS.create("ifgsm", **budget_params("ifgsm", "low")).budget == pytest.approx(2 / 255)
    p = budget_params("fgsm", "low")
    p["eps"] = 1.0  # callers get a copy
    assert budget_params("fgsm", "low") == {"eps": 2 / 255}
    with pytest.raises(InputError, match="level"):
        budget_params("ifgsm", "extreme")
    with pytest.raises(InputError, match="no budget presets"):
        budget_params("nonexistent-attack", "low")


# -- AMI-FGSM ------------------------------------------------------------------------------------

def _niqe(x, patch):
    from iqaguard.registry import METRICS
    with torch.no_grad():
        return METRICS.create("niqe", patch_size=patch)(x)


def test_amifgsm_matches_reference_loop():
    # MSU benchmark's AMI-FGSM: eps = K/NIQE(x) per image, alpha = eps/T, g ← ν·g + ∇ (raw
    # gradient), x ← clip_{x,eps}(x + alpha·sign(g)), clipped to [0,1]
    size, K, steps, decay, patch = 48, 0.2, 10, 0.8, 16
    x = images(n=3, size=size)
    x[2] = x[2] * 0.3  # another NIQE and another gradient scale
    wavy = Wavy(size)
    a = ATTACKS.create("amifgsm", K=K, steps=steps, decay=decay, niqe_patch=patch)
    out = a(wrap_metric(wavy), x)
    q = _niqe(x, patch).double().numpy()
    eps = np.minimum(K / q, 1.0)
    assert len(set(np.round(eps, 6))) == 3 and (eps > 0).all()
    np.testing.assert_allclose(a.radius(x).double().numpy(), eps, rtol=1e-6)
    w = wavy.w[0].double().numpy()
    for i in range(x.shape[0]):
        x0 = x[i].double().numpy()
        xa, g = x0.copy(), np.zeros_like(x0)
        for _ in range(steps):
            g = decay * g + _wavy_grad_np(w, xa)
            xa = np.clip(np.clip(xa + eps[i] / steps * np.sign(g), x0 - eps[i], x0 + eps[i]), 0, 1)
        np.testing.assert_allclose(out[i].double().numpy(), xa, atol=1e-5, rtol=0)
    assert a.stats.grad_calls == steps


def test_amifgsm_budget_after_quantisation():
    x = images(n=2, size=96)
    x = torch.cat([x, x.flip(3)], dim=3)  # 96×192: two published 96-px NIQE patches
    x[1] = 0.5 + 0.2 * (x[1] - 0.5)
    a = ATTACKS.create("amifgsm", K=0.1)
    a.keeps_best = False          # the raw iterate: each image moves by its full radius
    x_adv = a(convnet(), x)
    eps = a.radius(x)
    torch.testing.assert_close(eps, 0.1 / _niqe(x, 96), rtol=1e-5, atol=0)
    move = (x_adv - x).abs().amax(dim=(1, 2, 3))
    assert (move <= eps + 1e-6).all() and (move >= eps - 1e-6).all()  # uses its own budget
    q = a.quantize(x_adv, x)
    assert float((q * 255 - torch.round(q * 255)).abs().max()) < 1e-4
    assert ((q - x).abs().amax(dim=(1, 2, 3)) <= eps + 1e-6).all()
    assert a.budget == pytest.approx(float(eps.max()))
    # quantize on another batch recomputes that batch's radii
    q2 = a.quantize(x_adv[:1], x[:1] * 0.9)
    assert ((q2 - 0.9 * x[:1]).abs().amax() <= a.radius(x[:1] * 0.9) + 1e-6).all()


def test_amifgsm_raises_shipped_metric_score():
    from iqaguard.data.bundled import CONTENTS, load_content
    import iqaguard
    x = torch.cat([load_content(c, 192)[:, :, :96, :] for c in list(CONTENTS)[:2]])  # 96×192
    m = iqaguard.create_metric("iqg-cnn")
    a = ATTACKS.create("amifgsm", steps=5, **budget_params("amifgsm", "medium"))
    x_adv = a(m, x)
    gain = (m(a.quantize(x_adv, x)) - m(x)) / m.range_width
    assert (gain > 0).all()
    down = ATTACKS.create("amifgsm", steps=5, direction="worse", **budget_params("amifgsm", "medium"))
    assert (m(down(m, x)) < m(x)).all()


def test_amifgsm_small_image_fits_niqe_patch():
    """Images under 96×192 px get the largest even NIQE patch that gives two patches (24×24 →
    12 px), so the default works; the radius equals the one of an explicit niqe_patch=12."""
    x = images(n=1, size=24)
    a = ATTACKS.create("amifgsm")
    assert a.fitted_patch(24, 24) == 12 and a.fitted_patch(96, 192) == 96 and a.fitted_patch(64, 64) == 32
    assert a(convnet(), x).shape == x.shape
    torch.testing.assert_close(a.radius(x), ATTACKS.create("amifgsm", niqe_patch=12).radius(x))
    with pytest.raises(InputError, match="8×16"):
        a.fitted_patch(6, 40)


@pytest.mark.parametrize("kw", [{"K": -0.1}, {"K": "a"}, {"K": float("inf")}, {"steps": 0},
                                {"decay": -1.0}, {"niqe_patch": 6}, {"niqe_patch": 17},
                                {"direction": "up"}])
def test_amifgsm_bad_params(kw):
    with pytest.raises(InputError):
        ATTACKS.create("amifgsm", **kw)


def test_amifgsm_params_round_trip_and_presets():
    a = ATTACKS.create("amifgsm", K=0.3, steps=4, decay=0.5, niqe_patch=32, direction="worse")
    b = ATTACKS.create("amifgsm", **a.params)
    assert a.params == b.params == {"K": 0.3, "steps": 4, "decay": 0.5, "niqe_patch": 32,
                                    "direction": "worse", "target": None}
    assert ATTACKS.create("amifgsm").params["K"] == 0.5  # the study's default (attack_presets.json)
    ks = [budget_params("amifgsm", lv)["K"] for lv in ("low", "medium", "high")]
    assert ks == pytest.approx([3.65 * e / 255 for e in (2, 4, 8)], rel=2e-3)
