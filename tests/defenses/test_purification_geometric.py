"""flip, random-crop, random-rotate and unsharp: the checklist for random-crop (it changes the size,
so it is not in test_purification.py's list), seed semantics of the two random ones, and each one
against an independent implementation (numpy, Pillow, scipy.ndimage, scikit-image)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage.filters import unsharp_mask

import iqaguard.defenses  # noqa: F401  (registers the defenses)
from iqaguard.defenses.base import Purifier
from iqaguard.defenses.presets import presets
from iqaguard.errors import InputError
from iqaguard.metrics.base import Metric, wrap_metric
from iqaguard.registry import DEFENSES


def image(n=2, h=40, w=52, seed=0, texture=0.08) -> torch.Tensor:
    """Smooth content plus texture (the same recipe as test_purification.py)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([0.5 + 0.4 * torch.sin(6 * xx + c + 3 * yy) for c in range(3)])
    return (base[None] + texture * torch.randn((n, 3, h, w), generator=g)).clamp(0, 1).float()


def create(name, **params) -> Purifier:
    return DEFENSES.create(name, **params)


def _nr_metric():
    return wrap_metric(lambda t: (t * torch.arange(1, 4).view(1, 3, 1, 1)).mean((1, 2, 3)), mode="NR")


def _fr_metric():
    return wrap_metric(lambda t, r: ((t - r) ** 2).mean((1, 2, 3)), mode="FR", lower_better=True)


BAD_PARAMS = [
    ("flip", "kernel_size", 3),   # flip has no parameters: unknown names are listed
    ("random-crop", "size", 0), ("random-crop", "size", -8), ("random-crop", "size", 12.5),
    ("random-crop", "size", True), ("random-crop", "size", "128"),
    ("random-rotate", "angle_limit", -1), ("random-rotate", "angle_limit", 181),
    ("random-rotate", "angle_limit", float("nan")), ("random-rotate", "angle_limit", "15"),
    ("unsharp", "kernel_size", 4), ("unsharp", "kernel_size", 0), ("unsharp", "kernel_size", 5.0),
    ("unsharp", "amount", -0.5), ("unsharp", "amount", float("inf")), ("unsharp", "amount", "1"),
]


@pytest.mark.parametrize("name,param,value", BAD_PARAMS)
def test_bad_params(name, param, value):
    with pytest.raises(InputError, match=param):
        create(name, **{param: value})


@pytest.mark.parametrize("name,params", [("flip", {}), ("random-crop", {"size": 64}),
                                         ("random-rotate", {"angle_limit": 30}),
                                         ("unsharp", {"kernel_size": 7, "amount": 0.5})])
def test_params_round_trip(name, params):
    d = create(name, **params)
    assert d.params == {**DEFENSES.defaults(name), **params}
    d2 = create(name, **d.params)
    assert d2.params == d.params
    x = image(1, 80, 90)
    assert torch.equal(d.purify(x, [3]), d2.purify(x, [3]))


def test_defaults_are_the_study_defaults():
    assert DEFENSES.defaults("random-crop") == {"size": 128}
    assert DEFENSES.defaults("random-rotate") == {"angle_limit": 15}
    assert DEFENSES.defaults("unsharp") == {"kernel_size": 5, "amount": 1.0}
    assert DEFENSES.defaults("flip") == {}
    for name in ("random-crop", "random-rotate", "unsharp"):
        x = image(1, 64, 64)
        for p in presets(name):  # every preset runs, including crops larger than the image
            y = create(name, **p).purify(x, [0])
            assert y.dtype == torch.float32 and 0 <= float(y.min()) and float(y.max()) <= 1


# ---------------------------------------------------------------- flip

def test_flip_is_a_180_degree_rotation():
    x = image(2, 9, 13)
    d = create("flip")
    assert d.differentiable and not d.randomized and not d.changes_size
    y = d.purify(x)
    np.testing.assert_array_equal(y.numpy(), np.rot90(x.numpy(), 2, axes=(2, 3)))
    assert torch.equal(d.purify(y), x)  # an involution
    x.requires_grad_(True)
    w = torch.rand_like(x)
    (d.estimate_forward(x) * w).sum().backward()
    assert torch.equal(x.grad, torch.flip(w, (2, 3)))  # the gradient is the flipped weight


# ---------------------------------------------------------------- random-crop: checklist

def _offset(big: torch.Tensor, small: torch.Tensor) -> tuple[int, int]:
    """Where ``small`` (C×h×w) sits in ``big`` (C×H×W); asserts it sits exactly once."""
    h, w = small.shape[-2:]
    hits = [(t, l) for t in range(big.shape[-2] - h + 1) for l in range(big.shape[-1] - w + 1)
            if torch.equal(big[:, t:t + h, l:l + w], small)]
    assert len(hits) == 1, hits
    return hits[0]


def test_random_crop_shape_range_dtype():
    d = create("random-crop", size=16)
    assert d.changes_size and d.randomized and d.differentiable and d.family == "purification"
    x = image(3, 37, 53)
    y = d.purify(x, [1, 2, 3])
    assert y.shape == (3, 3, 16, 16) and y.dtype == torch.float32
    for i in range(3):  # each output is a window of its own input
        _offset(x[i], y[i])


def test_random_crop_smaller_image_is_clipped():
    """The study's torchvision RandomCrop raises on a too-small image; we crop min(size, side)."""
    x = image(1, 40, 200)
    y = create("random-crop", size=128).purify(x, [0])
    assert y.shape == (1, 3, 40, 128)
    _offset(x[0], y[0])
    small = image(1, 40, 52)
    assert torch.equal(create("random-crop", size=128).purify(small, [0]), small)


def test_random_crop_offsets_uniform_over_all_positions():
    """torchvision draws top in 0..H−h, left in 0..W−w uniformly: 5×3 positions, 3000 seeds."""
    d = create("random-crop", size=8)
    x = torch.rand(1, 3, 12, 10)
    counts = np.zeros((5, 3))
    for s in range(3000):
        boxes = d.boxes(x, d._generators(x, [s]))[2]
        counts[boxes[0]] += 1
    assert counts.min() > 0  # every position, corners included, is reachable
    # each cell expects 200; the 1e-4 two-sided binomial bound is about ±55
    assert np.abs(counts - 200).max() < 60, counts


def test_random_crop_seeds():
    d = create("random-crop", size=20)
    x = image(3, 48, 64)
    seeds = [11, 22, 33]
    whole = d.purify(x, seeds)
    assert torch.equal(whole, d.purify(x, seeds))  # deterministic for fixed seeds
    parts = torch.cat([d.purify(x[i:i + 1], seeds[i:i + 1]) for i in range(3)])
    assert torch.equal(whole, parts)  # independent of batching
    offs = {_offset(x[0], d.purify(x[:1], [s])[0]) for s in range(8)}
    assert len(offs) > 4  # different seeds, different boxes
    # the same seed cuts the same box from two different images (clean / attacked pairs)
    pair = torch.stack([x[0], 1 - x[0]])
    y = d.purify(pair, [7, 7])
    assert torch.equal(y[1], 1 - y[0])
    # without seeds: fresh draws from the global generator
    draws = [d.purify(x[:1]) for _ in range(5)]
    assert not all(torch.equal(draws[0], o) for o in draws[1:])


def test_random_crop_gradient():
    d = create("random-crop", size=16)
    x = image(2, 30, 40).requires_grad_(True)
    w = torch.rand(2, 3, 16, 16) + 0.1
    (d.estimate_forward(x, [4, 5]) * w).sum().backward()
    g = x.grad
    assert torch.isfinite(g).all()
    for i in range(2):
        t, l = _offset(x.detach()[i], d.purify(x.detach()[i:i + 1], [4 + i])[0])
        assert torch.equal(g[i, :, t:t + 16, l:l + 16], w[i])  # the window gets the weight
        assert float(g[i].abs().sum()) == pytest.approx(float(w[i].sum()), rel=1e-6)  # nothing else


def test_random_crop_protect_nr_and_fr():
    d = create("random-crop", size=16)
    x, ref = image(2, 30, 40), image(2, 30, 40, seed=1)
    m = _nr_metric()
    pm = d.protect(m)
    assert isinstance(pm, Metric) and pm.differentiable
    pm.seeds = [8, 9]
    torch.testing.assert_close(pm(x), m(d.purify(x, [8, 9])), atol=0, rtol=0)
    fr = _fr_metric()
    pfr = d.protect(fr)
    pfr.seeds = [8, 9]
    # the reference gets the same crop: equal to cropping both with the same seeds
    torch.testing.assert_close(pfr(x, ref), fr(d.purify(x, [8, 9]), d.purify(ref, [8, 9])), atol=0, rtol=0)
    y, r = d.purify_pair(x, ref, [8, 9])
    assert y.shape == r.shape == (2, 3, 16, 16)
    for i in range(2):
        assert _offset(x[i], y[i]) == _offset(ref[i], r[i])
    # also without seeds (EOT): one draw serves both, so an image against itself scores 0 exactly
    pfr.seeds = None
    assert torch.equal(pfr(x, x), torch.zeros(2))
    # the reference cannot be aligned after the fact (the box is gone), nor can a mismatched one
    with pytest.raises(InputError, match="ref"):
        d.align_ref(ref, y)
    with pytest.raises(InputError, match="ref"):
        d.purify_pair(x, ref[:, :, :20], [8, 9])
    # the default pair rule of other purifiers is unchanged: purify, then align_ref
    r2 = create("resize", scale=0.5)
    y2, ref2 = r2.purify_pair(x, ref)
    assert torch.equal(ref2, r2.align_ref(ref, y2))


def test_random_crop_bad_input():
    d = create("random-crop", size=16)
    x = image(1, 30, 40)
    for b in [x[0], x.double(), x * 2, x[:, :1], torch.full_like(x, float("nan")), x.numpy()]:
        with pytest.raises(InputError, match="x"):
            d.purify(b, [0])
        with pytest.raises(InputError, match="x"):
            d.purify_pair(b, x, [0])
    with pytest.raises(InputError, match="seeds"):
        d.purify(torch.cat([x, x]), [0])


# ---------------------------------------------------------------- random-rotate

def _pil_rotate(x: torch.Tensor, angle: float, resample) -> np.ndarray:
    """Pillow's float ('F') rotation per channel: counter-clockwise about the image centre, fill 0."""
    return np.stack([np.asarray(Image.fromarray(c).rotate(angle, resample=resample)) for c in x.numpy()])


def test_random_rotate_vs_pillow():
    """Nearest: identical to Pillow's ``rotate(angle, NEAREST)`` (torchvision's PIL path) except
    for sampling ties; measured 0–0.04 % of pixels, bound 0.5 %. Bilinear surrogate: Pillow's
    BILINEAR within 1e-5 where all four neighbours are inside (Pillow treats the border
    differently); measured max 1.7e-6."""
    d = create("random-rotate", angle_limit=50)
    x = image(4, 41, 57)
    seeds = [1, 2, 3, 4]
    angles = d.angles(x, d._generators(x, seeds))
    y = d.purify(x, seeds)
    s = d.estimate_forward(x, seeds)
    ones = create("random-rotate", angle_limit=50).estimate_forward(torch.ones(4, 1, 41, 57), seeds)
    for i in range(4):
        a = float(angles[i])
        assert abs(a) <= 50
        diff = np.abs(y[i].numpy() - _pil_rotate(x[i], a, Image.NEAREST)) > 1e-6
        assert diff.mean() < 0.005, (a, diff.mean())
        inside = ones[i, 0].numpy() > 1 - 1e-6
        assert inside.mean() > 0.5
        np.testing.assert_allclose(s[i].numpy()[:, inside], _pil_rotate(x[i], a, Image.BILINEAR)[:, inside],
                                   atol=1e-5, rtol=0)


def test_random_rotate_angles_uniform_and_seeded():
    d = create("random-rotate", angle_limit=20)
    assert d.randomized and d.differentiable and not d.changes_size
    x = torch.zeros(1000, 1, 1, 1)
    a = d.angles(x, d._generators(x, list(range(1000)))).numpy()
    assert a.min() >= -20 and a.max() <= 20 and a.min() < -19 and a.max() > 19
    assert abs(a.mean()) < 1.0 and abs(a.std() - 40 / math.sqrt(12)) < 0.6  # U(−20, 20): std 11.5
    img = image(3)
    assert torch.equal(d.purify(img, [5, 6, 7]), d.purify(img, [5, 6, 7]))
    parts = torch.cat([d.purify(img[i:i + 1], [5 + i]) for i in range(3)])
    assert torch.equal(d.purify(img, [5, 6, 7]), parts)
    assert not torch.equal(d.purify(img[:1], [5]), d.purify(img[:1], [6]))
    # same seed, same angle for two different images: rot(1 − x) = rot(1) − rot(x)
    pair = torch.stack([img[0], 1 - img[0]])
    y = d.purify(pair, [9, 9])
    assert torch.equal(y[0] + y[1], d.purify(torch.ones(1, 3, 40, 52), [9])[0])
    draws = [d.purify(img[:1]) for _ in range(4)]
    assert not all(torch.equal(draws[0], o) for o in draws[1:])
    # a zero limit is the identity
    assert torch.equal(create("random-rotate", angle_limit=0).purify(img, [1, 2, 3]), img)


def test_random_rotate_gradients():
    """Nearest routes each output pixel's gradient to one input pixel (0/1 weights); the
    bilinear surrogate spreads it over neighbours, with the same draw."""
    d = create("random-rotate", angle_limit=30)
    x = image(1, 24, 24)
    xn = x.clone().requires_grad_(True)
    d.purify(xn, [3]).sum().backward()
    assert set(torch.unique(xn.grad).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    xs = x.clone().requires_grad_(True)
    d.estimate_forward(xs, [3]).sum().backward()
    assert torch.isfinite(xs.grad).all() and float(xs.grad.abs().sum()) > 0
    frac = xs.grad[(xs.grad > 0) & (xs.grad < 1)]
    assert frac.numel() > 100  # genuinely fractional weights
    # the surrogate is close to the real transform on smooth content (measured 0.024: half-pixel
    # interpolation differences on a 24-px sinusoid)
    smooth = image(1, 24, 24, texture=0.0)
    assert float((d.estimate_forward(smooth, [3]) - d.purify(smooth, [3])).abs().mean()) < 0.035


# ---------------------------------------------------------------- unsharp

def _gauss_kernel(k: int, sigma: float = 1.0) -> np.ndarray:
    t = np.arange(k) - k // 2
    g = np.exp(-t ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    return np.outer(g, g)[None, None]


@pytest.mark.parametrize("k", [3, 5, 7, 9, 11])
@pytest.mark.parametrize("amount", [1.0, 0.5])
def test_unsharp_vs_scipy(k, amount):
    """clip(x + a·(x − G_k,σ=1 * x)) with scipy.ndimage.convolve, mode='mirror' (= torch reflect)
    and the normalised k-tap Gaussian, float64; tolerance 3e-6 (float32 separable; measured 2.2e-7)."""
    x = image(1, 30, 34)
    xd = x.numpy().astype(np.float64)
    blur = ndimage.convolve(xd, _gauss_kernel(k), mode="mirror")
    ref = np.clip(xd + amount * (xd - blur), 0, 1)
    y = create("unsharp", kernel_size=k, amount=amount).purify(x).numpy()
    np.testing.assert_allclose(y, ref, atol=3e-6, rtol=0)
    assert (ref == 0).any() or (ref == 1).any() or k == 3  # the clip is exercised


def test_unsharp_vs_skimage_interior():
    """skimage.filters.unsharp_mask(radius=1, amount=1) blurs with scipy's gaussian_filter
    (truncate 4 → 9 taps, our k=9) but pads with scipy 'reflect' (edge pixel repeated) where we
    mirror: equal within 2e-6 away from the border (measured 2.2e-7), differ on it (0.066)."""
    x = image(1, 30, 34)
    y = create("unsharp", kernel_size=9).purify(x)[0].numpy()
    ref = unsharp_mask(x[0].numpy().astype(np.float64), radius=1, amount=1, channel_axis=0)
    np.testing.assert_allclose(y[:, 4:-4, 4:-4], ref[:, 4:-4, 4:-4], atol=2e-6, rtol=0)
    assert np.abs(y - ref).max() > 1e-3


def test_unsharp_properties():
    x = image(2)
    assert torch.equal(create("unsharp", amount=0.0).purify(x), x)
    c = torch.full((1, 3, 16, 16), 0.4)
    torch.testing.assert_close(create("unsharp").purify(c), c, atol=1e-6, rtol=0)  # flat stays flat
    y = create("unsharp", kernel_size=7).purify(x)
    assert float(y.std()) > float(x.std())  # it sharpens: more contrast in the texture
    with pytest.raises(InputError, match="kernel_size"):
        create("unsharp", kernel_size=11).purify(torch.rand(1, 3, 5, 40))
    d = create("unsharp")
    assert d.differentiable and not d.randomized
    assert torch.autograd.gradcheck(lambda t: d.estimate_forward(t),
                                    ((0.4 + 0.2 * torch.rand(1, 3, 7, 9)).double().requires_grad_(True),),
                                    fast_mode=True)
