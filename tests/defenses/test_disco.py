"""``disco``: the LIIF loader (released checkpoint layout, strict keys, a tiny config through the
real code path), the purifier contract, and the local-implicit-function coordinate machinery
against exact values and torch's bilinear interpolation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import iqaguard.defenses  # noqa: F401  (registers the defenses)
from iqaguard.defenses.purification.disco import LIIF, Disco, load_disco, make_coord
from iqaguard.errors import InputError
from iqaguard.registry import DEFENSES

TINY = dict(n_resblocks=1, n_feats=8, hidden_list=[16, 16])


def save_liif_checkpoint(model: LIIF, path, hidden):
    """The layout DISCO's ``train_disco.py`` writes: {'model': {name, args, sd}, 'optimizer', 'epoch'}."""
    spec = {"name": "liif", "args": {
        "encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True}},
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": list(hidden)}}},
        "sd": model.state_dict()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    torch.save({"model": spec, "optimizer": {"name": "adam", "args": {"lr": 1e-4}, "sd": opt.state_dict()},
                "epoch": 3}, str(path))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = LIIF(**TINY)
    path = tmp_path_factory.mktemp("disco") / "disco_pgd.pth"
    save_liif_checkpoint(model, path, TINY["hidden_list"])
    return model, str(path)


def image(n=2, h=14, w=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, h, w), generator=g)


def nearest_feature_liif(n_feats=8) -> LIIF:
    """A LIIF whose MLP is one linear layer returning the centre of the 3×3-unfolded feature
    (channels 0..2): the decoder then just reads the feature of the queried cell."""
    m = LIIF(n_resblocks=1, n_feats=n_feats, hidden_list=[])
    lin = m.imnet.layers[0]
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        for c in range(3):
            lin.weight[c, c * 9 + 4] = 1.0    # F.unfold layout: channel-major, 3×3 window, centre = 4
    return m


# ---------------------------------------------------------------- the released architecture

def test_released_config_keys():
    """DISCO's ImageNet pgd.yaml: edsr-baseline (16 blocks, 64 features, no upsampling), 3×3 unfold,
    coordinates and cell attached (64·9 + 2 + 2 = 580 inputs), MLP hidden 256×4, 3 outputs."""
    sd = LIIF().state_dict()
    assert sd["encoder.head.0.weight"].shape == (64, 3, 3, 3)
    assert sd["encoder.body.15.body.2.weight"].shape == (64, 64, 3, 3)
    assert sd["encoder.body.16.weight"].shape == (64, 64, 3, 3)          # conv after the blocks
    assert sd["imnet.layers.0.weight"].shape == (256, 580)
    assert sd["imnet.layers.8.weight"].shape == (3, 256)
    assert {"encoder.sub_mean.weight", "encoder.sub_mean.bias", "encoder.add_mean.weight",
            "encoder.add_mean.bias"} <= set(sd)
    assert "encoder.body.17.weight" not in sd and "imnet.layers.10.weight" not in sd


def test_loader_roundtrip(tiny, tmp_path):
    model, path = tiny
    loaded = load_disco(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = image() * 2 - 1
    torch.testing.assert_close(loaded(x, 14, 11), model(x, 14, 11), atol=0, rtol=0)
    # a plain state dict (e.g. safetensors) works too; a missing key names the file
    from safetensors.torch import save_file
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(plain))
    torch.testing.assert_close(load_disco(plain)(x, 5, 7), model(x, 5, 7), atol=0, rtol=0)
    bad = {k: v for k, v in model.state_dict().items() if k != "encoder.sub_mean.bias"}
    torch.save(bad, str(tmp_path / "bad.pth"))
    with pytest.raises(InputError, match="bad.pth"):
        load_disco(tmp_path / "bad.pth")


def test_missing_weights_message(monkeypatch, tmp_path):
    monkeypatch.setenv("IQAGUARD_WEIGHTS", str(tmp_path))
    with pytest.raises(InputError, match=r"disco_pgd\.pth.*chihhuiho/disco"):
        Disco()


# ---------------------------------------------------------------- the purifier contract

def test_shape_range_determinism_gradient(tiny):
    _, path = tiny
    d = Disco(weights=path)
    assert d.differentiable and not d.randomized and not d.changes_size
    x = image()
    y = d.purify(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(y, d.purify(x))
    torch.testing.assert_close(torch.cat([d.purify(x[:1]), d.purify(x[1:])]), y, atol=1e-6, rtol=0)
    d299 = Disco(out_size=23, weights=path)                            # the study's 299, small
    assert d299.changes_size and d299.purify(x).shape == (2, 3, 23, 23)
    xg = x.clone().requires_grad_(True)
    d.purify(xg).square().sum().backward()
    assert torch.isfinite(xg.grad).all() and float(xg.grad.abs().sum()) > 0
    torch.testing.assert_close(d.estimate_forward(x), y, atol=0, rtol=0)


def test_params_and_registry(tiny):
    _, path = tiny
    d = DEFENSES.create("disco", out_size=17, weights=path)
    assert d.params == {"out_size": 17, "weights": path}
    assert torch.equal(DEFENSES.create("disco", **d.params).purify(image(1)), d.purify(image(1)))
    for bad in (dict(out_size=-1), dict(out_size=2.5), dict(out_size=True), dict(weights=3)):
        with pytest.raises(InputError, match=next(iter(bad))):
            Disco(**{"weights": path, **bad})


# ---------------------------------------------------------------- the coordinate machinery

def test_make_coord_pixel_centres():
    c = make_coord(4, 2)
    torch.testing.assert_close(c[:, 0, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    torch.testing.assert_close(c[0, :, 1], torch.tensor([-0.5, 0.5]))


def test_same_size_reproduces_features_at_pixel_centres():
    """Rendering at the input size queries each pixel centre: the local ensemble's own cell has
    relative coordinate 0 and receives the opposite cell's area 4 (the others 1e-9), so the output
    is the pixel's feature. On the last row/column the far neighbours clamp onto the same row/column,
    every area is 1e-9 and the output is the mean of the two cells along the edge (LIIF's code does
    the same); the last pixel is its own feature."""
    torch.manual_seed(1)
    m = nearest_feature_liif()
    x = image(2, 9, 12) * 2 - 1
    with torch.no_grad():
        f = m.encoder(x)[:, :3]
        y = m(x, 9, 12)
    torch.testing.assert_close(y[:, :, :-1, :-1], f[:, :, :-1, :-1], atol=1e-6, rtol=0)
    torch.testing.assert_close(y[:, :, -1, :-1], (f[:, :, -1, :-1] + f[:, :, -1, 1:]) / 2, atol=1e-6, rtol=0)
    torch.testing.assert_close(y[:, :, :-1, -1], (f[:, :, :-1, -1] + f[:, :, 1:, -1]) / 2, atol=1e-6, rtol=0)
    torch.testing.assert_close(y[:, :, -1, -1], f[:, :, -1, -1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [(18, 24), (23, 17), (31, 40)])
def test_local_ensemble_is_bilinear_interpolation(size):
    """With a decoder that reads the cell's feature, the area-weighted ensemble of the 4 nearest
    cells is bilinear interpolation between feature-cell centres (align_corners=False, edges
    clamped) — checked against torch's ``F.interpolate`` at 2× and non-integer scales (≤ 2e-6)."""
    torch.manual_seed(2)
    m = nearest_feature_liif()
    x = image(1, 9, 12) * 2 - 1
    with torch.no_grad():
        f = m.encoder(x)[:, :3]
        y = m(x, *size)
    ref = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(y, ref, atol=2e-6, rtol=0)
