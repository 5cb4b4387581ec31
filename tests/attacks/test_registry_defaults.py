"""Every registered attack at its DEFAULT parameters and its *medium* budget on a shipped
learned metric (iqg-cnn), parametrised over the registry at collection time, so an attack
registered later is covered automatically (issue 11, "every attack is checked at its own
defaults"). Nothing is overridden: the only parameters passed are the medium preset of
``tables/attack_budgets.json`` (the budget parameter, plus ``norm`` for the ``pgd:norm=l2``
variant); query counts, steps and fit settings are the attacks' defaults.

For each attack, on 2 bundled images (64 px, 8-bit):
- a positive mean gain toward better (normalised by the metric's range, the attacks' objective);
- never worse than the input, per image, after ``attack.quantize`` (what the runner stores):
  gain ≥ −1e-5 of the range (tolerance: float round-off; the base class scores the same
  batch of N, so it is exact on CPU). Universal / generative attacks
  (``keeps_best = False``: uap, cnn-attack) are exempt, their perturbation is fixed by design;
- the constraint the attack declares, on the quantised output.

Cost: the black-box attacks run their defaults (10,000 queries per image for square-attack,
parsimonious, grad-est and patch-rs; 3,300 for onepixel); at 64 px an iqg-cnn query costs
~1.3 ms, so the file takes ~2.5 CPU-minutes on one core.
"""
import math
import time

import pytest
import torch

import iqaguard
import iqaguard.attacks  # noqa: F401  (registers the built-in attacks)
import iqaguard.metrics  # noqa: F401
from iqaguard.attacks.budgets import budget_info, budget_params, budget_table
from iqaguard.errors import InputError
from iqaguard.images import quantize_8bit
from iqaguard.registry import ATTACKS, DATASETS, METRICS

SIZE = 64
N = 2
FIT = 8            # training images for the trainable attacks (disjoint from the N evaluated)
NEVER_WORSE_TOL = 1e-5


def _keys():
    names = iqaguard.list_attacks()
    return names + sorted(k for k in budget_table() if ":" in k and k.split(":")[0] in names)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(one_thread):
    ds = DATASETS.create("bundled", size=SIZE, levels="2")
    # on the 8-bit grid, as PNG inputs are (some bundled distortions leave off-grid values)
    x = quantize_8bit(torch.cat([it.load() for it in ds.items[:N]]))
    fit_x = quantize_8bit(torch.cat([it.load() for it in ds.items[N:N + FIT]]))
    return METRICS.create("iqg-cnn").eval(), x, fit_x


def _changed_positions(xq, x):
    return ((xq - x).abs() > 0.5 / 255).any(dim=1)               # (N,H,W)


def check_constraint(key, attack, x_adv, xq, x):
    """The declared constraint of ``attack`` on the quantised output ``xq``."""
    name = key.split(":")[0]
    assert torch.isfinite(xq).all() and xq.min() >= 0 and xq.max() <= 1
    threat = attack.threat
    if threat == "linf":
        radius = attack.budget       # amifgsm: the largest per-image radius of this call
        assert (xq - x).abs().max() <= radius + 1e-6, (key, float((xq - x).abs().max()), radius)
        if name == "amifgsm":
            per = attack.radius(x)
            assert ((xq - x).abs().flatten(1).amax(1) <= per + 1e-6).all()
    elif threat == "l2" and name == "pgd":
        # ℓ2 ball before quantisation; 8-bit rounding adds at most 0.5/255 per element
        raw = (x_adv - x).flatten(1).norm(dim=1)
        assert (raw <= attack.eps * (1 + 1e-4)).all(), raw
        q = (xq - x).flatten(1).norm(dim=1)
        assert (q <= attack.eps + 0.5 / 255 * math.sqrt(x[0].numel())).all(), q
    elif threat == "l2" and name == "madc":
        rmse = (x_adv - x).pow(2).mean(dim=(1, 2, 3)).sqrt()
        assert (rmse <= attack.bound * (1 + 1e-4)).all(), rmse      # the RMSE level set
        assert ((xq - x).pow(2).mean(dim=(1, 2, 3)).sqrt() <= attack.bound + 0.5 / 255).all()
        # sign steps of lr: ℓ∞ ≤ steps·lr (+ half a level of rounding)
        assert (xq - x).abs().max() <= attack.steps * attack.lr + 0.5 / 255 + 1e-6
    elif threat == "sparse" and name == "onepixel":
        count = _changed_positions(xq, x).flatten(1).sum(1)
        assert (count <= attack.pixel_count).all(), count
    elif threat == "sparse" and name == "patch-rs":
        changed = _changed_positions(xq, x)
        for i in range(x.shape[0]):
            rows, cols = torch.nonzero(changed[i], as_tuple=True)
            if rows.numel():
                assert rows.max() - rows.min() < attack.side and cols.max() - cols.min() < attack.side
                r0, c0 = attack.patch_location[i].tolist()
                outside = changed[i].clone()
                outside[r0:r0 + attack.side, c0:c0 + attack.side] = False
                assert not outside.any()
    elif threat == "spatial":
        from iqaguard.attacks.spatial import warp

        assert torch.isfinite(attack.last_flow).all() and torch.isfinite(attack.last_flow_loss).all()
        # a pure warp of x by the reported flow (up to 8-bit rounding), nothing added on top
        assert (warp(x, attack.last_flow) - xq).abs().max() <= 0.5 / 255 + 1e-6
        assert (attack.last_max_flow < max(x.shape[-2:])).all()
    elif threat == "color":
        from kornia.color import rgb_to_lab

        # CIE L* is kept exactly before quantisation; 8-bit rounding moves it by < 1 L unit
        dl = (rgb_to_lab(xq)[:, 0] - rgb_to_lab(x)[:, 0]).abs()
        assert dl.max() < 1.0 and dl.mean() < 0.2, (float(dl.max()), float(dl.mean()))
        chroma = (rgb_to_lab(xq)[:, 1:] - rgb_to_lab(x)[:, 1:]).abs().mean()
        assert chroma > 5 * dl.mean()                                 # the change is in colour
    elif threat == "universal":
        assert (xq - x).abs().max() <= attack.budget + 0.5 / 255 + 1e-6
        if name == "uap":                                             # one perturbation for all images
            d = xq - x
            free = ((xq > 0) & (xq < 1)).all(dim=0, keepdim=True).expand_as(d)
            spread = (d - d[:1]).abs()[free]
            assert spread.max() <= 1 / 255 + 1e-6
    elif threat == "perceptual":
        if name == "korhonen-et-al":                                  # flat regions never move
            from iqaguard.attacks.perceptual import activity_mask

            flat = (activity_mask(x) == 0).expand_as(x)
            moved = (xq - x)[flat].abs()
            assert moved.numel() == 0 or float(moved.max()) == 0.0
        # zhang-et-al / ssah: no hard bound (an FR / low-band penalty): the SSIM stays high
        ssim = METRICS.create("ssim")(xq, x)
        assert (ssim > 0.8).all(), ssim
    else:
        pytest.fail(f"{key}: threat {threat!r} has no constraint check here; add one")


@pytest.mark.parametrize("key", _keys(), ids=lambda k: k)
def test_defaults_at_medium_budget(key, setup):
    metric, x, fit_x = setup
    name = key.split(":")[0]
    try:
        params = budget_params(key, "medium")
    except InputError as exc:
        pytest.fail(f"attack {key!r} has no medium budget preset in tables/attack_budgets.json: {exc}")
    info = budget_info(key)
    assert set(params) <= {info["param"], "norm"}, f"{key}: the preset sets more than its budget: {params}"
    try:
        attack = ATTACKS.create(name, **params)
    except InputError as exc:
        if name == "zhang-et-al-dists" and "vgg16" in str(exc):
            pytest.skip("DISTS needs the VGG16 backbone weights (vgg16-397923af.pth), absent here")
        raise
    cpu = time.process_time()
    if getattr(attack, "trainable", False):
        torch.manual_seed(0)
        attack.fit(metric, fit_x)
    torch.manual_seed(0)
    x_adv = attack(metric, x)
    xq = attack.quantize(x_adv, x)          # what the runner stores
    cpu = time.process_time() - cpu
    with torch.no_grad():
        gain = attack.gain(metric, metric(xq)) - attack.gain(metric, metric(x))
    print(f"{key}: medium {params} gain {[round(g, 4) for g in gain.tolist()]} "
          f"mean {float(gain.mean()):+.4f} queries/img {attack.stats.queries / N:.0f} cpu {cpu:.1f}s")
    check_constraint(key, attack, x_adv, xq, x)
    if getattr(attack, "keeps_best", True):
        assert (gain >= -NEVER_WORSE_TOL).all(), (key, gain.tolist())
    assert float(gain.mean()) > 0, (key, gain.tolist())


@pytest.mark.parametrize("name", iqaguard.list_attacks())
def test_budget_param_declared(name):
    """Every attack names the constructor parameter that sets its budget (issue 10), it is one
    of its parameters, and it is the parameter its budget table entry names."""
    factory = ATTACKS.factory(name)
    param = getattr(factory, "budget_param", "")
    assert isinstance(param, str) and param, f"{name} declares no budget_param"
    assert param in ATTACKS.defaults(name), (name, param, sorted(ATTACKS.defaults(name)))
    if name in budget_table():
        assert budget_info(name)["param"] == param
