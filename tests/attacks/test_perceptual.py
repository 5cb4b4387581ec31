"""korhonen-et-al, zhang-et-al(-dists), ssah, madc: gains, constraints, building blocks.

Independent references: the activity mask is rebuilt with scipy.ndimage (sobel with
mode='nearest' = replicate padding, maximum_filter 5×5), the Haar LL band with a NumPy
reshape-mean (the orthonormal Haar LL of Mallat's DWT divided by 2), SSIM with scikit-image.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity
from torch import nn

import iqaguard.attacks  # noqa: F401  (registers the attacks)
from iqaguard.attacks.perceptual import RMSE_BOUND, _AdamAttack, activity_mask, haar_ll, rmse
from iqaguard.errors import InputError
from iqaguard.metrics.base import wrap_metric
from iqaguard.registry import ATTACKS, METRICS

NAMES = ("korhonen-et-al", "zhang-et-al", "ssah", "madc")


def images(n=2, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.15 + 0.7 * torch.rand(n, 3, size, size, generator=g)
    return torch.round(x * 255) / 255


class ConvEnergy(nn.Module):
    """NR, higher-better, in (0,1): sigmoid of the mean |response| of a fixed random 3×3 conv."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.register_buffer("w", torch.randn(1, 3, 3, 3, generator=g))

    def forward(self, x):
        return torch.sigmoid(torch.nn.functional.conv2d(x, self.w).abs().mean(dim=(1, 2, 3)))


def toy(lower_better=False):
    return wrap_metric(ConvEnergy(), mode="NR", lower_better=lower_better, score_range=(0.0, 1.0),
                       name="toy")


class _PlainAdam(_AdamAttack):
    """The shared Adam loop with no mask and no penalty: the unconstrained baseline."""

    def __init__(self, lr=0.005, steps=10):
        super().__init__(lr, steps, "better", None)


def sk_ssim(a, b):
    """Mean over the batch of scikit-image SSIM on HWC float images (data_range 1)."""
    out = []
    for ai, bi in zip(a, b):
        out.append(structural_similarity(ai.permute(1, 2, 0).numpy(), bi.permute(1, 2, 0).numpy(),
                                         channel_axis=2, data_range=1.0))
    return min(out)


# -- building blocks --------------------------------------------------------------------

def test_activity_mask_matches_scipy():
    x = images(2, 32, seed=1)
    got = activity_mask(x).numpy()
    for i in range(2):
        grey = x[i].mean(0).double().numpy()
        mag = np.hypot(ndimage.sobel(grey, axis=1, mode="nearest"), ndimage.sobel(grey, axis=0, mode="nearest"))
        mag /= mag.max()
        ref = ndimage.maximum_filter(mag, size=5, mode="nearest")
        np.testing.assert_allclose(got[i, 0], ref, atol=1e-5)


def test_haar_ll_matches_numpy_block_mean():
    x = images(2, 33, seed=2)  # odd size: last row/column dropped
    got = haar_ll(x).numpy()
    a = x[..., :32, :32].double().numpy()
    ll_orth = a.reshape(2, 3, 16, 2, 16, 2).sum(axis=(3, 5)) / 2.0  # orthonormal Haar LL
    np.testing.assert_allclose(got, ll_orth / 2.0, atol=1e-6)


# -- every attack --------------------------------------------------------------------------

@pytest.mark.parametrize("name,kw", [("korhonen-et-al", {}), ("zhang-et-al", {}),
                                     ("ssah", {"lr": 0.005}), ("madc", {"lr": 0.01})])
def test_gain_direction_stats(name, kw):
    metric, x = toy(), images()
    attack = ATTACKS.create(name, **kw)
    with torch.no_grad():
        s0 = metric(x)
    xa = attack(metric, x)
    assert xa.shape == x.shape and xa.min() >= 0 and xa.max() <= 1
    with torch.no_grad():
        gain = metric(xa) - s0
    assert (gain > 2e-3).all(), gain
    assert attack.stats.grad_calls == attack.steps and attack.stats.batch == 2
    assert attack.white_box
    worse = ATTACKS.create(name, direction="worse", **kw)
    with torch.no_grad():
        assert (metric(worse(metric, x)) < s0).all()
    lower = toy(lower_better=True)  # better = lower score
    with torch.no_grad():
        assert (lower(attack(lower, x)) < s0).all()


@pytest.mark.parametrize("name", NAMES)
def test_fr_metric_and_ref(name):
    """On an FR metric (SSIM, higher better) the attack passes ref through and raises the score
    above that of a slightly distorted image."""
    metric = METRICS.create("ssim")
    ref = images(1, 48, seed=4)
    x = (ref + 0.05 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    attack = ATTACKS.create(name, lr=0.005)
    with torch.no_grad():
        before = metric(x, ref)
        after = metric(attack(metric, x, ref), ref)
    assert (after > before).all()


@pytest.mark.parametrize("name", NAMES)
def test_params_round_trip(name):
    a = ATTACKS.create(name, lr=0.02, steps=3)
    b = ATTACKS.create(name, **a.params)
    assert a.params == b.params and a.params["lr"] == 0.02 and a.params["steps"] == 3
    metric, x = toy(), images(1, 32)
    assert torch.equal(a(metric, x), b(metric, x))


def test_study_defaults_from_presets():
    """"default_value" of attack_presets.json (reference study-data) and STUDY.md §2 iterations."""
    assert ATTACKS.defaults("korhonen-et-al")["lr"] == 0.005
    assert ATTACKS.defaults("zhang-et-al")["lr"] == 0.005
    assert ATTACKS.defaults("zhang-et-al-dists")["lr"] == 0.005
    assert ATTACKS.defaults("zhang-et-al-dists")["fr_metric"] == "dists"
    assert ATTACKS.defaults("zhang-et-al")["fr_metric"] == "ssim"
    assert ATTACKS.defaults("ssah")["lr"] == 0.001 and ATTACKS.defaults("ssah")["weight"] == 0.1
    assert ATTACKS.defaults("madc")["lr"] == 0.001 and ATTACKS.defaults("madc")["steps"] == 8
    assert all(ATTACKS.defaults(n)["steps"] == 10 for n in ("korhonen-et-al", "zhang-et-al", "ssah"))


@pytest.mark.parametrize("name,kw", [
    ("korhonen-et-al", {"lr": 0}), ("korhonen-et-al", {"lr": -1.0}), ("korhonen-et-al", {"steps": 0}),
    ("zhang-et-al", {"lr": float("nan")}), ("zhang-et-al", {"fr_metric": ""}),
    ("zhang-et-al", {"fr_metric": "no-such-metric"}), ("ssah", {"weight": -0.1}),
    ("ssah", {"steps": 1.5}), ("madc", {"bound": -1.0}), ("madc", {"lr": "x"}),
    ("madc", {"direction": "up"}),
])
def test_bad_params(name, kw):
    with pytest.raises(InputError):
        ATTACKS.create(name, **kw)


def test_zhang_rejects_nr_fr_metric():
    nr = [n for n in ("niqe", "brisque") if n in METRICS.names()]
    if not nr:
        pytest.skip("no NR metric registered")
    with pytest.raises(InputError, match="full-reference"):
        ATTACKS.create("zhang-et-al", fr_metric=nr[0])


# -- the constraints ---------------------------------------------------------------------

def test_korhonen_flat_half_never_moves():
    """Left half constant: Sobel is 0 there except within 1 px (Sobel) + 2 px (5×5 dilation)
    of the edge at column 32; those pixels must not change at all."""
    x = images(2, 64, seed=5)
    x[..., :32] = 0.5
    mask = activity_mask(x)
    assert (mask[..., :29] == 0).all() and (mask[..., 29:] > 0).any()
    xa = ATTACKS.create("korhonen-et-al", lr=0.05)(toy(), x)
    delta = (xa - x).abs()
    assert torch.equal(delta * (mask == 0), torch.zeros_like(delta))
    assert delta[..., 32:].max() > 0.01


def test_zhang_ssim_stays_high_and_penalty_helps():
    metric, x = toy(), images(2, 48, seed=6)
    xa = ATTACKS.create("zhang-et-al", lr=0.002)(metric, x)
    assert sk_ssim(xa, x) > 0.95  # small lr: nearly invisible (measured ≈ 0.99)
    # same lr, larger: the SSIM penalty keeps SSIM above the unconstrained Adam baseline
    za = ATTACKS.create("zhang-et-al", lr=0.02, steps=10)(metric, x)
    pa = _PlainAdam(lr=0.02)(metric, x)
    assert sk_ssim(za, x) > sk_ssim(pa, x)


def test_ssah_low_band_closer_than_plain_adam():
    metric, x = toy(), images(2, 48, seed=7)
    sa = ATTACKS.create("ssah", lr=0.02, weight=50.0)(metric, x)
    pa = _PlainAdam(lr=0.02)(metric, x)
    d_ssah = (haar_ll(sa) - haar_ll(x)).abs().mean()
    d_plain = (haar_ll(pa) - haar_ll(x)).abs().mean()
    assert d_ssah < 0.8 * d_plain


def test_madc_rmse_bound():
    metric, x = toy(), images(3, 48, seed=8)
    attack = ATTACKS.create("madc", lr=0.05)  # big steps: the bound is reached
    assert attack.threat == "l2" and attack.budget == pytest.approx(10 / 255) == RMSE_BOUND
    xa = attack(metric, x)
    r = rmse(xa, x)
    assert (r <= RMSE_BOUND + 1e-6).all() and (r > 0.9 * RMSE_BOUND).all(), r
    # as saved to 8 bit: rounding adds at most 0.5/255 RMS
    assert (rmse(attack.quantize(xa, x), x) <= RMSE_BOUND + 0.5 / 255).all()
    with torch.no_grad():
        assert (metric(xa) > metric(x)).all()
    small = ATTACKS.create("madc", lr=0.05, bound=2 / 255)(metric, x)
    assert (rmse(small, x) <= 2 / 255 + 1e-6).all()


def test_madc_linear_metric_stops_on_the_sphere():
    """Linear metric mean(w·x): ∇ = w is constant. Step 1 moves δ = lr·w/RMS(w) (RMSE lr); from
    then on ∇ is parallel to δ ∝ ∇RMSE, its tangential part is 0 and MADC stays put — the
    maximum of a linear score on the RMSE sphere (Wang & Simoncelli's extremum)."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(1, 3, 32, 32, generator=g)
    metric = wrap_metric(lambda x: (x * w).mean(dim=(1, 2, 3)), mode="NR", score_range=(-1.0, 1.0),
                         name="linear")
    x = torch.full((2, 3, 32, 32), 0.5)
    lr = 0.004
    xa = ATTACKS.create("madc", lr=lr, steps=5, bound=1.0)(metric, x)
    expected = x + lr * w / w.pow(2).mean().sqrt()
    torch.testing.assert_close(xa, expected, atol=2e-6, rtol=0)


def test_madc_tangential_steps_grow_rmse_slowly():
    """Without the bound, each later step is orthogonal to δ, so RMSE² grows by at most lr² per
    step (Pythagoras; clamping only shrinks δ): RMSE ≤ sqrt(steps)·lr."""
    metric, x = toy(), images(2, 32, seed=3)
    lr = 0.003
    xa = ATTACKS.create("madc", lr=lr, steps=6, bound=1.0)(metric, x)
    r = rmse(xa, x)
    assert (r <= 6 ** 0.5 * lr * (1 + 1e-4)).all() and (r >= lr * 0.99).all(), r


def test_batch_matches_single():
    metric, x = toy(), images(3, 32, seed=9)
    for name in NAMES:
        a = ATTACKS.create(name, lr=0.01)
        batch = a(metric, x)
        single = torch.cat([a(metric, x[i:i + 1]) for i in range(3)])
        torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)
