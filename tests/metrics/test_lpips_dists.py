"""lpips and dists in the core venv: checklist, weight resolution, heads, backbone layout.

The ImageNet backbones are not available offline; a seeded random backbone is saved in
torchvision's state-dict format (``features.N.weight`` / ``.bias`` plus a classifier key that must
be ignored). The numerical cross-check against the released packages is in
tests/peers/test_lpips_dists_peers.py.
"""
import hashlib

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from skimage import data
from torch import nn

import iqaguard.metrics  # noqa: F401  (registers the built-in metrics)
from iqaguard.errors import InputError
from iqaguard.images import to_tensor
from iqaguard.metrics import backbones
from iqaguard.metrics.dists import L2Pool
from iqaguard.registry import METRICS
from iqaguard.weights import load_state, resolve

FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


def _random_torchvision_state(features: nn.Sequential, seed: int) -> dict:
    """torchvision's init (kaiming normal, fan_out) plus small random biases, torchvision keys."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, m in features.named_children():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            state[f"features.{k}.weight"] = torch.randn(m.weight.shape, generator=g) * (2 / fan_out) ** 0.5
            state[f"features.{k}.bias"] = 0.05 * torch.randn(m.bias.shape, generator=g)
    state["classifier.6.bias"] = torch.zeros(1000)        # present in real checkpoints: ignored
    return state


@pytest.fixture(scope="module")
def bb(tmp_path_factory):
    """Folder with random backbones under torchvision's file names."""
    d = tmp_path_factory.mktemp("bb")
    torch.save(_random_torchvision_state(backbones.alexnet_features(), 0), d / FILES["alex"])
    torch.save(_random_torchvision_state(backbones.vgg16_features(), 1), d / FILES["vgg"])
    return d


# id -> (name, params, net, image side: small to stay fast, ≥ 31 px for AlexNet)
CASES = {"lpips-alex": ("lpips", {}, "alex", 48), "lpips-vgg": ("lpips", {"net": "vgg"}, "vgg", 32),
         "dists": ("dists", {}, "vgg", 32)}
_CACHE = {}


def _make(bb, case, **extra):
    """One instance per configuration (metrics are stateless; building them reads the file)."""
    key = (str(bb), case, tuple(sorted(extra.items())))
    if key not in _CACHE:
        name, params, net, _ = CASES[case]
        _CACHE[key] = METRICS.create(name, backbone_weights=str(bb / FILES[net]), **params, **extra)
    return _CACHE[key]


def _side(case):
    return CASES[case][3]


def _images(n=3, side=48, noise=0.05, seed=0):
    crops = [data.astronaut()[200:200 + side, 150:150 + side], data.chelsea()[50:50 + side, 100:100 + side],
             data.coffee()[100:100 + side, 200:200 + side]]
    clean = torch.cat([to_tensor(c) for c in crops[:n]])
    g = torch.Generator().manual_seed(seed)
    return (clean + noise * torch.randn(clean.shape, generator=g)).clamp(0, 1), clean


@pytest.mark.parametrize("case", CASES)
def test_declared_attributes_and_range(bb, case):
    m = _make(bb, case)
    assert m.mode == "FR" and m.lower_better is True and m.differentiable is True
    # study bounds.json: lpips-alex / lpips-vgg / dists
    expected_hi = {"lpips-alex": 1.58586, "lpips-vgg": 1.06262, "dists": 0.703637}[case]
    assert m.score_range[1] == expected_hi and m.score_range[0] < m.score_range[1]


@pytest.mark.parametrize("case", CASES)
def test_identity_is_zero_and_distances_grow(bb, case):
    m = _make(bb, case)
    x, clean = _images(side=_side(case))
    s0 = m(clean, clean)
    assert torch.allclose(s0, torch.zeros_like(s0), atol=1e-6)
    small, big = m(x, clean), m(_images(noise=0.2, side=_side(case))[0], clean)
    assert s0.dtype == torch.float32 and small.shape == (3,)
    assert (small > 1e-4).all() and (big > small).all()
    if case == "dists":        # 1 − Σ normalised weights × similarities in [−1, 1]
        assert (big <= 2).all()


@pytest.mark.parametrize("case", CASES)
def test_batch_consistency(bb, case):
    m = _make(bb, case)
    x, clean = _images(side=_side(case))
    batch = m(x, clean)
    single = torch.cat([m(x[i:i + 1], clean[i:i + 1]) for i in range(3)])
    assert torch.allclose(batch, single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_gradient_finite_and_nonzero(bb, case):
    m = _make(bb, case)
    x, clean = _images(n=2, side=_side(case))
    x = x.requires_grad_(True)
    (g,) = torch.autograd.grad(m(x, clean).sum(), x)
    assert torch.isfinite(g).all() and (g.flatten(1).abs().sum(1) > 0).all()
    # at x == ref (where perceptual-constraint attacks start) the gradient exists too
    y = clean.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(m(y, clean).sum(), y)
    assert torch.isfinite(g0).all()
    assert not any(p.requires_grad for p in m.parameters())     # frozen backbone


def test_lpips_zero_feature_vector_has_finite_gradient():
    """The package's sqrt(Σf²) has a NaN gradient where all channels are 0; ours gives 0."""
    from iqaguard.metrics.lpips import unit_normalize

    f = torch.zeros(1, 4, 2, 2)
    f[0, :, 0, 0] = torch.tensor([1.0, 2.0, 0.0, 2.0])
    f.requires_grad_(True)
    out = unit_normalize(f)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1 / 3, 2 / 3, 0, 2 / 3]), atol=1e-7)
    (g,) = torch.autograd.grad(out.sum(), f)
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("case", CASES)
def test_bad_input_raises(bb, case):
    m = _make(bb, case)
    x, clean = _images(n=1, side=_side(case))
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    bad = {"dtype": (x.double(), clean), "ndim": (x[0], clean[0]), "nan": (nan, clean), "range": (x * 1.5, clean),
           "channels": (x[:, :1], clean[:, :1]), "no ref": (x, None), "shape": (x, clean[..., :-1])}
    for what, (a, b) in bad.items():
        with pytest.raises(InputError):
            m(a, b)
            pytest.fail(f"{what} accepted")


def test_too_small_for_lpips_raises_input_error(bb):
    m = _make(bb, "lpips-alex")
    x = torch.rand(1, 3, 30, 64)
    with pytest.raises(InputError, match="at least 31 px"):
        m(x, x)
    m(torch.rand(1, 3, 31, 31), torch.rand(1, 3, 31, 31))       # smallest valid size runs
    v = _make(bb, "lpips-vgg")
    with pytest.raises(InputError, match="at least 16 px"):
        v(x[..., :15, :], x[..., :15, :])


@pytest.mark.parametrize("case", CASES)
def test_params_round_trip(bb, case):
    m = _make(bb, case)
    x, clean = _images(n=2, side=_side(case))
    m2 = METRICS.create(CASES[case][0], **m.params)      # a fresh instance
    assert m2.params == m.params and m.params["backbone_weights"]
    assert torch.equal(m(x, clean), m2(x, clean))


def test_lpips_version_00_round_trip_and_differs(bb):
    m = _make(bb, "lpips-alex")
    m0 = _make(bb, "lpips-alex", version="0.0")
    m0b = METRICS.create("lpips", **m0.params)
    x, clean = _images(n=2)
    assert m0.params["version"] == "0.0"
    assert torch.equal(m0(x, clean), m0b(x, clean)) and not torch.equal(m0(x, clean), m(x, clean))


def test_bad_parameters_raise(bb):
    with pytest.raises(InputError, match="net must be"):
        METRICS.create("lpips", net="squeeze", backbone_weights=str(bb / FILES["alex"]))
    for bad in ("0.2", 0.1):          # a float (spec `version=0.1`) must be quoted: one identity per config
        with pytest.raises(InputError, match="version"):
            METRICS.create("lpips", version=bad, backbone_weights=str(bb / FILES["alex"]))
    assert METRICS.create("lpips:version='0.0'", backbone_weights=str(bb / FILES["alex"])).params["version"] == "0.0"
    with pytest.raises(InputError, match="head_weights"):
        _make(bb, "dists", head_weights=str(bb / "nope.safetensors"))


# ------------------------------------------------------------------ weights: where and what
@pytest.fixture
def no_weights_anywhere(tmp_path, monkeypatch):
    """$IQAGUARD_WEIGHTS and the torch hub cache point at empty folders."""
    monkeypatch.setenv("IQAGUARD_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "weights").mkdir()
    return tmp_path


@pytest.mark.parametrize("name,params,file", [("lpips", {}, FILES["alex"]), ("lpips", {"net": "vgg"}, FILES["vgg"]),
                                              ("dists", {}, FILES["vgg"])])
def test_missing_backbone_says_which_file_and_where(no_weights_anywhere, name, params, file):
    with pytest.raises(InputError) as exc:
        METRICS.create(name, **params)
    msg = str(exc.value)
    assert file in msg and "IQAGUARD_WEIGHTS" in msg and "backbone_weights" in msg
    assert "torch hub" in msg and str(no_weights_anywhere / "torch" / "hub" / "checkpoints" / file) in msg
    assert "download.pytorch.org/models/" + file in msg


def test_backbone_found_in_env_folder_and_torch_hub_cache(bb, no_weights_anywhere):
    x, clean = _images(n=1)
    ref = _make(bb, "lpips-alex")(x, clean)
    env_file = no_weights_anywhere / "weights" / FILES["alex"]
    env_file.symlink_to(bb / FILES["alex"])
    assert torch.equal(METRICS.create("lpips")(x, clean), ref)
    assert METRICS.create("lpips").params["backbone_weights"] == ""
    env_file.unlink()
    hub = no_weights_anywhere / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / FILES["alex"]).symlink_to(bb / FILES["alex"])
    assert torch.equal(METRICS.create("lpips")(x, clean), ref)
    # resolve() looks there only when asked
    with pytest.raises(InputError):
        resolve(FILES["alex"])
    assert resolve(FILES["alex"], torch_hub=True) == hub / FILES["alex"]


def test_wrong_backbone_file_raises(bb, tmp_path):
    with pytest.raises(InputError, match="is not a file"):
        METRICS.create("lpips", backbone_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(InputError, match="does not match"):          # VGG weights for AlexNet
        METRICS.create("lpips", backbone_weights=str(bb / FILES["vgg"]))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="features"):
        METRICS.create("lpips", backbone_weights=str(tmp_path / "other.pth"))


def test_backbone_layout_matches_torchvision_indices():
    """Conv positions and shapes of torchvision's alexnet().features / vgg16().features."""
    alex = {k: tuple(v.shape) for k, v in backbones.alexnet_features().state_dict().items() if k.endswith("weight")}
    assert alex == {"0.weight": (64, 3, 11, 11), "3.weight": (192, 64, 5, 5), "6.weight": (384, 192, 3, 3),
                    "8.weight": (256, 384, 3, 3), "10.weight": (256, 256, 3, 3)}
    vgg = backbones.vgg16_features()
    convs = [i for i, m in enumerate(vgg) if isinstance(m, nn.Conv2d)]
    assert convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28] and len(vgg) == 31
    assert [i for i, m in enumerate(vgg) if isinstance(m, nn.MaxPool2d)] == [4, 9, 16, 23, 30]
    # L2 pooling keeps the keys (its window is not persistent)
    assert backbones.vgg16_features(pool=L2Pool).state_dict().keys() == vgg.state_dict().keys()


def test_l2pool_against_direct_formula():
    """√(Σ_ij g_ij x²[2r+i−1, 2c+j−1] + 1e-12), g = (½,1,½)ᵀ(½,1,½)/4, zero padding (DISTS_pytorch)."""
    x = torch.rand(1, 2, 7, 6, dtype=torch.float32)
    out = L2Pool(2)(x)
    g = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64)
    g = torch.outer(g, g) / 4
    p = torch.nn.functional.pad(x.double() ** 2, (1, 1, 1, 1))
    ref = torch.empty(1, 2, 4, 3, dtype=torch.float64)
    for r in range(4):
        for c in range(3):
            ref[0, :, r, c] = (p[0, :, 2 * r:2 * r + 3, 2 * c:2 * c + 3] * g).sum((1, 2))
    assert torch.allclose(out.double(), (ref + 1e-12).sqrt(), atol=1e-7)


# ------------------------------------------------------------------ heads
def test_shipped_heads_are_the_published_files():
    """Each safetensors copy records its source; SHA-256 values of lpips 0.1.4 / DISTS_pytorch 0.1."""
    published = {"lpips_v0.1_alex": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
                 "lpips_v0.1_vgg": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
                 "lpips_v0.0_alex": "18720f55913d0af89042f13faa7e536a6ce1444a0914e6db9461355ece1e8cd5",
                 "lpips_v0.0_vgg": "b9e4236260c3dd988fc79d2a48d645d885afcbb21f9fd595e6744cf7419b582c",
                 "dists_alpha_beta": "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218"}
    for stem, sha in published.items():
        path = resolve(stem + ".safetensors")
        with safe_open(str(path), "pt") as f:
            assert f.metadata()["source"].endswith("sha256=" + sha)
        state = load_state(path)
        assert all((v >= 0).all() for v in state.values())
    assert load_state(resolve("dists_alpha_beta.safetensors"))["alpha"].numel() == 1475


def test_head_weights_parameter(bb, tmp_path):
    x, clean = _images(n=2)
    # LPIPS is linear in the heads: doubling them doubles the distance
    heads = {k: 2 * v for k, v in load_state(resolve("lpips_v0.1_alex.safetensors")).items()}
    save_file(heads, str(tmp_path / "h.safetensors"))
    m, m2 = _make(bb, "lpips-alex"), _make(bb, "lpips-alex", head_weights=str(tmp_path / "h.safetensors"))
    assert torch.allclose(m2(x, clean), 2 * m(x, clean), rtol=1e-6)
    assert METRICS.create("lpips", **m2.params).params["head_weights"] == str(tmp_path / "h.safetensors")
    # DISTS divides α, β by their sum: scaling both changes nothing; scaling α alone does
    ab = load_state(resolve("dists_alpha_beta.safetensors"))
    save_file({k: 3 * v for k, v in ab.items()}, str(tmp_path / "ab3.safetensors"))
    save_file({"alpha": 3 * ab["alpha"], "beta": ab["beta"]}, str(tmp_path / "a3.safetensors"))
    x, clean = _images(n=1, side=32)
    d = _make(bb, "dists")(x, clean)
    assert torch.allclose(_make(bb, "dists", head_weights=str(tmp_path / "ab3.safetensors"))(x, clean), d, atol=1e-7)
    assert not torch.allclose(_make(bb, "dists", head_weights=str(tmp_path / "a3.safetensors"))(x, clean), d, atol=1e-6)
    with pytest.raises(InputError, match="lin0"):
        _make(bb, "lpips-alex", head_weights=str(tmp_path / "ab3.safetensors"))


def test_shipped_head_checksum_is_enforced(bb, monkeypatch):
    from iqaguard.metrics import dists as ds, lpips as lp

    monkeypatch.setitem(lp.HEADS_SHA256, ("0.1", "alex"), hashlib.sha256(b"other").hexdigest())
    with pytest.raises(InputError, match="SHA-256"):
        METRICS.create("lpips", backbone_weights=str(bb / FILES["alex"]))
    monkeypatch.setattr(ds, "WEIGHTS_SHA256", hashlib.sha256(b"other").hexdigest())
    with pytest.raises(InputError, match="SHA-256"):
        METRICS.create("dists", backbone_weights=str(bb / FILES["vgg"]))
