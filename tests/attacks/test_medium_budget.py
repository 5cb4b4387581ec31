"""Every registered attack at its *medium* budget on a shipped learned metric (iqg-cnn).

Parametrised over the registry at collection time, so an attack registered later is covered
automatically; one without a medium preset fails here. For each attack: the mean score gain
toward better (normalised by the metric's range, the attacks' own objective) is clearly above
zero, and the perturbation — after ``attack.quantize``, i.e. as a PNG would hold it — respects
the constraint the attack declares. Query/epoch counts are reduced for speed (``SPEED``); the
budget parameter itself is always the preset's.

Thresholds: measured gains (3 bundled images, 64 px) are in ``MEASURED``; the asserted floor is
half of the measured value and at least 0.004 of the range, so a broken attack (gain ≈ 0 or
negative) fails while seed-level noise does not. onepixel / patch-rs: see ``NO_GAIN_AT_TEST_BUDGET``.
"""
import math
import time

import pytest
import torch

import iqaguard.attacks  # noqa: F401  (registers the built-in attacks)
import iqaguard.metrics  # noqa: F401
from iqaguard.attacks.budgets import budget_info, budget_params, budget_table
from iqaguard.errors import InputError
from iqaguard.images import quantize_8bit
from iqaguard.registry import ATTACKS, DATASETS, METRICS

SIZE = 64
N = 3

# cheaper settings that leave the budget parameter alone (black-box query counts ≤ 300, short fits)
SPEED = {
    "square-attack": {"n_queries": 300},
    "parsimonious": {"n_queries": 300},
    # 2·20·7 + 1 = 281 queries. eta: the study's 0.1 (> 2·eps) jumps to a box corner every step and
    # within ≤ 1001 queries no corner beats the clean image on iqg-cnn (measured gain exactly 0 at
    # 7 and 25 steps); eta = 1/255 lets the signed steps accumulate (a step size, not the budget)
    "grad-est": {"steps": 7, "eta": 1 / 255},
    "patch-rs": {"n_queries": 300},
    "onepixel": {"popsize": 30, "steps": 9},  # 300 queries
    "amifgsm": {"niqe_patch": 32},            # NIQE needs ≥ 2 patches: 96-px ones do not fit 64 px
    "cadv": {"steps": 5},
    "uap": {"size": 64, "epochs": 4, "lr": 1e-2, "batch": 2},   # as tests/attacks/test_universal.py
    "cnn-attack": {"epochs": 3},
}

# mean normalised gain measured at the medium preset with these settings (1–2 threads, loaded
# machine; deterministic for a fixed seed); the asserted floor is max(0.004, ½·this)
MEASURED = {
    "amifgsm": 0.108, "cadv": 0.33, "cnn-attack": 0.0092, "fgsm": 0.128, "grad-est": 0.0167,
    "ifgsm": 0.253, "korhonen-et-al": 0.27, "mifgsm": 0.28, "parsimonious": 0.119,
    "square-attack": 0.0082, "patch-rs": 0.0997, "pgd": 0.240, "ssah": 0.268,
    "stadv": 0.393, "pgd:norm=l2": 0.164, "madc": 0.369, "zhang-et-al": 0.349,
    "onepixel": 0.0101,   # 3 pixels, 300 queries: per image +0.0006, +0.0035, +0.026
    "uap": 0.0103,   # per image +0.043, −0.006, −0.007: a universal patch fitted on 4 other images
}
DEFAULT_FLOOR = 0.02

# Kept for attacks that cannot gain at the test's reduced query budget (none now: onepixel's
# presets are the study's pixel counts, see its table note).
NO_GAIN_AT_TEST_BUDGET: set[str] = set()


def _keys():
    names = ATTACKS.names()
    return names + sorted(k for k in budget_table() if ":" in k and k.split(":")[0] in names)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(one_thread):
    torch.manual_seed(0)
    ds = DATASETS.create("bundled", size=SIZE, levels="2")
    # on the 8-bit grid (some distortions leave off-grid values), so unchanged pixels stay exact
    x = quantize_8bit(torch.cat([it.load() for it in ds.items[:N]]))
    fit_x = torch.cat([it.load() for it in ds.items[N:N + 4]])   # disjoint: for trainable attacks
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
    elif threat == "sparse" and name == "onepixel":
        count = _changed_positions(xq, x).flatten(1).sum(1)
        assert (count <= attack.pixel_count).all(), count
        assert (count > 0).any()
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

        # CIE L* is kept exactly before quantisation; 8-bit rounding moves it by < 1 L unit (L* is
        # lightness from linear RGB, not the BT.601 luma Y', which does change with chroma)
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
def test_medium_budget(key, setup):
    metric, x, fit_x = setup
    name = key.split(":")[0]
    try:
        params = budget_params(key, "medium")
    except InputError as exc:
        pytest.fail(f"attack {key!r} has no medium budget preset in tables/attack_budgets.json: {exc}")
    info = budget_info(key)
    assert info["param"] in params, f"{key}: the preset lacks its budget parameter {info['param']!r}"
    speed = {k: v for k, v in SPEED.get(name, {}).items() if k != info["param"]}
    try:
        attack = ATTACKS.create(name, **{**params, **speed})
    except InputError as exc:
        if name == "zhang-et-al-dists" and "vgg16" in str(exc):
            pytest.skip("DISTS needs the VGG16 backbone weights (vgg16-397923af.pth), absent here")
        raise
    assert getattr(attack, info["param"]) == pytest.approx(params[info["param"]])
    if getattr(attack, "trainable", False):
        torch.manual_seed(0)
        attack.fit(metric, fit_x)
    torch.manual_seed(0)
    cpu = time.process_time()
    x_adv = attack(metric, x)
    cpu = time.process_time() - cpu
    xq = attack.quantize(x_adv, x)
    with torch.no_grad():
        gain = attack.gain(metric, metric(xq)) - attack.gain(metric, metric(x))
    floor = max(0.004, MEASURED[key] / 2) if key in MEASURED else DEFAULT_FLOOR
    print(f"{key}: medium {params} gain {gain.tolist()} mean {float(gain.mean()):.4f} floor {floor} cpu {cpu:.1f}s")
    check_constraint(key, attack, x_adv, xq, x)
    if name in NO_GAIN_AT_TEST_BUDGET:
        pytest.xfail(f"{key}: constraint holds; gain {float(gain.mean()):+.3f} at ≤ 300 queries "
                     "(random sparse start scores below clean; see NO_GAIN_AT_TEST_BUDGET)")
    assert float(gain.mean()) > floor, (key, gain.tolist())
