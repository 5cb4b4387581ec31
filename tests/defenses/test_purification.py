"""The first eight purification defenses: a common checklist, then each one against an
independent implementation (Pillow, scipy.ndimage) or exact values."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

import iqaguard.defenses  # noqa: F401  (registers the defenses)
from iqaguard.defenses.base import Purifier
from iqaguard.defenses.presets import preset_params, presets
from iqaguard.errors import InputError
from iqaguard.metrics.base import Metric, wrap_metric
from iqaguard.registry import DEFENSES

NAMES = ["no-defense", "jpeg", "gaussian-blur", "median-blur", "resize", "upscale",
         "color-quantization", "random-noise",
         "flip", "random-rotate", "unsharp", "diffjpeg"]  # random-crop: test_purification_geometric.py
DIFFERENTIABLE = {"no-defense", "gaussian-blur", "median-blur", "resize", "upscale", "random-noise",
                  "flip", "random-rotate", "unsharp", "diffjpeg"}
STUDY_PRESETS = {  # defence_presets.json, msu-video-group/adversarial-defenses-for-iqa @2642c99
    "jpeg": ("quality", 50, [10, 30, 50, 70, 90]),
    "diffjpeg": ("quality", 50, [10, 30, 50, 70, 90]),
    "gaussian-blur": ("kernel_size", 3, [3, 5, 7, 9, 11]),
    "median-blur": ("kernel_size", 3, [3, 5, 7, 9, 11]),
    "unsharp": ("kernel_size", 5, [3, 5, 7, 9, 11]),
    "resize": ("scale", 0.5, [0.1, 0.25, 0.5, 0.75, 0.9]),
    "upscale": ("scale", 0.5, [0.1, 0.25, 0.5, 0.75, 0.9]),
    "color-quantization": ("npp", 16, [2, 5, 16, 20, 25]),
    "random-noise": ("sigma", 0.01, [0.01, 0.025, 0.05, 0.075, 0.1]),
    "random-crop": ("size", 128, [32, 64, 128, 256, 288]),
    "random-rotate": ("angle_limit", 15, [10, 15, 20, 30, 50]),
    "diffpure": ("t", 5, [5, 10, 20, 30, 50]),
}
BAD_PARAMS = {
    "jpeg": [("quality", 0), ("quality", 101), ("quality", 50.5), ("quality", True)],
    "gaussian-blur": [("kernel_size", 4), ("kernel_size", 0), ("kernel_size", -3), ("kernel_size", 3.0)],
    "median-blur": [("kernel_size", 2), ("kernel_size", 0), ("kernel_size", "3")],
    "resize": [("scale", 0), ("scale", 1.5), ("scale", -0.5), ("scale", float("nan"))],
    "upscale": [("scale", 0.0), ("scale", 2)],
    "color-quantization": [("npp", 1), ("npp", 0), ("npp", 2.5)],
    "random-noise": [("sigma", -0.01), ("sigma", float("inf")), ("sigma", "big")],
}


def image(n=2, h=40, w=52, seed=0) -> torch.Tensor:
    """Smooth content plus texture, so filters and JPEG have something to change."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([0.5 + 0.4 * torch.sin(6 * xx + c + 3 * yy) for c in range(3)])
    x = base[None] + 0.08 * torch.randn((n, 3, h, w), generator=g)
    return x.clamp(0, 1).float()


def create(name, **params) -> Purifier:
    return DEFENSES.create(name, **params)


def purify(d: Purifier, x, seeds=None):
    return d.purify(x, seeds if seeds is not None else (list(range(x.shape[0])) if d.randomized else None))


# ---------------------------------------------------------------- checklist over all eight

@pytest.mark.parametrize("name", NAMES)
def test_shape_range_dtype(name):
    d = create(name)
    assert isinstance(d, Purifier) and d.family == "purification"
    x = image(2, 37, 53)  # odd sizes: not multiples of the JPEG block or the scale
    y = purify(d, x)
    assert y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    if name == "resize":
        assert d.changes_size
        assert y.shape == (2, 3, math.floor(37 * 0.5), math.floor(53 * 0.5))
    else:
        assert not d.changes_size
        assert y.shape == x.shape
    if name not in ("no-defense", "resize"):
        assert not torch.equal(y, x)  # every real defense changes this image


@pytest.mark.parametrize("name", NAMES)
def test_batch_consistency(name):
    d = create(name)
    x = image(3)
    seeds = [11, 22, 33]
    whole = purify(d, x, seeds)
    parts = torch.cat([purify(d, x[i:i + 1], seeds[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(whole, parts, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_fixed_seeds(name):
    d = create(name)
    x = image(2)
    assert torch.equal(purify(d, x, [5, 6]), purify(d, x, [5, 6]))


def test_random_noise_seeds():
    d = create("random-noise", sigma=0.05)
    assert d.randomized
    x = 0.3 + 0.4 * image(2)  # in [0.3, 0.7]: σ·n stays far from the clamp
    a = d.purify(x, [1, 2])
    assert torch.equal(a, d.purify(x, [1, 2]))
    assert not torch.equal(a, d.purify(x, [1, 3]))
    assert not torch.equal(a[0], a[1] - x[1] + x[0])          # different seeds, different noise
    # the same seed gives the same noise field to two different images (clean/attacked pairs)
    y = d.purify(x, [7, 7])
    torch.testing.assert_close(y[0] - x[0], y[1] - x[1], atol=1e-6, rtol=0)
    noise = (y[0] - x[0]) / 0.05
    assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1) < 0.05
    # without seeds: fresh draws
    assert not torch.equal(d.purify(x), d.purify(x))


def test_random_noise_clamps():
    d = create("random-noise", sigma=0.1)
    x = torch.zeros(1, 3, 16, 16)
    y = d.purify(x, [0])
    assert float(y.min()) == 0.0 and float(y.max()) <= 1.0
    assert (y > 0).float().mean() > 0.3  # about half the draws are positive


@pytest.mark.parametrize("name", NAMES)
def test_estimate_forward_gradient(name):
    d = create(name)
    x = image(2).requires_grad_(True)
    w = torch.randn(1, 3, 1, 1)
    y = d.estimate_forward(x, [3, 4] if d.randomized else None)
    (y * w).sum().backward()
    g = x.grad
    assert g is not None and torch.isfinite(g).all()
    assert d.differentiable == (name in DIFFERENTIABLE)
    assert float(g.abs().sum()) > 0
    if not d.differentiable and name != "jpeg":  # identity surrogate (jpeg's is diffjpeg: test_diffjpeg.py)
        torch.testing.assert_close(g, w.expand_as(g), atol=0, rtol=0)


@pytest.mark.parametrize("name", ["gaussian-blur", "resize", "upscale", "random-noise"])
def test_gradcheck_smooth_surrogates(name):
    d = create(name)
    x = (0.3 + 0.4 * torch.rand(1, 3, 7, 9)).double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: d.estimate_forward(t, [0] if d.randomized else None), (x,),
                                    fast_mode=True)


def test_median_gradient_goes_to_the_median_pixel():
    d = create("median-blur")
    x = torch.rand(1, 3, 8, 8).requires_grad_(True)
    d.estimate_forward(x)[0, 1, 4, 4].backward()
    g = x.grad[0, 1]
    assert float(g.sum()) == 1.0 and int((g != 0).sum()) == 1
    r, c = divmod(int(g.flatten().argmax()), 8)
    win = x.detach()[0, 1, 3:6, 3:6]
    assert abs(r - 4) <= 1 and abs(c - 4) <= 1
    assert float(x.detach()[0, 1, r, c]) == float(win.flatten().median())


def _nr_metric():
    return wrap_metric(lambda t: (t * torch.arange(1, 4).view(1, 3, 1, 1)).mean((1, 2, 3)), mode="NR")


def _fr_metric():
    return wrap_metric(lambda t, r: ((t - r) ** 2).mean((1, 2, 3)), mode="FR", lower_better=True)


@pytest.mark.parametrize("name", NAMES)
def test_protect(name):
    d = create(name)
    x = image(2)
    seeds = [8, 9] if d.randomized else None
    m = _nr_metric()
    pm = d.protect(m)
    assert isinstance(pm, Metric) and pm.mode == "NR" and not pm.lower_better
    assert pm.differentiable == d.differentiable
    pm.seeds = seeds
    torch.testing.assert_close(pm(x), m(d.purify(x, seeds)), atol=0, rtol=0)
    fr = _fr_metric()
    pfr = d.protect(fr)
    pfr.seeds = seeds
    ref = image(2, seed=1)
    y = d.purify(x, seeds)
    torch.testing.assert_close(pfr(x, ref), fr(y, d.align_ref(ref, y)), atol=0, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input(name):
    d = create(name)
    x = image(1)
    bad = [x[0], x.double(), x * 2, x[:, :1], torch.full_like(x, float("nan")), (x * 255).byte(), x.numpy()]
    for b in bad:
        with pytest.raises(InputError, match="x"):
            d.purify(b)


@pytest.mark.parametrize("name,param,value", [(n, p, v) for n, items in BAD_PARAMS.items() for p, v in items])
def test_bad_params(name, param, value):
    with pytest.raises(InputError, match=param):
        create(name, **{param: value})


def test_unknown_param():
    with pytest.raises(InputError, match="q"):
        create("jpeg", q=50)  # the study's name; ours is quality


@pytest.mark.parametrize("name", ["gaussian-blur", "median-blur"])
def test_image_too_small_for_kernel(name):
    d = create(name, kernel_size=11)
    with pytest.raises(InputError, match="kernel_size"):
        d.purify(torch.rand(1, 3, 5, 40))


@pytest.mark.parametrize("name", NAMES)
def test_params_round_trip(name):
    key = STUDY_PRESETS.get(name, (None,))[0]
    params = {key: STUDY_PRESETS[name][2][1]} if key else {}
    d = create(name, **params)
    for k, v in d.params.items():
        assert getattr(d, k) == v
    d2 = create(name, **d.params)
    assert d2.params == d.params and type(d2) is type(d)
    x = image(1)
    assert torch.equal(purify(d, x, [1]), purify(d2, x, [1]))


# ---------------------------------------------------------------- presets table

def test_presets_table_matches_study():
    for name, (param, default, values) in STUDY_PRESETS.items():
        assert presets(name) == [{param: v} for v in values]
        for i, v in enumerate(values):
            assert preset_params(name, i) == {param: v}
        if name in DEFENSES.names():  # the table default is the constructor default
            assert DEFENSES.defaults(name)[param] == default


@pytest.mark.parametrize("name", [n for n in NAMES if n in STUDY_PRESETS])
def test_every_preset_runs(name):
    x = image(1, 32, 32)
    for p in presets(name):
        y = purify(create(name, **p), x)
        assert y.dtype == torch.float32 and float(y.min()) >= 0 and float(y.max()) <= 1


def test_presets_errors_and_empty():
    assert presets("no-defense") == [{}] and preset_params("no-defense", 0) == {}
    with pytest.raises(InputError, match="defense_name"):
        presets("no-such-defense")
    with pytest.raises(InputError, match="index"):
        preset_params("jpeg", 5)
    with pytest.raises(InputError, match="index"):
        preset_params("jpeg", -1)
    with pytest.raises(InputError, match="index"):
        preset_params("no-defense", 1)


# ---------------------------------------------------------------- per-defense references

def _pillow_jpeg(a: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


@pytest.mark.parametrize("q", [10, 30, 50, 70, 90])
def test_jpeg_bit_exact_vs_pillow(q):
    x = image(2, 37, 45)
    arrays = [(x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for i in range(2)]
    x8 = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays])
    y = create("jpeg", quality=q).purify(x8)
    for i, a in enumerate(arrays):
        got = (y[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(got, _pillow_jpeg(a, q))
    assert float((y - x8).abs().mean()) > 1e-3  # it really compresses


def test_jpeg_uses_420_subsampling():
    """Pillow's default at these qualities is 4:2:0 (Y sampled 2×2, Cb/Cr 1×1), as libjpeg's."""
    from PIL import JpegImagePlugin

    a = (image(1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    for q in (10, 50, 90):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=q)
        buf.seek(0)
        assert JpegImagePlugin.get_sampling(Image.open(buf)) == 2


def test_jpeg_quality_orders_error():
    x = image(1, 48, 48)
    errs = [float((create("jpeg", quality=q).purify(x) - x).abs().mean()) for q in (10, 50, 90)]
    assert errs[0] > errs[1] > errs[2]


@pytest.mark.parametrize("k,sigma", [(3, 0.8), (5, 1.1), (7, 1.4), (9, 1.7), (11, 2.0)])
def test_gaussian_blur_vs_scipy(k, sigma):
    """scipy.ndimage.convolve with the 2-D kernel; kornia's 'reflect' (no edge repeat) is scipy's
    'mirror'. Tolerance 2e-6 (float32 separable vs float64 2-D)."""
    d = create("gaussian-blur", kernel_size=k)
    assert d.sigma == pytest.approx(sigma)
    x = image(1, 30, 34)
    t = np.arange(k) - k // 2
    g = np.exp(-t ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    kern = np.outer(g, g)[None, None]
    ref = ndimage.convolve(x.numpy().astype(np.float64), kern, mode="mirror")
    y = d.purify(x).numpy()
    np.testing.assert_allclose(y, ref, atol=2e-6, rtol=0)
    # the padding convention matters at the border: scipy's 'reflect' (edge repeated) is off
    other = ndimage.convolve(x.numpy().astype(np.float64), kern, mode="reflect")
    assert np.abs(y - other).max() > 1e-3


@pytest.mark.parametrize("k", [3, 5, 7, 11])
def test_median_blur_vs_scipy(k):
    """scipy.ndimage.median_filter with mode='mirror' (= torch 'reflect'); exact for odd k."""
    x = image(2, 23, 29)
    y = create("median-blur", kernel_size=k).purify(x)
    ref = ndimage.median_filter(x.numpy(), size=(1, 1, k, k), mode="mirror")
    np.testing.assert_array_equal(y.numpy(), ref)


def _pil_resize(a: np.ndarray, size) -> np.ndarray:
    """Pillow's float ('F') bilinear resize per channel; it widens the filter when downscaling."""
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize(size, Image.BILINEAR)) for c in a])


@pytest.mark.parametrize("scale", [0.1, 0.25, 0.5, 0.75, 0.9])
def test_resize_and_upscale_vs_pillow(scale):
    """torch bilinear+antialias vs Pillow's float bilinear resize: max diff measured 3.4e-6."""
    x = image(1, 61, 83)
    small = create("resize", scale=scale).purify(x)
    h, w = math.floor(61 * scale), math.floor(83 * scale)
    assert small.shape[-2:] == (h, w)
    ref_small = _pil_resize(x[0].numpy(), (w, h))
    np.testing.assert_allclose(small[0].numpy(), ref_small, atol=1e-5, rtol=0)
    up = create("upscale", scale=scale).purify(x)
    assert up.shape == x.shape  # the input size, not the study's hard-coded 384×512
    np.testing.assert_allclose(up[0].numpy(), _pil_resize(ref_small, (83, 61)), atol=1e-5, rtol=0)


def test_scale_one_is_identity():
    x = image(1)
    assert torch.equal(create("resize", scale=1.0).purify(x), x)
    assert torch.equal(create("upscale", scale=1).purify(x), x)


def test_resize_ref_alignment_for_fr():
    d = create("resize", scale=0.25)
    x = image(1, 40, 52)
    assert d.align_ref(x, d.purify(x)).shape[-2:] == (10, 13)


@pytest.mark.parametrize("npp,inputs,expected", [
    (2, [0.0, 0.3, 0.5, 0.51, 1.0], [0.0, 0.0, 0.0, 1.0, 1.0]),      # round half to even: 0.5 -> 0
    (5, [0.0, 0.1, 0.3, 0.6, 0.9, 1.0], [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]),
    (16, [0.0, 0.5, 1 / 30 + 1e-4, 0.97, 1.0], [0.0, 8 / 15, 1 / 15, 1.0, 1.0]),  # 7.5 -> 8 (even)
])
def test_color_quantization_exact(npp, inputs, expected):
    x = torch.tensor(inputs, dtype=torch.float32).view(1, 1, 1, -1).expand(1, 3, 1, -1).contiguous()
    y = create("color-quantization", npp=npp).purify(x)
    exp = torch.tensor(expected, dtype=torch.float32).view(1, 1, 1, -1).expand_as(y)
    torch.testing.assert_close(y, exp, atol=0, rtol=0)


@pytest.mark.parametrize("npp", [2, 5, 16, 20, 25])
def test_color_quantization_levels(npp):
    x = image(1)
    y = create("color-quantization", npp=npp).purify(x)
    levels = np.float32(np.arange(npp)) / np.float32(npp - 1)
    assert set(np.unique(y.numpy())) <= set(levels.tolist())
    assert float((y - x).abs().max()) <= 0.5 / (npp - 1) + 1e-6


def test_no_defense_identity():
    x = image(2)
    assert torch.equal(create("no-defense").purify(x), x)
    assert create("no-defense").params == {}
