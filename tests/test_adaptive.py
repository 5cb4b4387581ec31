"""Adaptive wrappers (BPDA, EOT) and the classic finding on the shipped learned metric.

Numbers of the done-when test (iqg-cnn, 4 bundled images at 128 px, pgd ℓ∞ 4/255, α = 0.25/255,
20 steps, no random start; gains = mean s·(score − clean)/R) are in docs/methods/scores.md
("Adaptive evaluation"); the margins below are those measurements with slack.
"""
import pytest
import torch

import iqaguard as ig
from iqaguard import InputError
from iqaguard.adaptive import BPDA, EOT, adaptive, resolved_wrapper


@pytest.fixture(scope="module")
def metric():
    return ig.create_metric("iqg-cnn").eval()


@pytest.fixture(scope="module")
def images():
    ds = ig.create_dataset("bundled:size=128").subset(4)
    return torch.cat([it.load() for it in ds.items])


# ------------------------------------------------------------------------------ wrappers
def test_wrapper_strings(metric):
    d = ig.create_defense
    assert adaptive(d("jpeg"), metric).wrapper == "bpda"
    assert adaptive(d("color-quantization"), metric).wrapper == "bpda"
    assert adaptive(d("random-noise"), metric).wrapper == "eot10"
    assert adaptive(d("random-noise"), metric, k=3).wrapper == "eot3"
    assert adaptive(d("gaussian-blur"), metric).wrapper == "none"
    assert adaptive(d("jpeg"), metric, "bpda+eot", k=5).wrapper == "bpda+eot5"
    assert adaptive(d("gaussian-blur"), metric, "bpda").wrapper == "bpda"
    assert resolved_wrapper(d("random-crop"), "auto", 10) == "eot10"
    assert resolved_wrapper(d("jpeg"), "auto", 10) == "bpda"
    for w in ("auto", "bpda", "eot", "bpda+eot", "none"):
        am = adaptive(d("random-noise"), metric, w, k=2)
        assert am.differentiable and am.name == metric.name and am.score_range == metric.score_range
        assert am.lower_better == metric.lower_better and am.mode == metric.mode
    with pytest.raises(InputError, match="wrapper"):
        adaptive(d("jpeg"), metric, "magic")
    with pytest.raises(InputError, match="bpda"):      # no gradient through Pillow's JPEG: says what to use
        adaptive(d("jpeg"), metric, "eot")
    with pytest.raises(InputError, match="positive integer"):
        adaptive(d("random-noise"), metric, k=0)
    with pytest.raises(InputError, match="PurifiedMetric"):
        BPDA(metric)


def test_bpda_forward_is_the_real_defense_and_gradient_is_the_surrogates(metric, images):
    x = images[:2]
    for spec in ("jpeg:quality=50", "color-quantization"):
        d = ig.create_defense(spec)
        bp = BPDA(d.protect(metric))
        with torch.no_grad():
            real = metric(d.purify(x))
        xg = x.clone().requires_grad_(True)
        out = bp(xg)
        assert torch.equal(out.detach(), real)                 # bit-exact forward
        (g,) = torch.autograd.grad(out.sum(), xg)
        xe = x.clone().requires_grad_(True)
        # reference: the metric at the real purified image, chained with d estimate_forward / dx
        y = d.purify(x).requires_grad_(True)
        (gy,) = torch.autograd.grad(metric(y).sum(), y)
        est = d.estimate_forward(xe)
        (ref,) = torch.autograd.grad(est, xe, grad_outputs=gy)
        torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-7)
        assert g.abs().sum() > 0
        # the real defense alone gives no usable gradient (that is why BPDA exists)
        if spec == "color-quantization":
            xr = x.clone().requires_grad_(True)
            (g0,) = torch.autograd.grad(metric(d.purify(xr)).sum(), xr)
            assert g0.abs().sum() == 0


def test_eot_averages_k_draws(metric, images):
    x = images[:2]
    d = ig.create_defense("random-noise:sigma=0.05")
    k = 4
    eot = EOT(d.protect(metric), k=k)
    torch.manual_seed(7)
    xg = x.clone().requires_grad_(True)
    out = eot(xg)
    (g,) = torch.autograd.grad(out.sum(), xg)
    torch.manual_seed(7)
    seeds = torch.randint(0, 2**62, (k * x.shape[0],)).tolist()    # the draws the wrapper took
    per, grads = [], []
    for j in range(k):
        xj = x.clone().requires_grad_(True)
        s = metric(d.purify(xj, seeds[j * 2:(j + 1) * 2]))
        per.append(s.detach())
        grads.append(torch.autograd.grad(s.sum(), xj)[0])
    torch.testing.assert_close(out.detach(), torch.stack(per).mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g, torch.stack(grads).mean(0), rtol=1e-4, atol=1e-7)
    assert eot.draws == k * x.shape[0] and eot.grad_cost == k
    assert not torch.allclose(per[0], per[1])       # the draws really differ


def test_bpda_eot_composes_and_attacks_run_unchanged(metric, images):
    x = images[:2]
    d = ig.create_defense("jpeg:quality=50")
    am = adaptive(d, metric, "bpda+eot", k=2)
    atk = ig.create_attack("fgsm:eps=2/255")
    x_adv = atk(am, x)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 2 / 255 + 1e-6
    # k·N draws for the gradient step + k·N for each of the 3 scorings of the attack's final
    # keep-best check (input, candidate, 8-bit candidate; attacks/base.py)
    assert atk.stats.grad_calls == 1 and am.draws == 2 * x.shape[0] * (1 + 3)


# ------------------------------------------------------------------------------ done-when
def _gain(metric, scores, base):
    return float(((scores - base) / metric.range_width).mean())


def test_bpda_recovers_the_gain_transfer_loses(metric, images):
    """pgd through jpeg q50 and color-quantization on iqg-cnn: BPDA gets more than the transfer attack."""
    torch.manual_seed(0)
    x = images
    atk = ig.create_attack("pgd:eps=4/255,alpha=0.25/255,steps=20,random_start=False")
    with torch.no_grad():
        c = metric(x)
    xa = atk.quantize(atk(metric, x), x)
    with torch.no_grad():
        G = _gain(metric, metric(xa), c)
    assert G > 0.3      # measured 0.531 (previous, in-sample iqg-cnn weights: 0.230)
    out = {}
    for spec in ("jpeg:quality=50", "color-quantization", "color-quantization:npp=4"):
        d = ig.create_defense(spec)
        dm = d.protect(metric)
        am = adaptive(d, metric)
        assert am.wrapper == "bpda"
        xb = atk.quantize(atk(am, x), x)
        with torch.no_grad():
            dc = dm(x)
            out[spec] = (_gain(metric, dm(xa), dc), _gain(metric, dm(xb), dc))
    (tj, bj), (tq, bq) = out["jpeg:quality=50"], out["color-quantization"]
    t4, b4 = out["color-quantization:npp=4"]
    print(f"G={G:.3f} jpeg transfer={tj:.3f} bpda={bj:.3f} color-quantization transfer={tq:.3f} bpda={bq:.3f} "
          f"npp=4 transfer={t4:.3f} bpda={b4:.3f}")
    # measured (G 0.531): jpeg q50 transfer 0.131 (0.25·G), BPDA 0.192 (0.36·G); color-quantization
    # transfer 0.353 (0.66·G), BPDA 0.457 (0.86·G); npp=4 transfer 0.032 (0.06·G), BPDA 0.167 (0.31·G).
    # BPDA beats the transfer attack through every defense (×1.47, ×1.29, ×5.2)
    assert bj >= 1.1 * tj and bq >= 1.1 * tq and b4 >= 3 * t4
    # 16-level colour quantisation barely defends: BPDA keeps most of G (0.86·G; asserted 0.8·G)
    assert bq >= 0.8 * G
    # JPEG q50 defends partly against both; BPDA still gets more than 0.3·G, transfer less (0.36
    # vs 0.25·G: a thin margin; deterministic: no random start, JPEG is deterministic). On the
    # previous (in-sample) weights BPDA kept 0.62·G and transfer 0.47·G (threshold was 0.5·G)
    assert tj < 0.3 * G < bj
    # 4 levels per channel: transfer is nearly stopped (0.06·G; asserted ≤ 0.2·G), BPDA gets 0.31·G
    # (asserted ≥ 0.25·G). On the previous weights BPDA recovered 1.09·G (asserted ≥ 0.9·G)
    assert t4 <= 0.2 * G and b4 >= 0.25 * G


@pytest.mark.parametrize("spec,size", [("random-noise", 64), ("random-crop:size=64", 96)])
def test_eot_beats_a_single_draw(metric, spec, size):
    """EOT (k=10) against randomized defenses gains more than one draw per gradient (k=1)."""
    ds = ig.create_dataset(f"bundled:size={size}").subset(4)
    x = torch.cat([it.load() for it in ds.items])
    d = ig.create_defense(spec)
    atk = ig.create_attack("pgd:eps=4/255,steps=10,random_start=False")
    dm = d.protect(metric)
    gains = {}
    for k in (1, 10):
        torch.manual_seed(1)
        xb = atk.quantize(atk(adaptive(d, metric, "eot", k=k), x), x)
        vals = []
        with torch.no_grad():      # the expected defended gain, over 8 fixed draws
            for r in range(8):
                dm.seeds = [1000 * r + i for i in range(len(x))]
                vals.append(_gain(metric, dm(xb), dm(x)))
        gains[k] = sum(vals) / len(vals)
    print(spec, gains)
    # measured: random-noise 0.501 (k=1) → 0.637 (k=10); random-crop 0.230 → 0.375
    # (previous, in-sample iqg-cnn weights: 0.233 → 0.278; 0.131 → 0.198)
    assert gains[10] > gains[1] + 0.02, gains
