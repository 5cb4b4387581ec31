"""PSNR against scikit-image's peak_signal_noise_ratio (data_range=1), on luma and on RGB."""
import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from iqaguard.errors import InputError
from iqaguard.images import rgb_to_y, to_tensor
from iqaguard.metrics.psnr import PSNR


def _pair():
    x = to_tensor(data.astronaut()[100:164, 150:230])
    g = torch.Generator().manual_seed(1)
    return (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1), x


def test_y_matches_skimage():
    d, x = _pair()
    ref = peak_signal_noise_ratio(rgb_to_y(x)[0, 0].double().numpy(), rgb_to_y(d)[0, 0].double().numpy(), data_range=1.0)
    assert float(PSNR()(d, x)) == pytest.approx(ref, abs=1e-4)


def test_rgb_matches_skimage():
    """channel='rgb': one MSE over all channels and pixels (skimage on the H×W×3 array)."""
    d, x = _pair()
    ref = peak_signal_noise_ratio(x[0].double().numpy(), d[0].double().numpy(), data_range=1.0)
    assert float(PSNR(channel="rgb")(d, x)) == pytest.approx(ref, abs=1e-4)


def test_identical_images_hit_the_floor():
    _, x = _pair()
    assert float(PSNR()(x, x)) == pytest.approx(100.0)
    assert float(PSNR(mse_floor=1e-6)(x, x)) == pytest.approx(60.0)


def test_bad_params():
    with pytest.raises(InputError, match="channel"):
        PSNR(channel="lab")
    with pytest.raises(InputError, match="mse_floor"):
        PSNR(mse_floor=0)
