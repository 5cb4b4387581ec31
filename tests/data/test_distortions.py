"""Synthetic distortions: determinism, range, and severity that grows with the level.

Monotone severity is the bundled suite's ground truth (truth = -level), so it is checked on two
real contents for every type, plus a type-appropriate measure computed with scikit-image where
PSNR alone says little (colour saturation, brightness, contrast).
"""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.color import rgb2hsv, rgb2lab

from iqaguard.data.bundled import load_content
from iqaguard.data.distortions import DISTORTIONS, LEVELS, distort
from iqaguard.errors import InputError
from iqaguard.images import quantize_8bit

SIZE = 128
NAMES = list(DISTORTIONS)


@pytest.fixture(scope="module")
def photos():
    return {c: load_content(c, SIZE) for c in ("astronaut", "coffee")}


@pytest.fixture(scope="module")
def distorted(photos):
    """(type, content) -> [level 1..5 outputs], computed once."""
    return {(n, c): [DISTORTIONS[n](x, lv, 7) for lv in range(1, 6)]
            for n in NAMES for c, x in photos.items()}


def psnr(a, b):
    return 10 * math.log10(1.0 / float(((a - b) ** 2).mean()))


def test_at_least_ten_types_with_five_levels():
    assert len(DISTORTIONS) >= 10
    assert all(len(LEVELS[n]) == 5 for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_output_contract_and_determinism(name, photos, distorted):
    x = photos["astronaut"]
    for lv, y in enumerate(distorted[(name, "astronaut")], start=1):
        assert y.shape == x.shape and y.dtype == torch.float32
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert torch.equal(y, quantize_8bit(y)), "output must lie on the 8-bit grid"
        assert torch.equal(y, DISTORTIONS[name](x.clone(), lv, 7)), "same (x, level, seed) must give the same image"
        assert not torch.equal(y, x), f"level {lv} left the image unchanged"


@pytest.mark.parametrize("name", NAMES)
def test_psnr_strictly_decreases_with_level(name, photos, distorted):
    for content, x in photos.items():
        p = [psnr(y, x) for y in distorted[(name, content)]]
        assert all(p[i] > p[i + 1] for i in range(4)), f"{name} on {content}: PSNR by level {p}"


def _np(y):
    return y[0].permute(1, 2, 0).double().numpy()


def _mean_lab_chroma(y):
    lab = rgb2lab(_np(y))            # independent colour conversion (scikit-image)
    return float(np.hypot(lab[..., 1], lab[..., 2]).mean())


@pytest.mark.parametrize("name, measure, direction", [
    ("color_saturation_hsv", lambda y: float(rgb2hsv(_np(y))[..., 1].mean()), -1),
    ("color_saturation_lab", _mean_lab_chroma, +1),
    ("brighten", lambda y: float(y.mean()), +1),
    ("darken", lambda y: float(y.mean()), -1),
    ("contrast_change", lambda y: float(y.std()), -1),
])
def test_type_specific_measure_is_monotone(name, measure, direction, photos, distorted):
    for content, x in photos.items():
        m = [measure(x)] + [measure(y) for y in distorted[(name, content)]]
        steps = [direction * (m[i + 1] - m[i]) for i in range(5)]
        assert all(s > 0 for s in steps), f"{name} on {content}: measure by level 0..5 {m}"


def test_mean_shift_magnitude_grows(photos, distorted):
    for content, x in photos.items():
        d = [abs(float(y.mean() - x.mean())) for y in distorted[("mean_shift", content)]]
        assert all(d[i] < d[i + 1] for i in range(4)), d


def test_gaussian_blur_matches_scipy(photos):
    # scipy.ndimage.gaussian_filter with mode='nearest' (= replicate) and truncate=3 uses the same
    # kernel radius as ours (int(3σ+0.5) == ceil(3σ) for our σ); outputs agree up to one 8-bit step.
    x = photos["coffee"]
    for lv, sigma in enumerate(LEVELS["gaussian_blur"], start=1):
        ref = ndimage.gaussian_filter(x[0].double().numpy(), sigma=(0, sigma, sigma), mode="nearest", truncate=3.0)
        ref = quantize_8bit(torch.from_numpy(ref).float()[None])
        y = DISTORTIONS["gaussian_blur"](x, lv, 0)
        assert float((y - ref).abs().max()) <= 1 / 255 + 1e-6, sigma


@pytest.mark.parametrize("name", ["gaussian_blur", "lens_blur", "motion_blur", "color_diffusion", "pixelate"])
def test_filters_preserve_a_constant_image(name):
    x = torch.full((1, 3, 48, 48), 0.0)
    x[:, 0], x[:, 1], x[:, 2] = 100 / 255, 150 / 255, 50 / 255
    y = DISTORTIONS[name](x, 5, 3)
    assert float((y - x).abs().max()) <= 1 / 255 + 1e-6


def test_color_diffusion_keeps_lightness(photos):
    x = photos["astronaut"]
    y = DISTORTIONS["color_diffusion"](x, 5, 0)
    dl = np.abs(rgb2lab(_np(y))[..., 0] - rgb2lab(_np(x))[..., 0])
    # only gamut clipping and 8-bit rounding move L*: measured median 0.3, mean ~0.6
    assert np.median(dl) < 1.0 and dl.mean() < 2.0


def test_white_noise_has_the_stated_variance():
    x = torch.full((1, 3, 128, 128), 128 / 255)
    for lv, var in enumerate(LEVELS["white_noise"], start=1):
        std = float((DISTORTIONS["white_noise"](x, lv, 11) - x).std())
        # 8-bit rounding adds variance (1/255)²/12; 49k samples -> sampling error < 1%
        expected = math.sqrt(var + (1 / 255) ** 2 / 12)
        assert abs(std - expected) / expected < 0.03, (var, std, expected)


def test_impulse_noise_density():
    x = torch.full((1, 3, 128, 128), 128 / 255)
    for lv, density in enumerate(LEVELS["impulse_noise"], start=1):
        changed = float((DISTORTIONS["impulse_noise"](x, lv, 5) != x).float().mean())
        sd = math.sqrt(density * (1 - density) / x.numel())
        assert abs(changed - density) < 4 * sd + 1e-4, (density, changed)


def test_quantizers_limit_the_number_of_values(photos):
    x = photos["coffee"]
    for lv, n in enumerate(LEVELS["quantization"], start=1):
        y = DISTORTIONS["quantization"](x, lv, 0)
        assert all(len(torch.unique(y[0, c])) <= n for c in range(3))
    for lv, n in enumerate(LEVELS["color_quantization"], start=1):
        y = DISTORTIONS["color_quantization"](x, lv, 0)
        assert len(torch.unique(y[0].reshape(3, -1), dim=1).T) <= n


def test_pixelate_makes_constant_blocks():
    x = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    y = DISTORTIONS["pixelate"](x, 3, 0)          # block 4 divides 64
    blocks = y.reshape(1, 3, 16, 4, 16, 4)
    assert torch.equal(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))


@pytest.mark.parametrize("name", ["white_noise", "impulse_noise", "multiplicative_noise", "motion_blur",
                                  "non_eccentricity_patch", "color_block"])
def test_seed_changes_the_random_draw(name, photos):
    x = photos["astronaut"]
    assert not torch.equal(DISTORTIONS[name](x, 3, 1), DISTORTIONS[name](x, 3, 2))


def test_batch_of_two_matches_single_images_for_deterministic_types(photos):
    x = torch.cat([photos["astronaut"], photos["coffee"]])
    for name in ("jpeg", "gaussian_blur", "color_quantization", "contrast_change"):
        y = DISTORTIONS[name](x, 4, 0)
        assert torch.equal(y[1:], DISTORTIONS[name](x[1:], 4, 0)), name


@pytest.mark.parametrize("level", [0, 6, 2.0, True, "3"])
def test_bad_level_is_rejected(level, photos):
    with pytest.raises(InputError, match="level"):
        DISTORTIONS["jpeg"](photos["coffee"], level, 0)


def test_bad_input_and_name_are_rejected(photos):
    with pytest.raises(InputError, match="x"):
        DISTORTIONS["jpeg"](photos["coffee"] * 2, 1, 0)
    with pytest.raises(InputError, match="seed"):
        DISTORTIONS["jpeg"](photos["coffee"], 1, -1)
    with pytest.raises(InputError, match="valid: .*gaussian_blur"):
        distort(photos["coffee"], "gausian_blur", 1)
