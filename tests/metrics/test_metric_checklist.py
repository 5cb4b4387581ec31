"""Per-component checklist shared by psnr, psnry, ssim, ssimc, ms_ssim and niqe (at their defaults).

identity, range, dtype/shape, batch consistency, gradients, input validation, params round-trip.
"""
import pytest
import torch
from skimage import data

import iqaguard.metrics  # noqa: F401  (registers the built-in metrics)
from iqaguard.errors import InputError
from iqaguard.images import to_tensor
from iqaguard.registry import METRICS

# name -> (image side, best value on x vs x or None for NR)
CASES = {"psnr": (64, 80.0), "psnry": (64, 80.0), "ssim": (64, 1.0), "ssimc": (64, 1.0),
         "ms_ssim": (176, 1.0), "niqe": (192, None)}
NAMES = list(CASES)


def _images(name, n=3, noise=0.04, seed=0):
    side = CASES[name][0]
    crops = [data.astronaut()[200:200 + side, 150:150 + side], data.chelsea()[50:50 + side, 100:100 + side],
             data.coffee()[100:100 + side, 200:200 + side]]
    clean = torch.cat([to_tensor(c) for c in crops[:n]])
    g = torch.Generator().manual_seed(seed)
    return (clean + noise * torch.randn(clean.shape, generator=g)).clamp(0, 1), clean


def _call(m, x, ref):
    return m(x, ref) if m.mode == "FR" else m(x)


@pytest.mark.parametrize("name", NAMES)
def test_declared_attributes(name):
    m = METRICS.create(name)
    assert m.mode == ("NR" if name == "niqe" else "FR")
    assert m.lower_better is (name == "niqe")
    assert m.differentiable is True
    lo, hi = m.score_range
    assert lo < hi


@pytest.mark.parametrize("name", [n for n in NAMES if CASES[n][1] is not None])
def test_identity_gives_best_value(name):
    _, clean = _images(name)
    s = METRICS.create(name)(clean, clean)
    assert torch.allclose(s, torch.full_like(s, CASES[name][1]), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_range_dtype_shape(name):
    x, clean = _images(name)
    m = METRICS.create(name)
    s = _call(m, x, clean)
    assert s.dtype == torch.float32 and s.shape == (3,)
    lo, hi = m.score_range
    assert ((s >= lo) & (s <= hi)).all(), (s, m.score_range)


@pytest.mark.parametrize("name", NAMES)
def test_batch_consistency(name):
    x, clean = _images(name)
    m = METRICS.create(name)
    batch = _call(m, x, clean)
    single = torch.cat([_call(m, x[i:i + 1], clean[i:i + 1]) for i in range(3)])
    assert torch.allclose(batch, single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_finite_and_nonzero(name):
    x, clean = _images(name, n=2)
    x = x.requires_grad_(True)
    s = _call(METRICS.create(name), x, clean)
    (g,) = torch.autograd.grad(s.sum(), x)
    assert torch.isfinite(g).all()
    assert (g.flatten(1).abs().sum(1) > 0).all()


def _bad_inputs(name):
    x, clean = _images(name, n=1)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    cases = {"dtype": (x.double(), clean), "ndim": (x[0], clean), "nan": (nan, clean),
             "above 1": (x * 1.5, clean), "channels": (x[:, :1], clean)}
    if CASES[name][1] is not None:
        cases["no ref"] = (x, None)
        cases["shape"] = (x, clean[..., :-1])
    return cases


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises(name):
    m = METRICS.create(name)
    for what, (x, ref) in _bad_inputs(name).items():
        with pytest.raises(InputError):
            m(x, ref) if ref is not None else m(x)
            pytest.fail(f"{what} accepted")


@pytest.mark.parametrize("name", NAMES)
def test_params_round_trip(name):
    x, clean = _images(name, n=2)
    m = METRICS.create(name)
    m2 = METRICS.create(name, **m.params)
    assert m2.params == m.params and m.params
    assert torch.equal(_call(m, x, clean), _call(m2, x, clean))
    # a non-default parameter survives the round trip too
    alt = {"psnr": {"channel": "y"}, "psnry": {"mse_floor": 1e-3}, "ssim": {"channel": "rgb"},
           "ssimc": {"win_size": 7}, "ms_ssim": {"channel": "rgb"}, "niqe": {"channel": "y"}}[name]
    m3 = METRICS.create(name, **alt)
    m4 = METRICS.create(name, **m3.params)
    assert torch.equal(_call(m3, x, clean), _call(m4, x, clean))
    assert not torch.equal(_call(m3, x, clean), _call(m, x, clean))
