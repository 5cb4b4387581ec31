"""Trainable attacks uap and cnn-attack: training, held-out gain, budgets, sizes, state cache.

Analytic check: on a linear metric ``mean(w·x)`` (images away from the [0,1] walls) the best
universal perturbation in the study's ±0.1 box is the corner ``0.1·sign(w)`` (Shumitskaya et al.
2022 optimise exactly this box); Adam's first steps are ±lr per pixel whatever the gradient
scale, so after ≥ 0.1/lr consistent steps the trained patch must equal that corner exactly.
Budgets: picked_presets_v1.csv gives ℓ∞ = 0.1·amplitude (uap) and amplitude·100/255 (cnn-attack)
at the study's presets; the tests check the bound after ``attack.quantize``.

Learned metric: iqg-cnn, fitted on 32 crops (96 px) of four bundled photos and evaluated on 6
crops of the other two (disjoint content); measured gains are in the asserts' comments, the
thresholds sit at about half of them. On the retrained iqg-cnn (content disjoint from the bundled
suite) a universal perturbation fitted on only 16 crops did not transfer to the other photos
(held-out mean gain uap −0.0015, cnn-attack −0.0045 with the fit settings below), hence 32. The module runs single-threaded (training is small-batch
work; on a loaded 2-core machine two threads were 7× slower) and restores the thread count.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import iqaguard.attacks  # noqa: F401  (registers the attacks)
from iqaguard.attacks.budgets import budget_params
from iqaguard.fitting import fit_or_load, state_key, state_path
from iqaguard.attacks.universal import UAP_CLAMP, tile
from iqaguard.data.bundled import load_content
from iqaguard.errors import InputError
from iqaguard.metrics.base import wrap_metric
from iqaguard.registry import ATTACKS, METRICS

NAMES = ("uap", "cnn-attack")


def images(n=4, size=64, seed=0, lo=0.2, hi=0.8, width=None):
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, 3, size, width or size, generator=g)
    return torch.round(x * 255) / 255


class Linear(nn.Module):
    """score = mean(w·x) with a fixed ±1 weight map (periodic with period ``size``)."""

    def __init__(self, size=64, seed=3):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(1, 3, size, size, generator=g).sign())

    def forward(self, x):
        return (tile(self.w, *x.shape[-2:]) * x).mean(dim=(1, 2, 3))


def linear(seed=3, size=64, name="linear"):
    return wrap_metric(Linear(size, seed), mode="NR", score_range=(0.0, 1.0), name=name)


class ConvNet(nn.Module):
    """A small fixed random CNN, NR, higher-better."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(123)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 1, 3, padding=1))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        return torch.sigmoid(self.net(x).mean(dim=(1, 2, 3)))


def convnet():
    return wrap_metric(ConvNet(), mode="NR", score_range=(0.0, 1.0), name="convnet")


pytestmark = pytest.mark.usefixtures("one_thread")


def create(name, level="medium", **kw):
    return ATTACKS.create(name, **{**budget_params(name, level), **kw})


# -- shipped learned metric: fit once per attack ---------------------------------------------------
def _crops(contents, per, size, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in contents:
        img = load_content(c, 160)
        for _ in range(per):
            i, j = torch.randint(0, 160 - size + 1, (2,), generator=g).tolist()
            out.append(img[..., i:i + size, j:j + size])
    return torch.cat(out)


@pytest.fixture(scope="module")
def learned():
    metric = METRICS.create("iqg-cnn")
    train = _crops(["astronaut", "chelsea", "coffee", "rocket"], 8, 96, 0)
    test = _crops(["motorcycle", "grace_hopper"], 3, 96, 1)
    # uap: patch size 96 and a shorter, faster fit (epochs 4, lr 1e-2, batch 2); cnn-attack: defaults
    fitted = {"uap": create("uap", size=96, epochs=4, lr=1e-2, batch=2).fit(metric, train),
              "cnn-attack": create("cnn-attack").fit(metric, train)}
    return metric, train, test, fitted


@pytest.mark.parametrize("name", NAMES)
def test_learned_metric_heldout_gain_and_budget(learned, name):
    metric, _, test, fitted = learned
    width = metric.range_width
    with torch.no_grad():
        s0 = metric(test)
        for level in ("low", "medium", "high"):
            a = ATTACKS.create(name, **{**fitted[name].params, **budget_params(name, level)})
            a.load_state_dict(fitted[name].state_dict())
            xq = a.quantize(a(metric, test), test)
            assert (xq - test).abs().max() <= a.budget + 1e-6, level
            assert torch.equal(xq, torch.round(xq * 255) / 255)
            gain = (metric(xq) - s0) / width
            if level == "medium":
                # measured (1 thread, normalised by the score range): uap 0.0019–0.0192, mean
                # 0.0074; cnn-attack 0.0003–0.0181, mean 0.0116; 6/6 held-out crops > 0 for both.
                # Asserted: mean > 0.003 / 0.005 and at least 5 of 6 crops > 0 (cnn-attack's
                # smallest gain is 0.0003). Previous (in-sample) iqg-cnn, 16 fit crops, cnn-attack
                # at epochs 3: uap mean 0.0068, cnn-attack 0.0177, all > 0
                assert gain.mean() > (0.003 if name == "uap" else 0.005), gain
                assert int((gain > 0).sum()) >= 5, gain


# -- toy metrics -------------------------------------------------------------------------------------
def test_uap_reaches_box_corner_on_linear_metric():
    metric = linear()
    a = ATTACKS.create("uap", size=64, epochs=10, batch=2, lr=1e-2)   # 40 Adam steps ≥ 0.1/lr
    a.fit(metric, images(8, 64, seed=1))
    assert torch.equal(a.perturbation, UAP_CLAMP * metric.module.w)
    # held-out: the perturbation is x + amplitude·0.1·sign(w), the ℓ∞-optimal point
    x = images(3, 64, seed=2)
    x_adv = a(metric, x)
    assert torch.allclose(x_adv - x, (a.amplitude * UAP_CLAMP * metric.module.w).expand_as(x), atol=1e-6)
    assert a.stats.grad_calls == 0 and a.fit_stats.grad_calls == 40


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("direction", ["better", "worse"])
def test_toy_convnet_heldout_gain(name, direction):
    metric = convnet()
    a = create(name, "high", epochs=4, direction=direction, size=64) if name == "uap" else \
        create(name, "high", epochs=4, direction=direction)
    a.fit(metric, images(8, 64, seed=4, lo=0.0, hi=1.0))
    x = images(4, 64, seed=5, lo=0.0, hi=1.0)
    with torch.no_grad():
        delta = metric(a.quantize(a(metric, x), x)) - metric(x)
    sign = 1 if direction == "better" else -1
    assert (sign * delta > 0).all(), delta


def test_cnn_attack_learns_linear_direction():
    """On mean(w·x) the optimum is G(x) = sign(w) (gain = budget). A per-pixel random ±1 map is
    hard for a U-Net to memorise in 40 steps; measured: sign agreement 0.76 on held-out images,
    gain 0.36–0.37 of the optimum (random output: agreement 0.5, gain 0)."""
    metric = linear()
    a = create("cnn-attack", epochs=10, batch=2, lr=3e-3)
    a.fit(metric, images(8, 64, seed=1))
    x = images(3, 64, seed=2)
    d = a(metric, x) - x
    agree = (d.sign() == metric.module.w.sign()).float().mean()
    assert agree > 0.7, agree
    ratio = (metric(x + d) - metric(x)) / a.budget
    assert (ratio > 0.25).all(), ratio


def test_full_reference_fit_needs_ref():
    fr = wrap_metric(lambda x, ref: ((x - ref) ** 2).mean(dim=(1, 2, 3)), mode="FR", lower_better=False,
                     score_range=(0.0, 0.01), name="mse-up")
    x = images(4, 64, seed=6)
    a = create("uap", size=64, epochs=2)
    with pytest.raises(InputError, match="ref"):
        a.fit(fr, x)
    a.fit(fr, x, ref=x)
    with pytest.raises(InputError, match="ref"):
        a(fr, x)
    x_adv = a(fr, x, ref=x)
    assert (fr(x_adv, x) > 0).all()


def test_nondifferentiable_metric_cannot_train_but_can_be_attacked():
    nd = wrap_metric(lambda x: x.mean(dim=(1, 2, 3)), mode="NR", score_range=(0.0, 1.0),
                     differentiable=False, name="nd")
    with pytest.raises(InputError, match="differentiable"):
        create("uap", size=64).fit(nd, images())
    a = create("uap", size=64, epochs=1).fit(linear(), images())
    assert a(nd, images()).shape == (4, 3, 64, 64)   # a trained state transfers to any metric


# -- contract ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_unfitted_call_raises(name):
    a = ATTACKS.create(name)
    assert a.trainable and not a.fitted and a.threat == "universal"
    with pytest.raises(InputError, match="fit"):
        a(linear(), images())


@pytest.mark.parametrize("name", NAMES)
def test_params_round_trip_and_budget(name):
    a = create(name, "high", epochs=7, seed=3)
    b = ATTACKS.create(name, **a.params)
    assert b.params == a.params
    for k, v in a.params.items():
        assert getattr(b, k) == v
    assert a.budget == pytest.approx(8 / 255, abs=1e-6)
    assert ATTACKS.create(name).trainable and not ATTACKS.create("fgsm").trainable


@pytest.mark.parametrize("name,bad", [
    ("uap", {"amplitude": -0.1}), ("uap", {"epochs": 0}), ("uap", {"lr": 0.0}), ("uap", {"size": 4}),
    ("uap", {"batch": 1.5}), ("uap", {"seed": None}), ("uap", {"seed": "1"}), ("uap", {"direction": "up"}),
    ("cnn-attack", {"amplitude": float("nan")}), ("cnn-attack", {"ngf": 0}), ("cnn-attack", {"lr": -1.0}),
    ("cnn-attack", {"epochs": True}), ("uap", {"nope": 1}),
])
def test_bad_params_raise(name, bad):
    with pytest.raises(InputError):
        ATTACKS.create(name, **bad)


@pytest.mark.parametrize("name", NAMES)
def test_bad_training_input_raises(name):
    a = ATTACKS.create(name)
    with pytest.raises(InputError, match="images"):
        a.fit(linear(), images().double())
    with pytest.raises(InputError):
        a.load_state_dict({"perturbation": torch.zeros(1, 3, 8, 8)})


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_seeded(name):
    metric, x = convnet(), images(6, 64, seed=7, lo=0, hi=1)
    kw = {"size": 64} if name == "uap" else {}
    s1 = create(name, epochs=2, **kw).fit(metric, x).state_dict()
    s2 = create(name, epochs=2, **kw).fit(metric, x).state_dict()
    s3 = create(name, epochs=2, seed=1, **kw).fit(metric, x).state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert any(not torch.equal(s1[k], s3[k]) for k in s1)


def test_uap_any_size_tiles_the_same_patch():
    a = create("uap", epochs=5, batch=1).fit(convnet(), images(4, 128, seed=8, lo=0, hi=1))
    assert a.perturbation.shape == (1, 3, 256, 256)
    assert a.perturbation.abs().amax() <= UAP_CLAMP
    # training tiles from the top-left corner, as the test does: 128-px images train that corner
    assert (a.perturbation[..., :128, :128].abs() > 1e-3).float().mean() > 0.9
    assert (a.perturbation[..., 128:, :] == 1e-4).all() and (a.perturbation[..., 128:] == 1e-4).all()
    metric = convnet()
    big = images(2, 300, seed=9)
    d_big = a(metric, big) - big
    assert torch.allclose(d_big[0], d_big[1], atol=1e-6)                     # universal
    assert torch.allclose(d_big[..., :44, :], d_big[..., 256:, :], atol=1e-6)  # tiled, period 256
    assert torch.allclose(d_big[0, :, :256, :256], a.amplitude * a.perturbation[0], atol=1e-6)
    small = images(3, 96, seed=10, width=160)
    d_small = a(metric, small) - small
    assert torch.allclose(d_small, d_big[:1, :, :96, :160].expand_as(d_small), atol=1e-6)
    for x, d in ((big, d_big), (small, d_small)):
        assert (a.quantize(x + d, x) - x).abs().max() <= a.budget + 1e-6


def test_cnn_attack_any_size():
    a = create("cnn-attack", epochs=1).fit(convnet(), images(4, 64, seed=8, lo=0, hi=1))
    for shape in ((2, 3, 96, 160), (1, 3, 300, 300), (1, 3, 17, 33)):
        x = torch.round(torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 255) / 255
        x_adv = a(convnet(), x)
        assert x_adv.shape == x.shape
        assert (a.quantize(x_adv, x) - x).abs().max() <= a.budget + 1e-6
        assert (x_adv != x).any()
    with pytest.raises(InputError, match="16"):
        a(convnet(), torch.zeros(1, 3, 8, 64))


@pytest.mark.parametrize("name", NAMES)
def test_batch_independence(name):
    kw = {"size": 64} if name == "uap" else {}
    a = create(name, epochs=1, **kw).fit(convnet(), images(4, 64, seed=8, lo=0, hi=1))
    x = images(3, 80, seed=11, lo=0, hi=1)
    together = a(convnet(), x)
    alone = torch.cat([a(convnet(), x[i:i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-6)


# -- cache -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_fit_or_load_trains_once_and_reloads_bit_identically(name, tmp_path, monkeypatch):
    metric, x = convnet(), images(4, 64, seed=12, lo=0, hi=1)
    kw = {"size": 64} if name == "uap" else {}
    calls = []
    a = create(name, epochs=1, **kw)
    real_fit = a.fit
    monkeypatch.setattr(a, "fit", lambda *args: calls.append(1) or real_fit(*args))
    messages = []
    assert fit_or_load(a, metric, x, tmp_path, log=messages.append) is a
    assert calls == [1] and a.fitted and a.fit_stats.grad_calls == 1
    path = state_path(a, state_key(a, metric, x), tmp_path)
    assert path.is_file() and path.name.startswith(f"{name}-") and len(path.stem) == len(name) + 17
    assert [p.name for p in tmp_path.iterdir()] == [path.name]   # no temp file left behind

    # a second attack at another budget loads the same state: no fit
    b = create(name, "high", epochs=1, **kw)
    monkeypatch.setattr(b, "fit", lambda *args: pytest.fail("fit called although the state is cached"))
    fit_or_load(b, metric, x, tmp_path, log=messages.append)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any("loaded" in m for m in messages)
    x_test = images(2, 64, seed=13, lo=0, hi=1)
    c = create(name, "high", epochs=1, **kw)
    c.load_state_dict(sa)
    assert torch.equal(b(metric, x_test), c(metric, x_test))

    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["key"] == state_key(a, metric, x) and meta["metric"].startswith("convnet")
    assert "amplitude" not in meta["attack"]


@pytest.mark.parametrize("corruption", ["garbage", "truncated", "other-key"])
def test_corrupt_cache_file_is_refit(corruption, tmp_path):
    metric, x = linear(), images(4, 64, seed=14)
    a = fit_or_load(create("uap", size=64, epochs=1), metric, x, tmp_path)
    path = state_path(a, state_key(a, metric, x), tmp_path)
    good = path.read_bytes()
    if corruption == "garbage":
        path.write_bytes(b"not a safetensors file")
    elif corruption == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:
        from safetensors.torch import save_file
        save_file({"perturbation": torch.zeros(1, 3, 64, 64)}, str(path), metadata={"key": "0" * 64})
    b = create("uap", size=64, epochs=1)
    calls = []
    real_fit = b.fit
    b.fit = lambda *args: calls.append(1) or real_fit(*args)
    messages = []
    fit_or_load(b, metric, x, tmp_path, log=messages.append)
    assert calls == [1] and any("refit" in m for m in messages)
    assert torch.equal(b.perturbation, a.perturbation)
    c = create("uap", size=64, epochs=1)
    c.fit = lambda *args: pytest.fail("refit twice")
    fit_or_load(c, metric, x, tmp_path)            # the rewritten file is good again


def test_state_key_depends_on_what_shapes_training():
    x = images(4, 64, seed=15)
    metric = linear()
    a = create("uap", size=64)
    key = state_key(a, metric, x)
    assert len(key) == 64 and key == state_key(create("uap", size=64), linear(), x.clone())
    assert key == state_key(create("uap", "high", size=64), metric, x)        # test-time amplitude
    assert key == state_key(a, metric, x + 0.4 / 255)                          # same 8-bit images
    changed_pixel = x.clone()
    changed_pixel[0, 0, 0, 0] += 1 / 255
    assert key != state_key(a, metric, changed_pixel)
    assert key != state_key(a, metric, x[:3])
    assert key != state_key(a, metric, x, ref=x)
    assert key != state_key(a, linear(seed=4), x)                                # other weights
    assert key != state_key(a, linear(name="other"), x)                          # other spec
    for kw in ({"epochs": 6}, {"lr": 2e-3}, {"seed": 1}, {"batch": 8}, {"size": 32}, {"direction": "worse"}):
        assert key != state_key(create("uap", **{"size": 64, **kw}), metric, x), kw
    assert state_key(create("cnn-attack"), metric, x) != state_key(create("cnn-attack", ngf=8), metric, x)

