"""``mprnet``: the MPRNet denoiser (Zamir et al., "Multi-Stage Progressive Image Restoration",
CVPR 2021) as a purifier, as in the study (``metrics/defences/mprnet/run.py``: reflect-pad the
bottom/right to a multiple of 8, run, keep the stage-3 output, clamp to [0, 1], crop back).

The architecture follows the paper and the authors' ``Denoising/MPRNet.py`` (swz30/MPRNet; read,
not copied): three stages that see the image as 4, 2 and 1 patches.

* Stages 1 and 2: a shallow feature extractor (3×3 conv + channel-attention block, CAB), a 3-level
  U-Net encoder/decoder of CABs (bilinear ×½ + 1×1 conv down, bilinear ×2 + 1×1 conv up, CAB
  on the skips), patch features concatenated between stages.
* A supervised attention module (SAM) after stages 1 and 2 predicts an image (a residual on the
  input) and gates the features passed on with sigmoid attention computed from that image.
* Cross-stage feature fusion (CSFF): stage-2 encoder levels add 1×1-conv'd stage-1 encoder and
  decoder features.
* Stage 3: the original-resolution subnetwork (ORSNet) — three original-resolution blocks
  (``num_cab`` CABs + conv, residual), each followed by adding 1×1-conv'd (and upsampled)
  stage-2 encoder/decoder features; a 3×3 tail conv predicts the residual added to the input.

One PReLU module is shared by every CAB (as in the authors' code, so every copy appears in the
state dict with the same value), convolutions have no bias. Module names reproduce the
authors' state-dict keys, so their denoising checkpoint loads with ``strict=True``. Defaults are
the published denoising configuration: n_feat 80, scale_unetfeats 48, scale_orsnetfeats 32,
num_cab 8, kernel_size 3, reduction 4, bias False.
"""
from __future__ import annotations

from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ...limits import MAX_DEPTH, MAX_WIDTH
from ._checks import int_in
from ...registry import DEFENSES
from ._learned import LearnedPurifier, freeze, load_checkpoint, load_strict

WEIGHTS = "mprnet_denoise.pth"
SOURCE = ("the study's server, https://titan.gml-team.ru:5003/fsdownload/Qo5uhUQh4/mprnet_denoise.pth "
          "(msu-video-group/adversarial-defenses-for-iqa, metrics/defences/mprnet/dfsrc/setup.sh); the same "
          "network as the authors' denoising model (swz30/MPRNet, Denoising/pretrained_models/README.md, "
          "Google Drive, 'model_denoising.pth' — rename it)")
MULTIPLE = 8   # two ×½ levels on half-size patches


def _conv(cin: int, cout: int, k: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


class CALayer(nn.Module):
    """Channel attention: global average → 1×1 squeeze (÷reduction) → ReLU → 1×1 → sigmoid gate."""

    def __init__(self, ch: int, reduction: int, bias: bool):
        super().__init__()
        self.conv_du = nn.Sequential(nn.Conv2d(ch, ch // reduction, 1, bias=bias), nn.ReLU(),
                                     nn.Conv2d(ch // reduction, ch, 1, bias=bias), nn.Sigmoid())

    def forward(self, x):
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class CAB(nn.Module):
    """Channel-attention block: x + CA(conv(act(conv(x))))."""

    def __init__(self, ch: int, k: int, reduction: int, bias: bool, act: nn.Module):
        super().__init__()
        self.body = nn.Sequential(_conv(ch, ch, k, bias), act, _conv(ch, ch, k, bias))
        self.CA = CALayer(ch, reduction, bias)

    def forward(self, x):
        return self.CA(self.body(x)) + x


class SAM(nn.Module):
    """Supervised attention: image = conv2(f) + x_img; f' = conv1(f)·σ(conv3(image)) + f."""

    def __init__(self, ch: int, k: int, bias: bool):
        super().__init__()
        self.conv1 = _conv(ch, ch, k, bias)
        self.conv2 = _conv(ch, 3, k, bias)
        self.conv3 = _conv(3, ch, k, bias)

    def forward(self, f, x_img):
        img = self.conv2(f) + x_img
        return self.conv1(f) * torch.sigmoid(self.conv3(img)) + f, img


class _Resample(nn.Module):
    """Bilinear rescale by ``factor`` (align_corners=False), then a 1×1 conv (no bias).

    Kept as ``self.<attr> = Sequential(<no-param>, Conv2d)`` so the conv is ``<attr>.1``, the
    authors' key layout (their ``nn.Upsample`` sits at index 0).
    """

    def __init__(self, attr: str, factor: float, cin: int, cout: int):
        super().__init__()
        self.attr = attr
        self.factor = factor
        setattr(self, attr, nn.Sequential(nn.Identity(), nn.Conv2d(cin, cout, 1, bias=False)))

    def resize(self, x):
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)

    def forward(self, x, skip=None):
        y = getattr(self, self.attr)[1](self.resize(x))
        return y if skip is None else y + skip


def down(cin: int, s: int) -> _Resample:
    return _Resample("down", 0.5, cin, cin + s)


def up(cin: int, s: int) -> _Resample:
    """(cin + s) channels at half resolution → cin channels at full resolution."""
    return _Resample("up", 2.0, cin + s, cin)


def _cabs(n: int, ch: int, k: int, reduction: int, bias: bool, act: nn.Module) -> nn.Sequential:
    return nn.Sequential(*[CAB(ch, k, reduction, bias, act) for _ in range(n)])


class Encoder(nn.Module):
    """Three levels of 2 CABs with n, n+s, n+2s channels; optional CSFF inputs from the previous stage."""

    def __init__(self, n, k, reduction, act, bias, s, csff):
        super().__init__()
        chs = [n, n + s, n + 2 * s]
        for i, c in enumerate(chs, 1):
            setattr(self, f"encoder_level{i}", _cabs(2, c, k, reduction, bias, act))
        self.down12 = down(chs[0], s)
        self.down23 = down(chs[1], s)
        self.csff = csff
        if csff:
            for i, c in enumerate(chs, 1):
                setattr(self, f"csff_enc{i}", nn.Conv2d(c, c, 1, bias=bias))
                setattr(self, f"csff_dec{i}", nn.Conv2d(c, c, 1, bias=bias))

    def forward(self, x, enc_prev=None, dec_prev=None):
        outs = []
        for i in range(3):
            if i:
                x = (self.down12, self.down23)[i - 1](x)
            x = getattr(self, f"encoder_level{i + 1}")(x)
            if enc_prev is not None and dec_prev is not None:
                x = (x + getattr(self, f"csff_enc{i + 1}")(enc_prev[i])
                     + getattr(self, f"csff_dec{i + 1}")(dec_prev[i]))
            outs.append(x)
        return outs


class Decoder(nn.Module):
    def __init__(self, n, k, reduction, act, bias, s):
        super().__init__()
        chs = [n, n + s, n + 2 * s]
        for i, c in enumerate(chs, 1):
            setattr(self, f"decoder_level{i}", _cabs(2, c, k, reduction, bias, act))
        self.skip_attn1 = CAB(chs[0], k, reduction, bias, act)
        self.skip_attn2 = CAB(chs[1], k, reduction, bias, act)
        self.up21 = up(chs[0], s)
        self.up32 = up(chs[1], s)

    def forward(self, enc):
        dec3 = self.decoder_level3(enc[2])
        dec2 = self.decoder_level2(self.up32(dec3, self.skip_attn2(enc[1])))
        dec1 = self.decoder_level1(self.up21(dec2, self.skip_attn1(enc[0])))
        return [dec1, dec2, dec3]


class ORB(nn.Module):
    """Original-resolution block: x + conv(CAB^num_cab(x))."""

    def __init__(self, ch, k, reduction, act, bias, num_cab):
        super().__init__()
        self.body = nn.Sequential(*[CAB(ch, k, reduction, bias, act) for _ in range(num_cab)],
                                  _conv(ch, ch, k))

    def forward(self, x):
        return self.body(x) + x


class ORSNet(nn.Module):
    def __init__(self, n, o, k, reduction, act, bias, s, num_cab):
        super().__init__()
        for i in (1, 2, 3):
            setattr(self, f"orb{i}", ORB(n + o, k, reduction, act, bias, num_cab))
        self.up_enc1 = up(n, s)
        self.up_dec1 = up(n, s)
        self.up_enc2 = nn.Sequential(up(n + s, s), up(n, s))
        self.up_dec2 = nn.Sequential(up(n + s, s), up(n, s))
        for i in (1, 2, 3):
            setattr(self, f"conv_enc{i}", nn.Conv2d(n, n + o, 1, bias=bias))
            setattr(self, f"conv_dec{i}", nn.Conv2d(n, n + o, 1, bias=bias))

    def forward(self, x, enc, dec):
        lift_enc = (lambda t: t, self.up_enc1, self.up_enc2)
        lift_dec = (lambda t: t, self.up_dec1, self.up_dec2)
        for i in range(3):
            x = getattr(self, f"orb{i + 1}")(x)
            x = (x + getattr(self, f"conv_enc{i + 1}")(lift_enc[i](enc[i]))
                 + getattr(self, f"conv_dec{i + 1}")(lift_dec[i](dec[i])))
        return x


class MPRNet(nn.Module):
    """The three-stage network; ``forward`` returns [stage-3, stage-2, stage-1] images."""

    def __init__(self, in_c=3, out_c=3, n_feat=80, scale_unetfeats=48, scale_orsnetfeats=32, num_cab=8,
                 kernel_size=3, reduction=4, bias=False):
        super().__init__()
        n, s, o, k = n_feat, scale_unetfeats, scale_orsnetfeats, kernel_size
        act = nn.PReLU()   # one shared PReLU, as published
        for i in (1, 2, 3):
            setattr(self, f"shallow_feat{i}",
                    nn.Sequential(_conv(in_c, n, k, bias), CAB(n, k, reduction, bias, act)))
        self.stage1_encoder = Encoder(n, k, reduction, act, bias, s, csff=False)
        self.stage1_decoder = Decoder(n, k, reduction, act, bias, s)
        self.stage2_encoder = Encoder(n, k, reduction, act, bias, s, csff=True)
        self.stage2_decoder = Decoder(n, k, reduction, act, bias, s)
        self.stage3_orsnet = ORSNet(n, o, k, reduction, act, bias, s, num_cab)
        self.sam12 = SAM(n, 1, bias)
        self.sam23 = SAM(n, 1, bias)
        self.concat12 = _conv(2 * n, n, k, bias)
        self.concat23 = _conv(2 * n, n + o, k, bias)
        self.tail = _conv(n + o, out_c, k, bias)

    def forward(self, x):
        h, w = x.shape[-2:]
        hh, hw = h // 2, w // 2
        top, bot = x[:, :, :hh], x[:, :, hh:]
        quads = [top[..., :hw], top[..., hw:], bot[..., :hw], bot[..., hw:]]

        # stage 1: four quarter patches; features joined side by side into the two half patches
        f1 = [self.stage1_encoder(self.shallow_feat1(q)) for q in quads]
        enc1_top = [torch.cat(p, 3) for p in zip(f1[0], f1[1])]
        enc1_bot = [torch.cat(p, 3) for p in zip(f1[2], f1[3])]
        dec1_top = self.stage1_decoder(enc1_top)
        dec1_bot = self.stage1_decoder(enc1_bot)
        sam_top, img1_top = self.sam12(dec1_top[0], top)
        sam_bot, img1_bot = self.sam12(dec1_bot[0], bot)

        # stage 2: two half patches, with CSFF from stage 1
        x2_top = self.concat12(torch.cat([self.shallow_feat2(top), sam_top], 1))
        x2_bot = self.concat12(torch.cat([self.shallow_feat2(bot), sam_bot], 1))
        enc2 = [torch.cat(p, 2) for p in zip(self.stage2_encoder(x2_top, enc1_top, dec1_top),
                                             self.stage2_encoder(x2_bot, enc1_bot, dec1_bot))]
        dec2 = self.stage2_decoder(enc2)
        sam3, img2 = self.sam23(dec2[0], x)

        # stage 3: the whole image at full resolution
        x3 = self.concat23(torch.cat([self.shallow_feat3(x), sam3], 1))
        x3 = self.stage3_orsnet(x3, enc2, dec2)
        return [self.tail(x3) + x, img2, torch.cat([img1_top, img1_bot], 2)]


def _pos_int(value, name: str, hi: int = MAX_WIDTH) -> int:
    """A width or depth of the network: 1..``limits.MAX_WIDTH`` (channels) or ``MAX_DEPTH`` (blocks)."""
    return int_in(value, name, 1, hi)


def pad_to_multiple(x: torch.Tensor, multiple: int = MULTIPLE) -> torch.Tensor:
    """Reflect-pad bottom/right up to the next multiple (the study's rule; nothing if already one)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph >= h or pw >= w:
        raise InputError(f"x is {h}x{w}: too small to reflect-pad to a multiple of {multiple}")
    return F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x


@DEFENSES.register("mprnet")
class MPRNetDefense(LearnedPurifier):
    """Denoise with MPRNet: pad to a multiple of 8 (reflect), stage-3 output, clamp, crop.

    ``weights``: path to ``mprnet_denoise.pth`` (empty: ``$IQAGUARD_WEIGHTS`` / the package;
    not shipped, 43 MB). The hyper-parameters must match the checkpoint; defaults = published.
    """

    def __init__(self, weights: str = "", n_feat: int = 80, scale_unetfeats: int = 48,
                 scale_orsnetfeats: int = 32, num_cab: int = 8, kernel_size: int = 3, reduction: int = 4):
        if not isinstance(weights, str):
            raise InputError(f"weights must be a file path (str), got {weights!r}")
        self.weights = weights
        self.n_feat = _pos_int(n_feat, "n_feat")
        self.scale_unetfeats = _pos_int(scale_unetfeats, "scale_unetfeats")
        self.scale_orsnetfeats = _pos_int(scale_orsnetfeats, "scale_orsnetfeats")
        self.num_cab = _pos_int(num_cab, "num_cab", MAX_DEPTH)
        self.kernel_size = _pos_int(kernel_size, "kernel_size", 99)
        if self.kernel_size % 2 == 0:
            raise InputError(f"kernel_size must be odd, got {kernel_size}")
        self.reduction = _pos_int(reduction, "reduction", MAX_WIDTH)
        if self.n_feat < self.reduction:
            raise InputError(f"n_feat ({n_feat}) must be >= reduction ({reduction})")
        state = load_checkpoint(WEIGHTS, path=weights, source=SOURCE)
        self.net = MPRNet(n_feat=self.n_feat, scale_unetfeats=self.scale_unetfeats,
                          scale_orsnetfeats=self.scale_orsnetfeats, num_cab=self.num_cab,
                          kernel_size=self.kernel_size, reduction=self.reduction)
        load_strict(self.net, state, "mprnet")
        freeze(self.net)

    def transform(self, x, gens):
        h, w = x.shape[-2:]
        out = self._net_on(x)(pad_to_multiple(x))[0]
        return out[:, :, :h, :w].clamp(0, 1)
