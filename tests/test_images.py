import io

import numpy as np
import pytest
import torch
from PIL import Image

from iqaguard import InputError
from iqaguard.images import (check_image, load_image, quantize_8bit, quantize_within, rgb_to_y,
                             save_png)


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


@pytest.fixture
def rgb_array():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)


def test_round_trip_png(tmp_path, rgb_array):
    x = load_image(_save(Image.fromarray(rgb_array), tmp_path / "a.png"))
    assert x.shape == (1, 3, 20, 30) and x.dtype == torch.float32
    assert np.array_equal((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), rgb_array)
    save_png(x, tmp_path / "b.png")
    assert torch.equal(load_image(tmp_path / "b.png"), x)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16"])
def test_modes_become_rgb(tmp_path, rgb_array, mode):
    base = Image.fromarray(rgb_array)
    if mode == "I;16":
        grey = (np.asarray(base.convert("L")).astype(np.uint16) * 257)
        img = Image.fromarray(grey)
        assert img.mode.startswith("I;16")
        ext = "png"
    else:
        img = base.convert(mode)
        ext = "tif" if mode == "CMYK" else "png"
    x = load_image(_save(img, tmp_path / f"a.{ext}"))
    assert x.shape == (1, 3, 20, 30) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    if mode in ("L", "I;16"):
        expected = np.asarray(base.convert("L")).astype(np.float32) / 255
        assert np.allclose(x[0, 0].numpy(), expected, atol=1 / 255)
        assert torch.equal(x[0, 0], x[0, 1])


def test_exif_orientation(tmp_path, rgb_array):
    img = Image.fromarray(rgb_array)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    path = tmp_path / "o.jpg"
    img.save(path, exif=exif, quality=95)
    x = load_image(path)
    assert x.shape == (1, 3, 30, 20)


def test_bad_files_name_the_file(tmp_path, rgb_array):
    missing = tmp_path / "nope.png"
    with pytest.raises(InputError, match="nope.png.*does not exist"):
        load_image(missing)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty.png.*empty"):
        load_image(empty)
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    with pytest.raises(InputError, match="text.jpg.*not a readable image"):
        load_image(text)
    buf = io.BytesIO()
    Image.fromarray(rgb_array).save(buf, "JPEG", quality=90)
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match="trunc.jpg.*truncated"):
        load_image(trunc)
    with pytest.raises(InputError, match="not a file"):
        load_image(tmp_path)


def test_decompression_bomb(tmp_path):
    big = Image.new("1", (10000, 10000))  # 1e8 pixels > limit; 1-bit keeps the file tiny
    path = tmp_path / "bomb.png"
    big.save(path)
    with pytest.raises(InputError, match="bomb.png.*too large"):
        load_image(path)


@pytest.mark.parametrize("bad,msg", [
    (torch.zeros(3, 8, 8), "4-D"),
    (torch.zeros(1, 1, 8, 8), "3 channels"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.float64), "float32"),
    (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
    (torch.full((1, 3, 8, 8), 1.5), r"\[0,1\]"),
    (np.zeros((1, 3, 8, 8)), "torch.Tensor"),
])
def test_check_image(bad, msg):
    with pytest.raises(InputError, match=msg):
        check_image(bad, "x")


def test_quantize_within_respects_budget():
    g = torch.Generator().manual_seed(1)
    x = torch.round(torch.rand(4, 3, 16, 16, generator=g) * 255) / 255
    for eps in (0.01, 2 / 255, 4 / 255, 0.0123):
        x_adv = (x + eps * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
        x_adv = torch.where(torch.rand(x.shape, generator=g) > 0.5, (x + eps).clamp(0, 1), x_adv)
        q = quantize_within(x_adv, x, eps)
        assert float((q - x).abs().max()) <= eps + 1e-6
        assert torch.equal(q, quantize_8bit(q))


def test_rgb_to_y_matches_bt601():
    # MATLAB rgb2ycbcr: white -> 235, black -> 16
    assert float(rgb_to_y(torch.ones(1, 3, 1, 1))) == pytest.approx(235 / 255, abs=1e-3)
    assert float(rgb_to_y(torch.zeros(1, 3, 1, 1))) == pytest.approx(16 / 255)
