"""PSNR against scikit-image's peak_signal_noise_ratio (data_range=1), at the default (RGB) and
on each luma channel. Tolerance 1e-4 dB (float32 MSE; measured ≤ 2e-5)."""
import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

import iqaguard as ig
from iqaguard.errors import InputError
from iqaguard.images import rgb_to_gray, rgb_to_y, to_tensor
from iqaguard.metrics.psnr import PSNR


def _pair():
    x = to_tensor(data.astronaut()[100:164, 150:230])
    g = torch.Generator().manual_seed(1)
    return (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1), x


def _yiq(t):
    """Y of YIQ written out in numpy (pyiqa's rgb2yiq first row)."""
    return t[0].permute(1, 2, 0).double().numpy() @ np.array([0.299, 0.587, 0.114])


def _with_eps(db):
    """skimage's PSNR with pyiqa's ε = 1e-8 added to its MSE (the default's formula)."""
    return -10 * np.log10(10 ** (-db / 10) + 1e-8)


def test_default_is_rgb_and_matches_skimage():
    """The default (bare name) takes one MSE over all channels and pixels (skimage on H×W×3)."""
    d, x = _pair()
    ref = peak_signal_noise_ratio(x[0].double().numpy(), d[0].double().numpy(), data_range=1.0)
    assert float(ig.create_metric("psnr")(d, x)) == pytest.approx(_with_eps(ref), abs=1e-4)
    assert ig.create_metric("psnr").params["channel"] == "rgb"


def test_psnry_is_yiq_luma():
    d, x = _pair()
    ref = peak_signal_noise_ratio(_yiq(x), _yiq(d), data_range=1.0)
    assert float(ig.create_metric("psnry")(d, x)) == pytest.approx(_with_eps(ref), abs=1e-4)
    assert float(PSNR(channel="yiq")(d, x)) == float(ig.create_metric("psnry")(d, x))


@pytest.mark.parametrize("channel, conv", [("y", rgb_to_y), ("gray", rgb_to_gray)])
def test_other_channels_keep_their_meaning(channel, conv):
    """'y' (rgb2ycbcr Y) and 'gray' score what they scored before the defaults changed, in the
    canonical spec a store holds (mse_floor explicit, so the old floored formula)."""
    d, x = _pair()
    ref = peak_signal_noise_ratio(conv(x)[0, 0].double().numpy(), conv(d)[0, 0].double().numpy(), data_range=1.0)
    assert float(ig.create_metric(f"psnr:channel={channel},mse_floor=1e-10")(d, x)) == pytest.approx(ref, abs=1e-4)


def test_identical_images_are_finite():
    """Default: pyiqa's ε = 1e-8 added to the MSE (80 dB); a number floors the MSE instead."""
    _, x = _pair()
    assert float(PSNR()(x, x)) == pytest.approx(80.0)
    assert float(PSNR(mse_floor=1e-10)(x, x)) == pytest.approx(100.0)
    assert float(PSNR(mse_floor=1e-6)(x, x)) == pytest.approx(60.0)


def test_default_adds_pyiqas_eps():
    """−10·log10(MSE + 1e-8): visible at a tiny MSE (here ≈ 1e-7: 69.6 dB vs 70.0 dB floored)."""
    x = torch.full((1, 3, 64, 64), 0.5)
    d = x.clone()
    d[0, 0, 0, :4] += (1e-7 * x.numel() / 4) ** 0.5          # four pixels off: MSE = 1e-7
    mse = float(((d.double() - x.double()) ** 2).mean())
    assert float(PSNR()(d, x)) == pytest.approx(-10 * np.log10(mse + 1e-8), abs=1e-3)
    assert float(PSNR(mse_floor=1e-10)(d, x)) == pytest.approx(-10 * np.log10(mse), abs=1e-3)
    assert abs(float(PSNR()(d, x)) - float(PSNR(mse_floor=1e-10)(d, x))) > 0.3


def test_bad_params():
    with pytest.raises(InputError, match="channel"):
        PSNR(channel="lab")
    with pytest.raises(InputError, match="mse_floor"):
        PSNR(mse_floor=0)
    with pytest.raises(InputError, match="mse_floor"):
        PSNR(mse_floor="tiny")
    with pytest.raises(InputError, match="channel"):
        ig.create_metric("psnry:channel=rgb")
