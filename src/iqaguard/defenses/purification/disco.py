"""``disco``: DISCO (Ho & Vasconcelos, NeurIPS 2022), a local implicit function that maps each
output pixel's coordinate to a clean RGB value, trained on (PGD-attacked, clean) image pairs.

Architecture (DISCO's ImageNet ``pgd.yaml``, i.e. LIIF of Chen et al., CVPR 2021): an EDSR-baseline
encoder without upsampling (16 residual blocks, 64 features, res_scale 1) gives a feature map
the size of the input; for each query coordinate the 3×3-unfolded feature vector of the 4 nearest
feature cells (local ensemble), the coordinate relative to each cell centre (in cell units) and
the query cell size (cell decoding) go through an MLP (hidden 256×4, out 3); the 4 predictions
are blended with the area of the opposite rectangle (bilinear weights). Images are normalised
to [−1, 1] on the way in and back on the way out, as in the released code.

Module and parameter names follow the released checkpoints (``encoder.head.0``,
``encoder.body.{i}.body.{0,2}``, ``imnet.layers.{2k}``, plus EDSR's unused ``sub_mean``/``add_mean``).
"""
from __future__ import annotations

import re
from numbers import Integral

import torch
import torch.nn as nn
import torch.nn.functional as F

from ... import weights as _weights
from ...errors import InputError
from ...limits import MAX_SIDE
from ...registry import DEFENSES
from ..base import Purifier

WEIGHTS_FILE = "disco_pgd.pth"
WEIGHTS_SOURCE = ("DISCO ImageNet PGD model (chihhuiho/disco, training/configs/imagenet/pgd.yaml; "
                  "the study's disco_pgd.pth)")
_QUERY_BLOCK = 1 << 15   # query points per MLP call and image (bounds memory, as the study's bsize)


def make_coord(h: int, w: int, device=None) -> torch.Tensor:
    """Pixel-centre coordinates in [−1, 1], (row, col) order, shape (h, w, 2) (LIIF's convention)."""
    rows = -1 + (2 * torch.arange(h, dtype=torch.float32, device=device) + 1) / h
    cols = -1 + (2 * torch.arange(w, dtype=torch.float32, device=device) + 1) / w
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)


class _MeanShift(nn.Module):
    """EDSR's RGB mean shift, kept only so checkpoint keys match (LIIF's encoder does not apply it)."""

    def __init__(self, sign: float):
        super().__init__()
        self.register_buffer("weight", torch.eye(3).view(3, 3, 1, 1))
        self.register_buffer("bias", sign * torch.tensor([0.4488, 0.4371, 0.4040]))


class _EDSRBlock(nn.Module):
    def __init__(self, n_feats: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feats, n_feats, 3, padding=1), nn.ReLU(True),
                                  nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x):
        return self.body(x) * self.res_scale + x


class EDSREncoder(nn.Module):
    """EDSR-baseline without the upsampling tail: head conv, residual blocks, conv, global skip."""

    def __init__(self, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0):
        super().__init__()
        self.sub_mean, self.add_mean = _MeanShift(-1.0), _MeanShift(1.0)
        self.head = nn.Sequential(nn.Conv2d(3, n_feats, 3, padding=1))
        self.body = nn.Sequential(*[_EDSRBlock(n_feats, res_scale) for _ in range(n_resblocks)],
                                  nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.out_dim = n_feats

    def forward(self, x):
        x = self.head(x)
        return self.body(x) + x


class MLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int = 3, hidden_list=(256, 256, 256, 256)):
        super().__init__()
        layers, last = [], in_dim
        for h in hidden_list:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class LIIF(nn.Module):
    """Encoder + local implicit image function; ``forward(x, h, w)`` renders an h×w image.

    Works on images normalised to [−1, 1]; returns raw predictions (N, 3, h, w) in that range.
    """

    def __init__(self, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 hidden_list=(256, 256, 256, 256), feat_unfold_kernel: int = 3,
                 local_ensemble: bool = True, cell_decode: bool = True):
        super().__init__()
        self.encoder = EDSREncoder(n_resblocks, n_feats, res_scale)
        self.unfold = feat_unfold_kernel   # 0: no unfolding
        self.local_ensemble = local_ensemble
        self.cell_decode = cell_decode
        in_dim = n_feats * (feat_unfold_kernel ** 2 if feat_unfold_kernel else 1) + 2 + (2 if cell_decode else 0)
        self.imnet = MLP(in_dim, 3, hidden_list)

    def query(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """RGB at ``coord`` (N, Q, 2; (row, col) in [−1,1]) for query cells ``cell`` (N, Q, 2)."""
        n, c, fh, fw = feat.shape
        if self.unfold:
            k = self.unfold
            feat = F.unfold(feat, k, padding=k // 2).view(n, c * k * k, fh, fw)
        feat_coord = make_coord(fh, fw, feat.device).permute(2, 0, 1)[None].expand(n, 2, fh, fw)
        shifts, eps = ([-1, 1], 1e-6) if self.local_ensemble else ([0], 0.0)
        scale = coord.new_tensor([fh, fw])
        preds, areas = [], []
        for vx in shifts:
            for vy in shifts:
                c_ = coord + coord.new_tensor([vx / fh + eps, vy / fw + eps])
                grid = c_.clamp(-1 + 1e-6, 1 - 1e-6).flip(-1).unsqueeze(1)
                q_feat = F.grid_sample(feat, grid, mode="nearest", align_corners=False)[:, :, 0].permute(0, 2, 1)
                q_coord = F.grid_sample(feat_coord, grid, mode="nearest", align_corners=False)[:, :, 0].permute(0, 2, 1)
                rel = (coord - q_coord) * scale
                inp = [q_feat, rel] + ([cell * scale] if self.cell_decode else [])
                preds.append(self.imnet(torch.cat(inp, dim=-1)))
                areas.append((rel[..., 0] * rel[..., 1]).abs() + 1e-9)
        if self.local_ensemble:   # each prediction weighted by the area of the diagonally opposite one
            areas = [areas[3], areas[2], areas[1], areas[0]]
        total = torch.stack(areas).sum(0)
        return sum(p * (a / total).unsqueeze(-1) for p, a in zip(preds, areas))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        n = x.shape[0]
        feat = self.encoder(x)
        coord = make_coord(h, w, x.device).view(1, h * w, 2).expand(n, -1, -1)
        cell = coord.new_tensor([2 / h, 2 / w]).expand(n, h * w, 2)
        out = [self.query(feat, coord[:, q:q + _QUERY_BLOCK], cell[:, q:q + _QUERY_BLOCK])
               for q in range(0, h * w, _QUERY_BLOCK)]
        return torch.cat(out, dim=1).view(n, h, w, 3).permute(0, 3, 1, 2)


def _config_from_state(sd: dict, args: dict) -> dict:
    """The LIIF config implied by a state dict's shapes (flags not visible in shapes from ``args``)."""
    try:
        n_feats = sd["encoder.head.0.weight"].shape[0]
        blocks = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.body\.(\d+)\.body\.0\.weight$", k))}
        layers = sorted(int(m.group(1)) for k in sd if (m := re.match(r"imnet\.layers\.(\d+)\.weight$", k)))
        shapes = [sd[f"imnet.layers.{i}.weight"].shape for i in layers]
    except (KeyError, AttributeError):
        raise InputError("weights do not look like a DISCO/LIIF model (no encoder.head.0 / imnet.layers keys)") from None
    cell_decode = bool(args.get("cell_decode", True))
    in_dim = shapes[0][1] - 2 - (2 if cell_decode else 0)
    ratio, rem = divmod(in_dim, n_feats)
    kernel = {1: 0, 9: 3, 25: 5, 49: 7}.get(ratio)
    if rem or kernel is None or not args.get("feat_unfold", True) and kernel:
        raise InputError(f"DISCO weights: MLP input width {shapes[0][1]} does not fit {n_feats} features")
    enc_args = (args.get("encoder_spec") or {}).get("args") or {}
    return dict(n_resblocks=len(blocks), n_feats=n_feats, res_scale=float(enc_args.get("res_scale", 1.0)),
                hidden_list=[s[0] for s in shapes[:-1]], feat_unfold_kernel=kernel,
                local_ensemble=bool(args.get("local_ensemble", True)), cell_decode=cell_decode)


def load_disco(path) -> LIIF:
    """Load a DISCO model: a LIIF training checkpoint (``{'model': {'args', 'sd'}}``, as released)
    or a plain state dict (.pth / .safetensors). Strict; frozen; eval mode."""
    state = _weights.load_state(path)
    args: dict = {}
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "sd" in state["model"]:
        args = state["model"].get("args") or {}
        state = state["model"]["sd"]
    if not isinstance(state, dict):
        raise InputError(f"weights file {str(path)!r} does not hold a state dict")
    model = LIIF(**_config_from_state(state, args))
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise InputError(f"weights file {str(path)!r} does not match the DISCO/LIIF model: "
                         f"{str(exc).splitlines()[0]}") from None
    return model.requires_grad_(False).eval()


@DEFENSES.register("disco")
class Disco(Purifier):
    """Re-render the image through DISCO's local implicit function.

    ``out_size``: 0 (default) renders at the input size; n > 0 renders n×n (the study's 299,
    ``changes_size`` then True). ``weights``: path to ``disco_pgd.pth`` (empty: ``$IQAGUARD_WEIGHTS``).
    Deterministic and differentiable (a feed-forward network; grid lookups pass gradients to
    the features), so BPDA's surrogate is the network itself.
    """

    differentiable = True
    randomized = False

    def __init__(self, out_size: int = 0, weights: str = ""):
        if isinstance(out_size, bool) or not isinstance(out_size, Integral) or not 0 <= out_size <= MAX_SIDE:
            raise InputError(f"out_size must be an integer in 0..{MAX_SIDE} (0 keeps the input size), got {out_size!r}")
        if not isinstance(weights, str):
            raise InputError(f"weights must be a path string, got {weights!r}")
        self.out_size = int(out_size)
        self.weights = weights
        self.changes_size = self.out_size > 0
        path = _weights.resolve(WEIGHTS_FILE, path=weights or None, source=WEIGHTS_SOURCE)
        self.model = load_disco(path)

    def transform(self, x, gens):
        h, w = (self.out_size, self.out_size) if self.out_size else x.shape[-2:]
        p = next(self.model.parameters())
        if p.device != x.device:
            self.model = self.model.to(x.device)
        y = self.model(x * 2 - 1, int(h), int(w))
        return (y * 0.5 + 0.5).clamp(0, 1)
