"""SSIM against scikit-image, MS-SSIM against pytorch-msssim and a numpy/scipy reference.

The formula tests run on ``channel='y'`` (the rgb2ycbcr Y, the default before pyiqa's became it)
with the parameters that channel has always implied (no rounding, no clipping); the defaults
(pyiqa's: rounded YIQ luma, cs clipped at 0, zero-padded pooling) are checked against a float64
numpy reference here and against pyiqa itself in tests/peers/test_pyiqa_defaults.py.

skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1) filters the whole image (reflect padding) and then
averages only the pixels ≥ (win_size−1)/2 = 5 from the border — exactly the 'valid' region of
Wang's ssim_index.m, so the two agree to float32 rounding (tolerance 1e-5; measured ~1e-7).
"""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data
from skimage.metrics import structural_similarity

from iqaguard.errors import InputError
import iqaguard as ig
from iqaguard.images import rgb_to_y, to_tensor
from iqaguard.metrics.filters import box_downsample
from iqaguard.metrics.ssim import MS_SSIM_WEIGHTS, MSSSIM, SSIM


def _pair(h, w, sigma=0.05, seed=0):
    img = data.astronaut()
    x = to_tensor(img[40:40 + h, 60:60 + w])
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1), x


def _sk(a, b, **kw):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1.0, **kw)


def _y(t):
    return rgb_to_y(t)[0, 0].double().numpy()


@pytest.mark.parametrize("size", [(64, 64), (77, 120)])
def test_ssim_y_matches_skimage(size):
    d, x = _pair(*size)
    assert float(SSIM(channel="y")(d, x)) == pytest.approx(_sk(_y(d), _y(x)), abs=1e-5)


def test_ssim_rgb_matches_skimage():
    d, x = _pair(64, 80)
    ref = _sk(d[0].permute(1, 2, 0).double().numpy(), x[0].permute(1, 2, 0).double().numpy(), channel_axis=-1)
    assert float(SSIM(channel="rgb")(d, x)) == pytest.approx(ref, abs=1e-5)


def test_ssim_gray_matches_skimage_on_rgb2gray():
    """channel='gray' is MATLAB rgb2gray (skimage.color.rgb2gray uses BT.709 weights, so the grey
    image is formed here with MATLAB's weights and only the SSIM is skimage's)."""
    d, x = _pair(64, 80)
    w = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
    gray = lambda t: t[0].permute(1, 2, 0).double().numpy() @ w  # noqa: E731
    assert float(SSIM(channel="gray")(d, x)) == pytest.approx(_sk(gray(d), gray(x)), abs=1e-5)


def _matlab_box_downsample(a, f):
    """imfilter(a, ones(f)/f^2, 'symmetric', 'same'); a(1:f:end, 1:f:end) — written out in numpy."""
    c = (f + 1) // 2 - 1                        # MATLAB kernel centre floor((f+1)/2), 0-based
    p = np.pad(a, ((c, f), (c, f)), mode="symmetric")
    h, w = a.shape
    out = np.zeros_like(a)
    for i in range(f):
        for j in range(f):
            out += p[i:i + h, j:j + w]
    return (out / f ** 2)[::f, ::f]


@pytest.mark.parametrize("f,size", [(2, (9, 12)), (3, (10, 14)), (2, (8, 8))])
def test_box_downsample_matches_matlab_semantics(f, size):
    a = np.random.default_rng(f).random(size)
    ours = box_downsample(torch.tensor(a)[None, None], f)[0, 0].numpy()
    np.testing.assert_allclose(ours, _matlab_box_downsample(a, f), atol=1e-12)


def test_ssim_downsample_is_the_ssim_m_wrapper():
    d, x = _pair(384, 400)                       # f = round(384/256) = 2 (rounds half up)
    ref = _sk(_matlab_box_downsample(_y(d), 2), _matlab_box_downsample(_y(x), 2))
    assert float(SSIM(channel="y", downsample=True)(d, x)) == pytest.approx(ref, abs=1e-5)
    assert abs(float(SSIM(channel="y", downsample=True)(d, x)) - float(SSIM(channel="y")(d, x))) > 1e-3


def _maps(a, b, clip=False):
    """(SSIM map, cs map) of Wang's formula, 11-tap σ=1.5 Gaussian, valid region, float64."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    f = lambda t: gaussian_filter(t, 1.5, truncate=3.5, mode="reflect")[5:-5, 5:-5]  # noqa: E731  11 taps, valid
    ma, mb = f(a), f(b)
    va, vb, cov = f(a * a) - ma ** 2, f(b * b) - mb ** 2, f(a * b) - ma * mb
    cs = (2 * cov + c2) / (va + vb + c2)
    if clip:
        cs = np.maximum(cs, 0)
    return (2 * ma * mb + c1) / (ma ** 2 + mb ** 2 + c1) * cs, cs


def _zero_pool(a):
    """torch's avg_pool2d(2, padding=(H%2, W%2)) written out: one zero before and after an odd side."""
    ph, pw = a.shape[0] % 2, a.shape[1] % 2
    p = np.pad(a, ((ph, ph), (pw, pw)))
    h, w = (p.shape[0] // 2) * 2, (p.shape[1] // 2) * 2
    return p[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))


def _ms_ssim_reference(a, b, clip=False, pool=None):
    """MS-SSIM (Wang et al. 2003) in float64 numpy/scipy; 2×2 means (even sizes) unless ``pool``."""
    vals = []
    for j in range(5):
        s, cs = _maps(a, b, clip)
        vals.append(max(0.0, (s if j == 4 else cs).mean()))
        if j < 4:
            if pool is None:
                a = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean((1, 3))
                b = b.reshape(b.shape[0] // 2, 2, b.shape[1] // 2, 2).mean((1, 3))
            else:
                a, b = pool(a), pool(b)
    return float(np.prod(np.array(vals) ** np.array(MS_SSIM_WEIGHTS)))


def _yiq8(t):
    """pyiqa's default input: Y of YIQ rounded to 8-bit levels, back on [0, 1]."""
    y = t[0].permute(1, 2, 0).double().numpy() @ np.array([0.299, 0.587, 0.114])
    return np.round(y * 255) / 255


@pytest.mark.parametrize("sigma", [0.03, 0.2])
def test_ms_ssim_matches_numpy_reference(sigma):
    d, x = _pair(176, 192, sigma)
    assert float(MSSSIM(channel="y")(d, x)) == pytest.approx(_ms_ssim_reference(_y(d), _y(x)), abs=1e-5)


def test_ms_ssim_matches_pytorch_msssim():
    """pytorch-msssim 1.0 (dev-only test dependency), same settings; measured diff ~1e-7."""
    pm = pytest.importorskip("pytorch_msssim")
    d, x = _pair(192, 256, 0.1)
    ref_y = pm.ms_ssim(rgb_to_y(d), rgb_to_y(x), data_range=1.0, size_average=False, win_size=11, win_sigma=1.5)
    assert float(MSSSIM(channel="y")(d, x)) == pytest.approx(float(ref_y), abs=1e-5)
    ref_rgb = pm.ms_ssim(d, x, data_range=1.0, size_average=False, win_size=11, win_sigma=1.5)
    assert float(MSSSIM(channel="rgb")(d, x)) == pytest.approx(float(ref_rgb), abs=1e-5)


def test_ms_ssim_negative_cs_is_clamped_and_differentiable():
    """An anti-correlated image gives cs < 0 at fine scales: score 0, gradient finite."""
    _, x = _pair(176, 176, 0)
    inv = (1 - x).requires_grad_(True)
    s = MSSSIM()(inv, x)
    assert float(s.detach()) == 0.0
    (g,) = torch.autograd.grad(s.sum(), inv)
    assert torch.isfinite(g).all()


def test_ms_ssim_minimum_size():
    with pytest.raises(InputError, match="at least 161 px"):
        MSSSIM()(torch.rand(1, 3, 160, 400), torch.rand(1, 3, 160, 400))
    MSSSIM()(torch.rand(1, 3, 161, 161), torch.rand(1, 3, 161, 161))


def test_ssim_too_small_and_bad_params():
    with pytest.raises(InputError, match="at least 11 px"):
        SSIM()(torch.rand(1, 3, 10, 40), torch.rand(1, 3, 10, 40))
    with pytest.raises(InputError, match="win_size"):
        SSIM(win_size=10)
    with pytest.raises(InputError, match="channel"):
        MSSSIM(channel="lab")


# ------------------------------------------------------------------ defaults (pyiqa's conventions)
@pytest.mark.parametrize("size, sigma", [((64, 80), 0.05), ((77, 120), 0.3)])
def test_ssim_default_is_rounded_yiq_with_clipped_cs(size, sigma):
    """Bare-name ssim = Wang's SSIM on round(255·Y_yiq)/255 with cs clipped at 0. σ = 0.3 noise
    makes some windows anti-correlated, so the clip matters there (checked below). Tolerance 1e-5
    (float32 filtering against float64; measured ~1e-7)."""
    d, x = _pair(*size, sigma=sigma)
    m = ig.create_metric("ssim")
    assert (m.channel, m.quantize, m.clip_cs) == ("yiq", True, True)
    assert float(m(d, x)) == pytest.approx(_maps(_yiq8(d), _yiq8(x), clip=True)[0].mean(), abs=1e-5)
    if sigma == 0.3:
        assert abs(_maps(_yiq8(d), _yiq8(x), clip=False)[0].mean() - float(m(d, x))) > 1e-4


def test_ssimc_is_rgb_rounded_with_clipped_cs():
    d, x = _pair(64, 80, sigma=0.3)
    ref = np.mean([_maps(np.round(d[0, c].double().numpy() * 255) / 255,
                         np.round(x[0, c].double().numpy() * 255) / 255, clip=True)[0].mean() for c in range(3)])
    assert float(ig.create_metric("ssimc")(d, x)) == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("size", [(176, 192), (177, 195)])
def test_ms_ssim_default_is_pyiqas(size):
    """Bare-name ms_ssim: rounded YIQ luma, cs clipped, avg_pool2d zero-padded on odd sides (177×195
    is odd at the first scales, where that border rule differs from msssim.m's mirror)."""
    d, x = _pair(*size, sigma=0.1)
    ref = _ms_ssim_reference(_yiq8(d), _yiq8(x), clip=True, pool=_zero_pool)
    assert float(ig.create_metric("ms_ssim")(d, x)) == pytest.approx(ref, abs=1e-5)
    if size[0] % 2:
        sym = float(ig.create_metric("ms_ssim", pool_border="symmetric")(d, x))
        assert abs(sym - ref) > 1e-5


def test_specs_written_before_the_default_changed_keep_their_meaning():
    """Canonical specs of the old defaults, as a store holds them, still score rgb2ycbcr Y with no
    rounding, no clipping and msssim.m's pooling."""
    d, x = _pair(177, 195, sigma=0.3)
    old_ssim = ig.create_metric("ssim:channel=y,downsample=false,k1=0.01,k2=0.03,sigma=1.5,win_size=11")
    assert (old_ssim.quantize, old_ssim.clip_cs) == (False, False)
    assert float(old_ssim(d, x)) == pytest.approx(_sk(_y(d), _y(x)), abs=1e-5)
    old_ms = ig.create_metric("ms_ssim:channel=y,k1=0.01,k2=0.03,sigma=1.5,win_size=11")
    assert (old_ms.quantize, old_ms.clip_cs, old_ms.pool_border) == (False, False, "symmetric")
    assert float(old_ms(d, x)) == pytest.approx(_ms_ssim_reference(_y(d), _y(x), pool=lambda a: _matlab_box_downsample(a, 2)), abs=1e-5)
    for spec in ("ssim:channel=gray", "ssim:channel=rgb", "ms_ssim:channel=gray"):
        assert not ig.create_metric(spec).quantize


def test_default_gradient_is_straight_through():
    """Rounding is in the forward pass only: the gradient is the unrounded SSIM's, never all zero."""
    d, x = _pair(64, 64, sigma=0.05)
    d = d.requires_grad_(True)
    (g,) = torch.autograd.grad(ig.create_metric("ssim")(d, x).sum(), d)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0


def test_flag_params_validated():
    with pytest.raises(InputError, match="quantize"):
        SSIM(quantize="yes")
    with pytest.raises(InputError, match="pool_border"):
        MSSSIM(pool_border="reflect")
