"""BRISQUE against an independent float64 numpy/scipy re-implementation of the released MATLAB code.

The reference follows brisque_feature.m / estimateggdparam.m / estimateaggdparam.m line by line
(``filter2(..., 'same')`` = zero-padded correlation, ``circshift`` = np.roll, grid argmin over
0.2:0.001:10) and MATLAB imresize.m (generic ``contributions`` weights), and evaluates the SVR with
a plain loop over support vectors. The SVR itself is checked against libsvm in
tests/peers/test_brisque_peers.py. Tolerances are stated per test.
"""
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate
from scipy.special import gamma
from skimage import data

import iqaguard.metrics  # noqa: F401  (registers the built-in metrics)
from iqaguard.errors import InputError
from iqaguard.images import to_tensor
from iqaguard.metrics.brisque import imresize_half_any, svr_model
from iqaguard.registry import METRICS


# ---------------------------------------------------------------- reference (float64, plain numpy)
def _cubic(x):
    a = np.abs(x)
    return ((1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1)
            + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2)))


def matlab_imresize_axis(img, scale, axis):
    """imresize.m, bicubic, antialiasing on for scale < 1 (its `contributions` function)."""
    in_len = img.shape[axis]
    out_len = int(math.ceil(in_len * scale))
    kw = 4.0 / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kw / 2)
    ind = left[:, None] + np.arange(int(math.ceil(kw)) + 2)[None, :]
    wts = scale * _cubic(scale * (u[:, None] - ind))
    wts = wts / wts.sum(1, keepdims=True)
    aux = np.concatenate([np.arange(1, in_len + 1), np.arange(in_len, 0, -1)])
    ind = aux[np.mod(ind - 1, len(aux)).astype(int)] - 1
    moved = np.moveaxis(img, axis, 0)
    return np.moveaxis(np.einsum("op,op...->o...", wts, moved[ind]), 0, axis)


GAM = np.arange(0.2, 10.0005, 0.001)
R_GGD = gamma(1 / GAM) * gamma(3 / GAM) / gamma(2 / GAM) ** 2
R_AGGD = gamma(2 / GAM) ** 2 / (gamma(1 / GAM) * gamma(3 / GAM))


def ref_ggd(vec):
    sigma_sq = np.mean(vec ** 2)
    rho = sigma_sq / np.mean(np.abs(vec)) ** 2
    return GAM[np.argmin(np.abs(rho - R_GGD))], sigma_sq


def ref_aggd(vec):
    left = np.sqrt(np.mean(vec[vec < 0] ** 2))
    right = np.sqrt(np.mean(vec[vec > 0] ** 2))
    g = left / right
    rhat = np.mean(np.abs(vec)) ** 2 / np.mean(vec ** 2)
    rn = rhat * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
    return GAM[np.argmin((R_AGGD - rn) ** 2)], left, right


def ref_features(im):
    r = np.arange(7) - 3.0
    k = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * (7 / 6) ** 2))
    win = k / k.sum()
    feat = []
    for _ in range(2):
        mu = correlate(im, win, mode="constant")
        sigma = np.sqrt(np.abs(correlate(im * im, win, mode="constant") - mu * mu))
        s = (im - mu) / (sigma + 1)
        a, var = ref_ggd(s.ravel())
        feat += [a, var]
        for shift in ((0, 1), (1, 0), (1, 1), (-1, 1)):
            a, ls, rs = ref_aggd((s * np.roll(s, shift, axis=(0, 1))).ravel())
            const = np.sqrt(gamma(1 / a)) / np.sqrt(gamma(3 / a))
            feat += [a, (rs - ls) * gamma(2 / a) / gamma(1 / a) * const, ls ** 2, rs ** 2]
        im = matlab_imresize_axis(matlab_imresize_axis(im, 0.5, 0), 0.5, 1)
    return np.array(feat)


def ref_score(feat):
    m = svr_model()
    z = -1 + 2 * (feat - m["feat_min"]) / (m["feat_max"] - m["feat_min"])
    total = 0.0
    for coef, sv in zip(m["coef"], m["sv"]):
        total += coef * math.exp(-float(m["gamma"]) * float(np.sum((sv - z) ** 2)))
    return total - float(m["rho"])


GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
IMAGES = {"astronaut": data.astronaut()[100:228, 150:278], "chelsea": data.chelsea()[40:137, 100:221],
          "coffee": data.coffee()[100:196, 200:360]}


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("shape", [(38, 52), (37, 51), (17, 40)])
def test_imresize_half_any_matches_matlab(shape):
    """Exact up to float64 rounding (atol 1e-9 on values up to 255), odd sizes included."""
    img = np.random.default_rng(0).random(shape) * 255
    ours = imresize_half_any(torch.tensor(img)[None, None]).numpy()[0, 0]
    ref = matlab_imresize_axis(matlab_imresize_axis(img, 0.5, 0), 0.5, 1)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def yiq_levels(x):
    """pyiqa's default grey input: round(255·(0.299 R + 0.587 G + 0.114 B)), formed with a float32
    torch.matmul as pyiqa's to_y_channel does (numpy's float32 matmul rounds a few exact .5 ties the
    other way; bit-identity with pyiqa is checked in tests/peers/test_pyiqa_defaults.py)."""
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]])
    y = torch.matmul(x.permute(0, 2, 3, 1), yiq.t()).permute(0, 3, 1, 2)[0, 0] * 255   # pyiqa's rgb2yiq
    return y.round().double().numpy()


@pytest.mark.parametrize("name", list(IMAGES))
@pytest.mark.parametrize("spec", ["brisque", "brisque:channel=gray,quantize=false"])
def test_features_and_score_match_reference(name, spec):
    """Features: relative 1e-8 (shape parameters are exact grid values); score: 1e-6 absolute.
    The default reads rounded YIQ luma (pyiqa's input); the release's unrounded rgb2gray stays a spec."""
    x = to_tensor(IMAGES[name])
    m = METRICS.create(spec)
    gray = yiq_levels(x) if spec == "brisque" else (x[0].double().permute(1, 2, 0).numpy() @ GRAY) * 255.0
    ref = ref_features(gray)
    ours = m.features(x)[0].numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-12)
    assert abs(float(m(x)) - ref_score(ref)) < 1e-4      # float32 output of a value ~1..100


def test_known_behaviour_on_distortion():
    """Monotone in additive noise on a natural crop (the metric's purpose; lower is better)."""
    x = to_tensor(IMAGES["astronaut"])
    g = torch.Generator().manual_seed(0)
    noisy = [(x + s * torch.randn(x.shape, generator=g)).clamp(0, 1) for s in (0.0, 0.05, 0.15)]
    scores = METRICS.create("brisque")(torch.cat(noisy)).tolist()
    assert scores[0] < scores[1] < scores[2], scores


def test_checklist():
    m = METRICS.create("brisque")
    assert (m.mode, m.lower_better, m.differentiable) == ("NR", True, True)
    lo, hi = m.score_range
    x = torch.cat([to_tensor(IMAGES["astronaut"][:96, :96]), to_tensor(IMAGES["chelsea"][:96, :96])])
    s = m(x)
    assert s.dtype == torch.float32 and s.shape == (2,)
    assert ((s > lo) & (s < hi)).all(), s
    single = torch.cat([m(x[:1]), m(x[1:])])
    assert torch.allclose(s, single, atol=1e-5)                       # batch consistency
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(m(xg).sum(), xg)
    assert torch.isfinite(grad).all() and (grad.flatten(1).abs().sum(1) > 0).all()
    again = METRICS.create("brisque", **m.params)                     # params round-trip
    assert again.params == m.params and torch.equal(again(x), s)
    q = METRICS.create("brisque", channel="y", quantize=True)
    assert q.params == {"channel": "y", "quantize": True}


def test_bad_inputs():
    m = METRICS.create("brisque")
    x = to_tensor(IMAGES["coffee"])
    with pytest.raises(InputError, match="x"):
        m(x[0])                                   # 3-D
    with pytest.raises(InputError, match="x"):
        m(x * 2)                                  # out of range
    with pytest.raises(InputError, match="at least"):
        m(x[..., :8, :8])
    with pytest.raises(InputError, match="channel"):
        METRICS.create("brisque", channel="rgb")


def test_model_table_is_the_published_svr():
    m = svr_model()
    assert m["sv"].shape == (770, 36) and float(m["gamma"]) == 0.05 and float(m["rho"]) == -155.845
    assert (m["feat_max"] > m["feat_min"]).all()
