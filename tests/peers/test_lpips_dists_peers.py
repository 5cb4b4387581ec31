"""lpips and dists against the released packages (``lpips`` 0.1.4, ``DISTS_pytorch`` 0.1) in the peer venv.

The ImageNet backbones are not available offline, so the peer script builds torchvision's
``alexnet()`` / ``vgg16()`` with a seeded random init (plus random conv biases, which
torchvision's init leaves at 0), saves their state dicts in torchvision's format (AlexNet: the
whole model; VGG-16: its ``features.*`` keys, to keep the file small) and injects the same
networks into the packages in place of ``pretrained=True``. The packages use their own shipped
heads / α,β; ours use the safetensors copies. Same image pairs on both sides.

Tolerances (float32; summation order differs): distances 1e-5 absolute, plus 1e-4 relative for
LPIPS (measured ≤ 4e-7) and 1e-6 absolute for DISTS (1 − Σ…, measured ≤ 1.8e-7); input gradients
1e-5 of their largest magnitude (measured ≤ 8.4e-7). Random backbones give small distances
(4e-4 … 0.12 here), hence the relative checks.
"""
import numpy as np
import pytest
import torch
from skimage import data

from iqaguard.images import to_tensor
from iqaguard.registry import METRICS
import iqaguard.metrics  # noqa: F401

PEER_SCRIPT = r"""
import torch, torchvision, lpips
import DISTS_pytorch.DISTS_pt as dp

def randomize(model, seed):
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            torch.nn.init.normal_(m.bias, std=0.05)
    return model.eval()

alex = randomize(torchvision.models.alexnet(weights=None), 0)
vgg = randomize(torchvision.models.vgg16(weights=None), 1)
torch.save(alex.state_dict(), str(inputs["alex_path"]))
torch.save({k: v for k, v in vgg.state_dict().items() if k.startswith("features.")}, str(inputs["vgg_path"]))

# the packages call torchvision.models.<net>(pretrained=...): hand them the random networks
torchvision.models.alexnet = lambda *a, **k: alex
torchvision.models.vgg16 = lambda *a, **k: vgg
dp.models = torchvision.models
# DISTS_pytorch's weights.pt was saved from CUDA and is loaded without map_location
_load = torch.load
torch.load = lambda *a, **k: _load(*a, **{"map_location": "cpu", **k})

def run(name, fn, x, y):
    xg = x.clone().requires_grad_(True)
    d = fn(xg, y).reshape(-1)
    d.sum().backward()
    outputs[name] = d.detach().numpy()
    outputs[name + "_grad"] = xg.grad.numpy()

for size in ("a", "b"):
    x, y = torch.from_numpy(inputs["x_" + size]), torch.from_numpy(inputs["y_" + size])
    for net, version in (("alex", "0.1"), ("alex", "0.0"), ("vgg", "0.1")):
        m = lpips.LPIPS(net=net, version=version, pnet_rand=True, verbose=False)
        assert m.net.slice1[0] is (alex if net == "alex" else vgg).features[0]
        run(f"lpips_{net}_{version}_{size}", lambda a, b: m(a, b, normalize=True), x, y)
    d = dp.DISTS()
    assert d.stage1[0] is vgg.features[0]
    run(f"dists_{size}", lambda a, b: d(a, b, require_grad=True), x, y)
"""


def _pairs():
    """Two natural crops with noise/blur-like distortions, and one pure-noise pair; two sizes."""
    g = torch.Generator().manual_seed(3)
    out = {}
    for key, (h, w) in (("a", (64, 64)), ("b", (67, 93))):
        crops = [data.astronaut()[100:100 + h, 120:120 + w], data.coffee()[60:60 + h, 200:200 + w]]
        ref = torch.cat([to_tensor(c) for c in crops] + [torch.rand(1, 3, h, w, generator=g)])
        x = ref.clone()
        x[0] = (x[0] + 0.05 * torch.randn(x[0].shape, generator=g)).clamp(0, 1)
        x[1] = torch.nn.functional.avg_pool2d(x[1:2], 3, 1, 1, count_include_pad=False)[0]
        x[2] = torch.rand(3, h, w, generator=g)
        out["x_" + key], out["y_" + key] = x, ref
    return out


@pytest.fixture(scope="module")
def peer_run(peer, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backbones")
    pairs = _pairs()
    inputs = {k: v.numpy() for k, v in pairs.items()}
    inputs.update(alex_path=np.array(str(tmp / "alexnet-owt-7be5be79.pth")),
                  vgg_path=np.array(str(tmp / "vgg16-397923af.pth")))
    return peer.run(PEER_SCRIPT, inputs), pairs, tmp


CASES = [("lpips", {"net": "alex", "version": "0.1"}, "lpips_alex_0.1"),
         ("lpips", {"net": "alex", "version": "0.0"}, "lpips_alex_0.0"),
         ("lpips", {"net": "vgg", "version": "0.1"}, "lpips_vgg_0.1"),
         ("dists", {}, "dists")]


@pytest.mark.parametrize("name,params,key", CASES, ids=[c[2] for c in CASES])
def test_matches_released_package(peer_run, name, params, key):
    out, pairs, tmp = peer_run
    file = "alexnet-owt-7be5be79.pth" if params.get("net") == "alex" else "vgg16-397923af.pth"
    m = METRICS.create(name, backbone_weights=str(tmp / file), **params)
    for size in ("a", "b"):
        x = pairs["x_" + size].clone().requires_grad_(True)
        d = m(x, pairs["y_" + size])
        (g,) = torch.autograd.grad(d.sum(), x)
        theirs = torch.from_numpy(out[f"{key}_{size}"])
        err = (d.detach() - theirs).abs()
        assert err.max() <= 1e-5, (size, d, theirs)
        # LPIPS is a sum of non-negative terms: relative agreement too. DISTS is 1 − Σ(...), whose
        # float32 rounding at 1 (6e-8 per op) is absolute, so there 1e-6 absolute.
        assert (err / theirs).max() <= 1e-4 if name == "lpips" else err.max() <= 1e-6, (size, d, theirs)
        assert theirs.min() > 1e-4                      # the comparison is not between zeros
        g_theirs = torch.from_numpy(out[f"{key}_{size}_grad"])
        scale = g_theirs.abs().max()
        assert scale > 0 and (g - g_theirs).abs().max() <= 1e-5 * scale, (size, (g - g_theirs).abs().max(), scale)
