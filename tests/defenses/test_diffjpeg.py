"""diffjpeg (differentiable JPEG) against real JPEG (Pillow / libjpeg-turbo), its building blocks
against libjpeg's tables and scipy's DCT, its gradients, and jpeg's BPDA surrogate."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.fft import dctn

import iqaguard.defenses  # noqa: F401  (registers the defenses)
from iqaguard.data.bundled import CONTENTS, load_content
from iqaguard.defenses.purification import diffjpeg as dj
from iqaguard.defenses.purification.jpeg import jpeg_roundtrip
from iqaguard.errors import InputError
from iqaguard.registry import DEFENSES

PRESETS = [10, 30, 50, 70, 90]


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1 / ((a - b) ** 2).mean((1, 2, 3)))


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """The six bundled pristine photos at 256×256 (on the 8-bit grid)."""
    return torch.cat([load_content(c, 256) for c in CONTENTS])


@pytest.mark.parametrize("q", [1, 10, 25, 30, 49, 50, 51, 70, 90, 100])
def test_tables_equal_libjpeg(q):
    """The scaled tables are exactly the ones Pillow (libjpeg-turbo) writes into the file; Pillow's
    ``quantization`` lists them in natural (row-major) order."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, "JPEG", quality=q)
    buf.seek(0)
    tables = Image.open(buf).quantization
    assert dj.scaled_table(dj.LUMA_TABLE, q).flatten().tolist() == list(tables[0])
    assert dj.scaled_table(dj.CHROMA_TABLE, q).flatten().tolist() == list(tables[1])


def test_quality_scale_and_dct():
    assert [dj.quality_scale(q) for q in (1, 10, 30, 49, 50, 70, 90, 100)] == [5000, 500, 166, 102, 100, 60, 20, 0]
    d = dj.dct_matrix()
    torch.testing.assert_close(d @ d.T, torch.eye(8), atol=1e-6, rtol=0)
    block = np.random.default_rng(0).uniform(-128, 127, (8, 8))
    ours = (d.double() @ torch.from_numpy(block) @ d.double().T).numpy()
    np.testing.assert_allclose(ours, dctn(block, norm="ortho"), atol=1e-4)  # JPEG's FDCT = orthonormal DCT-II


@pytest.mark.parametrize("q,mean_db,min_db", [(10, 41.5, 39.5), (30, 42.5, 41.5), (50, 43.0, 41.0),
                                               (70, 43.5, 42.0), (90, 44.5, 43.0)])
def test_psnr_vs_pillow_on_bundled_photos(photos, q, mean_db, min_db):
    """PSNR(diffjpeg, Pillow JPEG) on the six bundled 256² photos; measured mean (min) dB:
    q10 42.5 (40.4), q30 43.6 (42.5), q50 43.9 (41.8), q70 44.6 (42.8), q90 45.5 (43.8).
    Bounds ~1 dB below. For scale, PSNR(Pillow JPEG, original) is only 25.6–35.2 dB, and
    kornia's jpeg_codec_differentiable measures 37.5/40.3/41.5/42.4/44.0: ours must beat it."""
    real = DEFENSES.create("jpeg", quality=q).purify(photos)
    ours = DEFENSES.create("diffjpeg", quality=q).purify(photos)
    p = psnr(ours, real)
    assert float(p.mean()) >= mean_db and float(p.min()) >= min_db, p
    assert float(p.mean()) > float(psnr(photos, real).mean()) + 8  # it models the compression
    from kornia.enhance import jpeg_codec_differentiable

    assert float(p.mean()) > float(psnr(jpeg_codec_differentiable(photos, torch.tensor([float(q)])), real).mean())


def test_psnr_vs_pillow_odd_size_and_cubic(photos):
    """250×243 (not multiples of 16): with reflect padding (the study's) measured 40.0 / 44.9 dB
    at q 10 / 90 (replicate padding, libjpeg's, would give 42.2 / 45.4). The cubic rounding
    (ste=False) measured 43.7 dB at q 50 on 256² (ste 43.9)."""
    x = photos[:, :, :250, :243]
    for q, bound in [(10, 39.0), (90, 44.0)]:
        real = DEFENSES.create("jpeg", quality=q).purify(x)
        y = DEFENSES.create("diffjpeg", quality=q).purify(x)
        assert y.shape == x.shape
        assert float(psnr(y, real).mean()) >= bound
    real = DEFENSES.create("jpeg", quality=50).purify(photos)
    cubic = DEFENSES.create("diffjpeg", quality=50, ste=False).purify(photos)
    assert float(psnr(cubic, real).mean()) >= 42.5
    assert not torch.equal(cubic, DEFENSES.create("diffjpeg", quality=50).purify(photos))


@pytest.mark.parametrize("rgb,tol", [((131, 131, 131), 0.5), ((150, 150, 150), 0.5),
                                     ((200, 80, 30), 4.0), ((10, 240, 120), 4.0), ((77, 77, 200), 4.0)])
def test_flat_colours_vs_pillow(rgb, tol):
    """A flat image keeps only DC terms. Grey (Cb = Cr = 0) is computed exactly, so it matches
    Pillow's 8-bit output within its rounding (0.5/255); colours within 4/255 (measured ≤ 2.96:
    libjpeg rounds Y/Cb/Cr to 8 bits before the DCT, we do not)."""
    a = np.zeros((32, 48, 3), np.uint8)
    a[:] = rgb
    x = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    for q in (10, 50, 90):
        ours = dj.diff_jpeg(x, q)[0].permute(1, 2, 0).numpy() * 255
        np.testing.assert_allclose(ours, jpeg_roundtrip(a, q).astype(np.float64), atol=tol + 1e-3, rtol=0)


def test_checklist():
    d = DEFENSES.create("diffjpeg", quality=30)
    assert d.differentiable and not d.randomized and not d.changes_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 37, 53, generator=g)
    y = d.purify(x)
    assert y.shape == x.shape and y.dtype == torch.float32 and 0 <= float(y.min()) and float(y.max()) <= 1
    assert float((y - x).abs().mean()) > 0.01
    torch.testing.assert_close(y, torch.cat([d.purify(x[i:i + 1]) for i in range(3)]), atol=1e-6, rtol=0)
    assert torch.equal(y, d.purify(x))
    tiny = torch.rand(1, 3, 5, 7, generator=g)  # too small to reflect-pad to 16: replicated instead
    assert d.purify(tiny).shape == tiny.shape
    d2 = DEFENSES.create("diffjpeg", **d.params)
    assert d2.params == {"quality": 30, "ste": True} and torch.equal(d2.purify(x), y)
    assert DEFENSES.defaults("diffjpeg") == {"quality": 50, "ste": True}


@pytest.mark.parametrize("param,value", [("quality", 0), ("quality", 101), ("quality", 50.5), ("quality", True),
                                         ("ste", 1), ("ste", "yes"), ("ste", None)])
def test_bad_params(param, value):
    with pytest.raises(InputError, match=param):
        DEFENSES.create("diffjpeg", **{param: value})


def test_ste_gradient_is_the_codec_without_rounding(monkeypatch):
    """Straight-through: the backward pass is that of the codec with rounding replaced by the
    identity (colour transform, 2×2 chroma average, bilinear upsampling), exactly."""
    x = (0.3 + 0.4 * torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(1)))
    w = torch.randn(2, 3, 24, 32, generator=torch.Generator().manual_seed(2))

    def grad(fn):
        t = x.clone().requires_grad_(True)
        (fn(t) * w).sum().backward()
        return t.grad

    g = grad(lambda t: dj.diff_jpeg(t, 90))
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
    monkeypatch.setattr(dj, "ste_round", lambda v: v)
    g_lin = grad(lambda t: dj.diff_jpeg(t, 90))
    torch.testing.assert_close(g, g_lin, atol=1e-5, rtol=1e-5)
    monkeypatch.undo()
    gc = grad(lambda t: dj.diff_jpeg(t, 90, ste=False))  # cubic: finite, non-zero, different
    assert torch.isfinite(gc).all() and float(gc.abs().sum()) > 0 and not torch.allclose(gc, g)


def test_jpeg_bpda_surrogate_is_diffjpeg(photos):
    """jpeg's estimate_forward is diffjpeg at the same quality: differentiable, and close to the
    real codec (the PSNR bounds above)."""
    x = photos[:2, :, :64, :80].clone()
    for q in (10, 50, 90):
        j = DEFENSES.create("jpeg", quality=q)
        assert not j.differentiable
        assert torch.equal(j.estimate_forward(x), DEFENSES.create("diffjpeg", quality=q).purify(x))
        assert float(psnr(j.estimate_forward(x), j.purify(x)).min()) > 37
    t = x.clone().requires_grad_(True)
    DEFENSES.create("jpeg").estimate_forward(t).sum().backward()
    assert torch.isfinite(t.grad).all() and float(t.grad.abs().sum()) > 0
    assert not torch.allclose(t.grad, torch.ones_like(t.grad))  # no longer the identity
