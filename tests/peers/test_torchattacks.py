"""Our ℓ∞ attacks against torchattacks 3.5 (Kim 2020, github.com/Harry24k/adversarial-attacks-pytorch).

Setting: a seeded random tiny CNN classifier (10 classes, 16×16 RGB, Tanh + average pooling, so
no max/ReLU ties) run in float64 inside, on 8-bit random images; labels are its own clean
predictions. Our side attacks a wrapped "metric" whose score is the per-image cross-entropy of
those labels (higher better, range width 1, so our gain is exactly the CE torchattacks ascends);
torchattacks averages the CE over the batch, which scales each image's gradient by 1/N and leaves
its sign unchanged.

- FGSM, PGD-ℓ∞ (random_start=False, same alpha and steps) and I-FGSM ≡ torchattacks BIM must
  agree to float rounding: |Δ| ≤ 1e-6 everywhere (the float64 model makes a sign flip of the
  gradient between the two torch builds practically impossible; a flipped pixel would show as a
  2·alpha difference and fail the test).
- Square Attack (torchattacks ``Square(norm='Linf', loss='ce', n_restarts=1)``, same eps, p_init
  and query budget) draws from another RNG stream, so only distributions are compared over 32
  images: both stay in the ℓ∞ ball, both fool the model on a similar share of images (|Δ success
  rate| ≤ 0.20, about two binomial standard errors at n = 32) and our final CE is not lower (we
  keep ascending the CE until the budget is used; torchattacks stops an image as soon as it is
  misclassified, so its final CE is only the CE at first success).
  Intended differences, none of which changes the search space: ours draws the window position
  and signs per image (the paper's Alg. 2; torchattacks draws one window and one sign vector per
  iteration for the whole batch and never picks the last row/column offset ``h − s``), redraws a
  candidate that would not change the image, counts the initial query inside ``n_queries``,
  maximises the given objective without a misclassification stop (an IQA metric has no label),
  and starts from x as the IQA study's square-attack/run.py does (torchattacks, like the paper,
  starts from vertical stripes).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import iqaguard.attacks  # noqa: F401  (registers the attacks)
from iqaguard.metrics.base import wrap_metric
from iqaguard.registry import ATTACKS

NET = """
import torch
from torch import nn


def make_net():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


class Net64(nn.Module):
    '''float32 images in, float64 logits out: the gradient signs do not depend on float32 rounding.'''

    def __init__(self, net):
        super().__init__()
        self.net = net.double()

    def forward(self, x):
        return self.net(x.double())
"""

PEER = NET + """
import torchattacks

torch.set_num_threads(1)  # tiny tensors: extra threads only add contention

net = Net64(make_net())
net.net.load_state_dict({k[2:].replace("__", "."): torch.from_numpy(v) for k, v in inputs.items()
                         if k.startswith("w_")})
net.eval()
x, y = torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["y"]).long()
eps, alpha, steps = float(inputs["eps"]), float(inputs["alpha"]), int(inputs["steps"])
outputs["fgsm"] = torchattacks.FGSM(net, eps=eps)(x, y).numpy()
outputs["bim"] = torchattacks.BIM(net, eps=eps, alpha=alpha, steps=steps)(x, y).numpy()
outputs["pgd"] = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y).numpy()
xs, ys = torch.from_numpy(inputs["xs"]), torch.from_numpy(inputs["ys"]).long()
sq = torchattacks.Square(net, norm="Linf", eps=float(inputs["sq_eps"]), n_queries=int(inputs["sq_queries"]),
                         n_restarts=1, p_init=float(inputs["sq_p"]), loss="ce", seed=0)
outputs["square"] = sq(xs, ys).numpy()
"""

EPS, ALPHA, STEPS = 4 / 255, 1 / 255, 7
SQ_EPS, SQ_QUERIES, SQ_P = 2 / 255, 300, 0.05


def _ns():
    ns: dict = {}
    exec(NET, ns)  # the same architecture source runs on both sides
    return ns


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.round(torch.rand(n, 3, 16, 16, generator=g) * 255) / 255


class CE(torch.nn.Module):
    """Per-image cross-entropy of fixed labels: the classifier loss as an NR "metric"."""

    def __init__(self, net, y):
        super().__init__()
        self.net = net
        self.register_buffer("y", y)

    def forward(self, x):
        return F.cross_entropy(self.net(x), self.y, reduction="none")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(peer):
    ns = _ns()
    torch.manual_seed(0)
    net = ns["Net64"](ns["make_net"]()).eval()
    x, xs = _images(8, 1), _images(32, 2)
    with torch.no_grad():
        y, ys = net(x).argmax(1), net(xs).argmax(1)
    weights = {"w_" + k.replace(".", "__"): v.numpy() for k, v in net.net.state_dict().items()}
    out = peer.run(PEER, {**weights, "x": x.numpy(), "y": y.numpy(), "eps": np.float64(EPS),
                          "alpha": np.float64(ALPHA), "steps": np.int64(STEPS), "xs": xs.numpy(),
                          "ys": ys.numpy(), "sq_eps": np.float64(SQ_EPS),
                          "sq_queries": np.int64(SQ_QUERIES), "sq_p": np.float64(SQ_P)})
    return net, x, y, xs, ys, out


def _metric(net, y):
    return wrap_metric(CE(net, y), score_range=(0.0, 1.0), name="ce")


@pytest.mark.parametrize("ours,theirs,kw", [
    ("fgsm", "fgsm", {"eps": EPS}),
    ("ifgsm", "bim", {"eps": EPS, "alpha": ALPHA, "steps": STEPS}),
    ("pgd", "pgd", {"eps": EPS, "alpha": ALPHA, "steps": STEPS, "random_start": False}),
])
def test_gradient_attacks_match_torchattacks(setup, ours, theirs, kw):
    net, x, y, _, _, out = setup
    m = _metric(net, y)
    x_adv = ATTACKS.create(ours, **kw)(m, x)
    ref = torch.from_numpy(out[theirs])
    diff = float((x_adv - ref).abs().max())
    assert diff <= 1e-6, f"{ours} vs torchattacks {theirs}: max |Δ| = {diff:.3g}"
    # not a vacuous match: the attack moved the images and raised the CE
    assert float((x_adv - x).abs().max()) == pytest.approx(EPS, abs=1e-6)
    assert (m(x_adv) > m(x)).all()


def test_square_attack_matches_torchattacks_in_distribution(setup):
    net, _, _, xs, ys, out = setup
    m = _metric(net, ys)
    a = ATTACKS.create("square-attack", eps=SQ_EPS, n_queries=SQ_QUERIES + 1, p_init=SQ_P, seed=0)
    ours = a(m, xs)
    theirs = torch.from_numpy(out["square"])
    for adv in (ours, theirs):
        assert float((adv - xs).abs().max()) <= SQ_EPS + 1e-6
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        ok = (net(ours).argmax(1) != ys).double().mean().item()
        ta = (net(theirs).argmax(1) != ys).double().mean().item()
        ce_ours, ce_theirs, ce0 = m(ours), m(theirs), m(xs)
    # an informative regime: neither attack trivially succeeds or fails everywhere
    assert 0.1 <= ta <= 0.9, f"torchattacks success rate {ta:.2f}: retune SQ_EPS"
    assert abs(ok - ta) <= 0.20, f"success rate ours {ok:.2f} vs torchattacks {ta:.2f}"
    assert (ce_ours >= ce0).all() and (ce_theirs >= ce0 - 1e-6).all()
    assert float(ce_ours.median()) >= float(ce_theirs.median()) - 1e-6
    # + 3 per image: the base class's final comparison (input, candidate, 8-bit candidate)
    assert a.stats.queries == xs.shape[0] * (SQ_QUERIES + 1 + 3)
