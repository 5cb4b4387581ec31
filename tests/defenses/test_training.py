"""Contract of the adversarial-training family (every registered ``family == "training"``
defense, at its defaults, on a tiny differentiable metric) and its pieces."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import iqaguard as ig

pytestmark = pytest.mark.usefixtures("one_thread")
from iqaguard import InputError
from iqaguard.registry import DEFENSES
from iqaguard.defenses.training import TrainedDefense, train_defense_command
from iqaguard.defenses.training.apgd import apgd_linf, checkpoints
from iqaguard.defenses.training.labels import ScoreCorrection
from iqaguard.fitting import fit_or_load

# the family is a class attribute: read it from the factory (some purifiers need weights to be built)
TRAINING = [n for n in ig.list_defenses() if getattr(DEFENSES.factory(n), "family", "") == "training"]
NEEDS_LPIPS = {"at-apgd-lpips-4"}      # LPIPS-VGG's ImageNet backbone is not shipped


def _lpips_vgg_available() -> bool:
    try:
        ig.create_metric("lpips", net="vgg")
        return True
    except InputError:
        return False


class TinyIQA(nn.Module):
    """A user's small CNN: conv → ReLU → global mean → linear, higher = better."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Linear(6, 1)

    def forward(self, x):
        return 50.0 + 40.0 * torch.tanh(self.head(torch.relu(self.conv(8.0 * (x - 0.5))).mean((2, 3)))).squeeze(1)


def tiny_metric(lower_better: bool = False):
    m = ig.wrap_metric(TinyIQA(), lower_better=lower_better, score_range=(10.0, 90.0), name="tiny")
    return m


def imgs(n=8, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return nn.functional.interpolate(base, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def test_the_study_seven_and_the_offline_variant_are_registered():
    expected = {"at-fgsm", "at-pgd", "at-free-ssim-2", "at-free-ssim-4", "at-apgd-lpips-4", "nt", "at-trades",
                "at-apgd-ssim-4"}
    assert set(TRAINING) == expected


@pytest.mark.parametrize("name", TRAINING)
def test_interface_attributes(name):
    d = ig.create_defense(name)
    assert (d.family, d.trainable, d.randomized, d.differentiable) == ("training", True, False, True)
    assert isinstance(d, TrainedDefense)
    assert d.training_spec().startswith(name)


@pytest.mark.parametrize("name", sorted(set(TRAINING) - NEEDS_LPIPS))
def test_fit_protect_contract(name):
    metric = tiny_metric()
    before = {k: v.clone() for k, v in metric.state_dict().items()}
    x = imgs()
    d = ig.create_defense(name).fit(metric, x)
    assert d.fit_stats.seconds > 0 and d.fit_stats.grad_calls > 0
    # the original is untouched
    assert all(torch.equal(before[k], v) for k, v in metric.state_dict().items())
    p = d.protect(metric)
    assert p is not metric and isinstance(p, ig.Metric)
    assert (p.mode, p.lower_better, p.score_range, p.name, p.params) == \
        (metric.mode, metric.lower_better, metric.score_range, metric.name, metric.params)
    assert not p.training and not any(q.requires_grad for q in p.parameters())
    assert any(not torch.equal(before[k], v) for k, v in p.state_dict().items()), "weights did not change"
    with torch.no_grad():
        assert not torch.equal(p(x), metric(x))
    # state_dict / load_state_dict round trip: a fresh defense protects identically
    d2 = ig.create_defense(name)
    d2.load_state_dict(d.state_dict())
    with torch.no_grad():
        assert torch.equal(d2.protect(metric)(x), p(x))


@pytest.mark.parametrize("name", ["at-fgsm", "nt"])
def test_fit_is_seeded(name):
    metric, x = tiny_metric(), imgs()
    a = ig.create_defense(name).fit(metric, x).state_dict()
    b = ig.create_defense(name).fit(metric, x).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["at-pgd", "at-free-ssim-4", "nt", "at-trades"])
def test_fit_or_load_second_call_trains_nothing(name, tmp_path, monkeypatch):
    metric, x = tiny_metric(), imgs()
    first = fit_or_load(ig.create_defense(name), metric, x, tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    second = ig.create_defense(name)
    monkeypatch.setattr(type(second), "fit", lambda *a, **k: pytest.fail("trained again"))
    fit_or_load(second, metric, x, tmp_path)
    with torch.no_grad():
        assert torch.equal(second.protect(metric)(x), first.protect(metric)(x))
    assert list(tmp_path.iterdir()) == files


def test_non_differentiable_and_parameter_free_metrics_are_refused():
    d = ig.create_defense("at-pgd")
    frozen = ig.wrap_metric(TinyIQA(), differentiable=False, score_range=(10.0, 90.0))
    with pytest.raises(InputError, match="not differentiable"):
        d.fit(frozen, imgs())
    free = ig.wrap_metric(lambda x: x.mean((1, 2, 3)), score_range=(0.0, 1.0), name="mean")
    with pytest.raises(InputError, match="no trainable parameters"):
        d.fit(free, imgs())
    with pytest.raises(InputError, match="no trainable parameters"):
        ig.create_defense("nt").fit(ig.create_metric("niqe"), imgs(size=96))


def test_protect_refuses_unfitted_and_foreign_metric():
    d = ig.create_defense("nt")
    with pytest.raises(InputError, match="not fitted"):
        d.protect(tiny_metric())
    d.fit(tiny_metric(), imgs())

    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return self.conv(x).mean((1, 2, 3))

    with pytest.raises(InputError, match="does not fit"):
        d.protect(ig.wrap_metric(Other()))
    with pytest.raises(InputError, match="non-empty dict"):
        d.load_state_dict({})


def test_lower_better_metric_keeps_direction_and_label_correction_raises_its_target():
    corr = ScoreCorrection("ssim")
    x = imgs(2)
    x_adv = (x + 4 / 255 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    u = torch.tensor([0.5, 0.5])
    assert (corr.correct(u, x_adv, x, sign=+1.0) < u).all()      # higher-better: lowered
    assert (corr.correct(u, x_adv, x, sign=-1.0) > u).all()      # lower-better: raised (worse)
    assert torch.allclose(corr.correct(u, x, x, sign=1.0), u, atol=1e-5)
    metric = tiny_metric(lower_better=True)
    p = ig.create_defense("at-fgsm").fit(metric, imgs()).protect(metric)
    assert p.lower_better and p.score_range == (10.0, 90.0)


def test_at_apgd_lpips_names_the_weight_file_it_needs():
    if _lpips_vgg_available():
        pytest.skip("LPIPS-VGG backbone present on this machine")
    d = ig.create_defense("at-apgd-lpips-4")           # creating it works offline ...
    with pytest.raises(InputError, match=r"vgg16-397923af\.pth.*label_weights") as err:
        d.fit(tiny_metric(), imgs())                  # ... fitting says what it needs
    assert "\n" not in str(err.value)


def test_ground_truth_targets_change_the_training_key_and_train():
    metric, x = tiny_metric(), imgs()
    d = ig.create_defense("nt")
    spec = d.training_spec()
    with torch.no_grad():
        truth = metric(x).numpy() * 0.1 + 3.0           # a MOS on another scale, same order
    d.set_truth(truth)
    assert d.training_spec() != spec and "truth=" in d.training_spec()
    d.fit(metric, x)
    with pytest.raises(InputError, match="positively related"):
        ig.create_defense("nt").fit(metric, x, truth=-truth)


def test_apgd_checkpoints_and_ball():
    # Croce & Hein 2020, §3.2: p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 → w = ⌈p·100⌉
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    w = torch.randn(1, 3, 8, 8)

    def gain_and_grad(z):   # a concave objective with its maximum outside the ball
        z = z.detach().requires_grad_(True)
        g = -((z - 0.5 - w) ** 2).sum((1, 2, 3))
        (grad,) = torch.autograd.grad(g.sum(), z)
        return g.detach(), grad

    x = torch.full((1, 3, 8, 8), 0.5)
    eps = 4 / 255
    out = apgd_linf(gain_and_grad, x, eps, 10)
    assert (out - x).abs().max() <= eps + 1e-7
    best = x + eps * w.sign()                            # the optimum over the ℓ∞ box
    g_out, g_best = gain_and_grad(out)[0], gain_and_grad(best)[0]
    assert float(g_out) == pytest.approx(float(g_best), rel=1e-3)


def test_wrap_metric_user_cnn_is_adversarially_trained_through_the_public_api():
    """A user's CNN → ig.wrap_metric → ig.create_defense('at-pgd').fit → .protect: PGD's gain on
    the training images drops (PGD ℓ∞ 4/255, the defense's own threat)."""
    metric, x = tiny_metric(), imgs(16)
    attack = ig.create_attack("pgd", eps=4 / 255, seed=0)

    def gain(m):
        xa = attack(m, x)
        with torch.no_grad():
            return float(((m(xa) - m(x)) / m.range_width).mean())

    protected = ig.create_defense("at-pgd").fit(metric, x).protect(metric)
    g0, g1 = gain(metric), gain(protected)
    assert g1 < g0, (g0, g1)


def test_train_defense_command_trains_once(tmp_path):
    kw = dict(dataset="bundled:size=64,contents=coffee,types='gaussian_blur,jpeg'", limit=5,
              out=tmp_path, train_images=4, progress=False)
    first = train_defense_command("nt:epochs=1", "iqg-cnn", **kw)
    assert first["trained"] and first["grad_calls"] > 0 and first["train_images"] == 4
    again = train_defense_command("nt:epochs=1", "iqg-cnn", **kw)
    assert not again["trained"] and again["path"] == first["path"]
    with pytest.raises(InputError, match="not a trained defense"):
        train_defense_command("jpeg", "iqg-cnn", **kw)
    assert math.isfinite(first["seconds"])


class TinyFR(nn.Module):
    """A small learned FR metric: mean |conv(x) − conv(ref)|, lower = better."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x, ref):
        return (self.conv(x) - self.conv(ref)).abs().mean((1, 2, 3))


@pytest.mark.parametrize("name", ["at-pgd", "at-free-ssim-4", "nt", "at-trades"])
def test_full_reference_metric_trains_with_its_reference(name):
    metric = ig.wrap_metric(TinyFR(), mode="FR", lower_better=True, score_range=(0.0, 1.0), name="tiny-fr")
    ref = imgs(4)
    x = (ref + 0.05 * torch.randn_like(ref)).clamp(0, 1)
    d = ig.create_defense(name)
    with pytest.raises(InputError, match="needs ref"):
        d.fit(metric, x)
    p = d.fit(metric, x, ref).protect(metric)
    assert p.mode == "FR" and p.lower_better
    with torch.no_grad():
        assert torch.isfinite(p(x, ref)).all()


def test_on_step_is_called_once_per_minibatch():
    d = ig.create_defense("at-fgsm")
    calls = []
    d.on_step = lambda: calls.append(1)
    d.fit(tiny_metric(), imgs(10))              # 10 images, batch 8: 2 minibatches per epoch
    assert len(calls) == d.total_steps(10) == d.epochs * 2


def test_fit_or_load_with_batchnorm_metric(tmp_path):
    """BatchNorm's 0-dim ``num_batches_tracked`` is part of the metric's state and of the cache
    key's weight digest (regression: hashing a 0-dim tensor as bytes failed)."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 1), nn.Flatten(0))
    metric = ig.wrap_metric(net.eval(), score_range=(-1.0, 1.0), name="tiny-bn")
    x = imgs(4)
    d = fit_or_load(ig.create_defense("nt"), metric, x, tmp_path)
    again = ig.create_defense("nt")
    fit_or_load(again, metric, x, tmp_path)
    with torch.no_grad():
        assert torch.equal(again.protect(metric)(x), d.protect(metric)(x))
