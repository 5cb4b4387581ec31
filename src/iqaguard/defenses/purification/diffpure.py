"""``diffpure``: diffusion purification (Nie et al., ICML 2022) with the guided-diffusion UNet.

The image is scaled to [−1, 1], diffused to step ``t`` of a 1000-step linear-β DDPM
(x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε) and denoised back to step 0, by DDPM ancestral sampling (the
study's code path: guided-diffusion ``p_sample`` from t−1 down to 0, ``clip_denoised=True``)
or by DiffPure's reverse-time VP-SDE (Euler–Maruyama, dt = 1e-3). The noise model is
pluggable: any ``nn.Module`` ε_θ(x_t, t) returning 3 channels (ε, fixed variance) or 6 channels
(ε and the variance interpolation v of Nichol & Dhariwal 2021, "learned range").

This module also holds the guided-diffusion ADM UNet (Dhariwal & Nichol 2021), written from the
paper's description and the released configuration so that its state-dict keys match the
published ``256x256_diffusion_uncond.pt`` exactly (strict load).
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from numbers import Integral
from pathlib import Path
import torch
import torch.nn as nn
import torch.nn.functional as F

from ... import weights as _weights
from ...errors import InputError
from ...atomic import replacing
from ...limits import MAX_SIDE
from ...registry import DEFENSES
from ..base import Purifier
from ._checks import int_in

WEIGHTS_FILE = "256x256_diffusion_uncond.pt"
WEIGHTS_SOURCE = ("https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt "
                  "(openai/guided-diffusion)")
# Flags of the released unconditional 256×256 model (guided-diffusion README): attention at
# resolutions 32,16,8; 256 channels; 64 channels per head; 2 res blocks; up/down in res blocks;
# scale-shift norm; learn_sigma → 6 output channels; channel_mult (1,1,2,2,4,4) for 256 px.
GUIDED_256_UNCOND = dict(image_size=256, in_channels=3, model_channels=256, out_channels=6,
                         num_res_blocks=2, attention_resolutions=[32, 16, 8],
                         channel_mult=[1, 1, 2, 2, 4, 4], num_heads=4, num_head_channels=64,
                         use_scale_shift_norm=True, resblock_updown=True)
_CONFIG_KEY = "iqaguard_guided_unet_config"   # safetensors metadata entry holding the config


# ---------------------------------------------------------------- guided-diffusion UNet (ADM)

def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos(t·f), sin(t·f)], f_k = max_period^(−k/half) (ADM convention)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, ch)


class _Up(nn.Module):
    """Nearest ×2, optionally followed by a 3×3 conv (key ``conv``)."""

    def __init__(self, ch: int, use_conv: bool):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class _Down(nn.Module):
    """Stride-2 3×3 conv (key ``op``) or 2×2 average pooling."""

    def __init__(self, ch: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x):
        return self.op(x)


class ResBlock(nn.Module):
    """GroupNorm–SiLU–conv, timestep FiLM (scale-shift) or additive, GroupNorm–SiLU–conv, skip."""

    def __init__(self, ch: int, emb_ch: int, out_ch: int | None = None, scale_shift: bool = True,
                 up: bool = False, down: bool = False):
        super().__init__()
        out_ch = out_ch or ch
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = _Up(ch, False), _Up(ch, False)
        elif down:
            self.h_upd, self.x_upd = _Down(ch, False), _Down(ch, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch if scale_shift else out_ch))
        self.out_layers = nn.Sequential(_norm(out_ch), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip_connection = nn.Identity() if out_ch == ch else nn.Conv2d(ch, out_ch, 1)

    def forward(self, x, emb):
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over positions; heads split before q/k/v (guided-diffusion's legacy order)."""

    def __init__(self, ch: int, num_heads: int = 1, num_head_channels: int = -1):
        super().__init__()
        if num_head_channels != -1:
            if ch % num_head_channels:
                raise InputError(f"config: {ch} channels are not divisible by num_head_channels={num_head_channels}")
            num_heads = ch // num_head_channels
        self.num_heads = num_heads
        self.norm = _norm(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        qkv = self.qkv(self.norm(flat)).reshape(b * self.num_heads, 3 * c // self.num_heads, h * w)
        q, k, v = qkv.chunk(3, dim=1)
        scale = (c // self.num_heads) ** -0.25
        weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
        a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, h * w)
        return (flat + self.proj_out(a)).reshape(b, c, h, w)


class _Seq(nn.Sequential):
    """A sequence whose ResBlocks also receive the timestep embedding."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class GuidedUNet(nn.Module):
    """The ADM UNet of guided-diffusion (``UNetModel``, unconditional), keys matching its checkpoints.

    ``attention_resolutions`` are feature-map sizes (as in the released flags), converted to
    downsampling factors image_size // r. ``forward(x, t) -> (N, out_channels, H, W)``.
    """

    def __init__(self, image_size=256, in_channels=3, model_channels=256, out_channels=6,
                 num_res_blocks=2, attention_resolutions=(32, 16, 8), channel_mult=(1, 1, 2, 2, 4, 4),
                 num_heads=4, num_head_channels=64, use_scale_shift_norm=True, resblock_updown=True):
        super().__init__()
        self.config = dict(image_size=image_size, in_channels=in_channels, model_channels=model_channels,
                           out_channels=out_channels, num_res_blocks=num_res_blocks,
                           attention_resolutions=list(attention_resolutions), channel_mult=list(channel_mult),
                           num_heads=num_heads, num_head_channels=num_head_channels,
                           use_scale_shift_norm=use_scale_shift_norm, resblock_updown=resblock_updown)
        self.model_channels = model_channels
        self.out_channels = out_channels
        attn_ds = {image_size // int(r) for r in attention_resolutions}
        emb_ch = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))

        def res(c_in, c_out=None, **kw):
            return ResBlock(c_in, emb_ch, c_out, use_scale_shift_norm, **kw)

        def attn(c):
            return AttentionBlock(c, num_heads, num_head_channels)

        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([_Seq(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attn_ds:
                    layers.append(attn(ch))
                self.input_blocks.append(_Seq(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(_Seq(res(ch, ch, down=True) if resblock_updown else _Down(ch, True)))
                skips.append(ch)
                ds *= 2
        self.middle_block = _Seq(res(ch), attn(ch), res(ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attn_ds:
                    layers.append(attn(ch))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else _Up(ch, True))
                    ds //= 2
                self.output_blocks.append(_Seq(*layers))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def save_guided_unet(model: GuidedUNet, path) -> Path:
    """Save a UNet as safetensors with its config in the metadata (for small trained/test models)."""
    from safetensors.torch import save_file

    p = Path(path)
    with replacing(p) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={_CONFIG_KEY: json.dumps(model.config)})
    return p


def load_guided_unet(path) -> GuidedUNet:
    """Build the UNet for a checkpoint and load it strictly.

    The config comes from the safetensors metadata when present (files written by
    ``save_guided_unet``); otherwise it is the released 256×256 unconditional one. The model is
    built on the meta device and the weights assigned, so the 550M-parameter model is not
    initialised twice. Parameters are frozen; the module is in eval mode.
    """
    p = Path(path)
    config = dict(GUIDED_256_UNCOND)
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(p), "pt") as f:
            meta = f.metadata() or {}
        if _CONFIG_KEY in meta:
            config.update(json.loads(meta[_CONFIG_KEY]))
    state = _weights.load_state(p)
    if not isinstance(state, dict):
        raise InputError(f"weights file {str(p)!r} does not hold a state dict")
    state = {k: v.float() for k, v in state.items()}
    with torch.device("meta"):
        model = GuidedUNet(**config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise InputError(f"weights file {str(p)!r} does not match the guided-diffusion UNet "
                         f"config {config}: {str(exc).splitlines()[0]}") from None
    return model.requires_grad_(False).eval()


@lru_cache(maxsize=2)
def _cached_unet(path: str, mtime_ns: int, size: int) -> GuidedUNet:
    return load_guided_unet(path)


# ---------------------------------------------------------------- the diffusion process

class LinearSchedule:
    """The DDPM linear-β schedule (β from 1e-4 to 0.02 over 1000 steps) and the quantities of the
    posterior q(x_{t−1} | x_t, x₀), in float64 (guided-diffusion's ``GaussianDiffusion``).
    Index i = 0..T−1 is step i+1 of the papers' 1-based notation."""

    def __init__(self, steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        scale = 1000 / steps
        b = torch.linspace(scale * beta_start, scale * beta_end, steps, dtype=torch.float64)
        ac = torch.cumprod(1 - b, 0)
        ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
        self.steps = steps
        self.betas = b
        self.alphas_cumprod = ac
        self.posterior_variance = b * (1 - ac_prev) / (1 - ac)
        # β̃_0 = 0: guided-diffusion clips log β̃ at index 0 to log β̃_1
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]))
        self.log_betas = torch.log(b)
        self.large_log_variance = torch.log(torch.cat([self.posterior_variance[1:2], b[1:]]))
        self.coef_x0 = b * torch.sqrt(ac_prev) / (1 - ac)
        self.coef_xt = (1 - ac_prev) * torch.sqrt(1 - b) / (1 - ac)
        self.sqrt_recip_ac = torch.sqrt(1 / ac)
        self.sqrt_recipm1_ac = torch.sqrt(1 / ac - 1)

    def continuous_alpha_bar(self, tau: float, beta_min: float = 0.1, beta_max: float = 20.0) -> float:
        """ᾱ(τ) = exp(−½(β_max−β_min)τ² − β_min·τ) of the VP-SDE with β(τ) = β_min + τ(β_max−β_min)."""
        return math.exp(-0.5 * (beta_max - beta_min) * tau ** 2 - beta_min * tau)


def _normal(x: torch.Tensor, gens: list[torch.Generator] | None) -> torch.Tensor:
    """Standard normal noise shaped like x; image i from its own generator when given."""
    if gens is None:
        return torch.randn(x.shape, device=x.device, dtype=x.dtype)
    return torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in gens])


def _split_output(out: torch.Tensor, channels: int):
    if out.shape[1] == 2 * channels:
        return out[:, :channels], out[:, channels:]
    if out.shape[1] == channels:
        return out, None
    raise InputError(f"the noise model returned {out.shape[1]} channels; expected {channels} (ε) "
                     f"or {2 * channels} (ε and the learned variance)")


# Input values per UNet call. In large batches the activations outgrow the CPU caches and, for a
# model that attends at high resolution, memory: the project's small model attends at half the
# input side, so at diffpure's 256² one sample peaks at 4.5 GiB and a batch of 8 would need about
# 36. At 64² its middle-block attention weights are 8 MiB per sample (5.3 GiB for a smoothing
# chunk of 682), and it ran 24–31 ms per sample in calls of 1–2 samples against 95 ms in one call
# of 682 (one thread). Samples do not interact, so results do not depend on it.
MODEL_VALUES = 1 << 15


def call_unet(model, x: torch.Tensor, t_index: int) -> torch.Tensor:
    """ε_θ(x, t) for every sample, the model called on at most ``MODEL_VALUES`` input values at a time."""
    t = torch.full((x.shape[0],), t_index, dtype=torch.long, device=x.device)
    step = max(1, MODEL_VALUES // max(x[0].numel(), 1))
    return torch.cat([model(xs, ts) for xs, ts in zip(x.split(step), t.split(step))])


def diffuse(x0: torch.Tensor, t: int, sched: LinearSchedule, gens) -> torch.Tensor:
    """Forward diffusion to step t (index t−1): √ᾱ·x₀ + √(1−ᾱ)·ε."""
    ab = float(sched.alphas_cumprod[t - 1])
    return math.sqrt(ab) * x0 + math.sqrt(1 - ab) * _normal(x0, gens)


def ddpm_reverse(model, x: torch.Tensor, t: int, sched: LinearSchedule, gens, *,
                 clip_denoised: bool = True, fixed_variance: str = "large") -> torch.Tensor:
    """Ancestral sampling from index t−1 down to 0 (guided-diffusion ``p_sample`` loop).

    x̂₀ = x_i/√ᾱ_i − √(1/ᾱ_i − 1)·ε_θ (clipped to [−1,1] if ``clip_denoised``);
    mean = coef_x0·x̂₀ + coef_xt·x_i; log σ² = v'·log β_i + (1−v')·log β̃_i with v' = (v+1)/2 for a
    6-channel model, log β_i ("large", guided-diffusion's default) or log β̃_i ("small") otherwise;
    no noise at i = 0.
    """
    c = x.shape[1]
    for i in reversed(range(t)):
        eps, v = _split_output(call_unet(model, x, i), c)
        x0_hat = float(sched.sqrt_recip_ac[i]) * x - float(sched.sqrt_recipm1_ac[i]) * eps
        if clip_denoised:
            x0_hat = x0_hat.clamp(-1, 1)
        mean = float(sched.coef_x0[i]) * x0_hat + float(sched.coef_xt[i]) * x
        if i == 0:
            x = mean
            break
        if v is not None:
            frac = (v + 1) / 2
            log_var = frac * float(sched.log_betas[i]) + (1 - frac) * float(sched.posterior_log_variance_clipped[i])
            std = torch.exp(0.5 * log_var)
        else:
            lv = sched.large_log_variance if fixed_variance == "large" else sched.posterior_log_variance_clipped
            std = math.exp(0.5 * float(lv[i]))
        x = mean + std * _normal(x, gens)
    return x


def sde_reverse(model, x: torch.Tensor, t: int, sched: LinearSchedule, gens, *,
                dt: float = 1e-3, tau_end: float = 1e-5) -> torch.Tensor:
    """DiffPure's reverse-time VP-SDE, Euler–Maruyama from τ = t/T down to ``tau_end``.

    dx = [½β(τ)x + β(τ)·s(x,τ)]dτ' + √β(τ) dW̄ in reversed time, β(τ) = 0.1 + 19.9τ, score
    s = −ε_θ(x, ⌊τT⌋)/√(1−ᾱ(τ)) with the continuous ᾱ(τ) (DiffPure's ``RevVPSDE``, torchsde
    'euler' with a fixed step dt; the last step is shortened to end at ``tau_end``).
    """
    c = x.shape[1]
    T = sched.steps
    taus = [t / T - k * dt for k in range(int(round(t / T / dt)))] + [tau_end]
    for tau, tau_next in zip(taus[:-1], taus[1:]):
        h = tau - tau_next
        beta = 0.1 + tau * (20.0 - 0.1)
        idx = min(int(math.floor(tau * T + 1e-6)), T - 1)
        eps, _ = _split_output(call_unet(model, x, idx), c)
        score = -eps / math.sqrt(1 - sched.continuous_alpha_bar(tau))
        x = x + h * (0.5 * beta * x + beta * score) + math.sqrt(beta * h) * _normal(x, gens)
    return x


# ---------------------------------------------------------------- the defense

@DEFENSES.register("diffpure")
class DiffPure(Purifier):
    """Diffuse to step ``t`` (of 1000) and denoise back with the guided-diffusion ImageNet model.

    Parameters: ``t`` (1..1000; study presets **5**, 10, 20, 30, 50), ``sampler`` ("ddpm": the
    study's guided-diffusion ancestral sampling; "sde": DiffPure's reverse VP-SDE), ``size``
    (images are resized to size×size for the model and back, as the study does with 256; 0 keeps
    the input size), ``clip_denoised`` (clip x̂₀ to [−1,1] at each step, as DiffPure/the study do),
    ``weights`` (path to ``256x256_diffusion_uncond.pt``; empty: ``$IQAGUARD_WEIGHTS``).

    Randomized (per-image generators when seeds are given); differentiable in principle —
    gradients flow through the whole sampling chain (costly) — so ``estimate_forward`` is the
    purifier itself with the same seeds. Use ``DiffPure.with_model`` to plug another ε_θ.
    """

    differentiable = True
    randomized = True

    def __init__(self, t: int = 5, sampler: str = "ddpm", size: int = 256, clip_denoised: bool = True,
                 weights: str = ""):
        self._configure(t, sampler, size, clip_denoised, weights)
        path = _weights.resolve(WEIGHTS_FILE, path=weights or None, source=WEIGHTS_SOURCE)
        st = path.stat()
        self.model = _cached_unet(str(path), st.st_mtime_ns, st.st_size)

    def _configure(self, t, sampler, size, clip_denoised, weights):
        self.t = int_in(t, "t", 1, 1000)
        if sampler not in ("ddpm", "sde"):
            raise InputError(f"sampler must be 'ddpm' or 'sde', got {sampler!r}")
        self.sampler = sampler
        if isinstance(size, bool) or not isinstance(size, Integral) or not 0 <= size <= MAX_SIDE:
            raise InputError(f"size must be an integer in 0..{MAX_SIDE} (0 keeps the input size), got {size!r}")
        self.size = int(size)
        if not isinstance(clip_denoised, bool):
            raise InputError(f"clip_denoised must be a bool, got {clip_denoised!r}")
        self.clip_denoised = clip_denoised
        if not isinstance(weights, str):
            raise InputError(f"weights must be a path string, got {weights!r}")
        self.weights = weights
        self.schedule = LinearSchedule()

    @classmethod
    def with_model(cls, model: nn.Module, **params) -> "DiffPure":
        """A DiffPure using ``model`` (ε_θ(x_t, t) -> 3 or 6 channels) instead of loading weights.

        ``params`` are the constructor's (``weights`` ignored); ``name``/``params`` are set as the
        registry would, but ``create(name, **params)`` rebuilds with the published weights.
        """
        from ...registry import bind_params

        bound = bind_params(cls, params, "defense 'diffpure'")
        obj = cls.__new__(cls)
        obj._configure(**bound)
        obj.model = model
        obj.name, obj.params = "diffpure", bound
        return obj

    def transform(self, x, gens):
        h, w = x.shape[-2:]
        resize = self.size and (h, w) != (self.size, self.size)
        z = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                          antialias=True) if resize else x
        model = self.model
        if isinstance(model, nn.Module):
            p = next(model.parameters(), None)
            if p is not None and p.device != x.device:
                model = self.model = model.to(x.device)
        z = diffuse(z * 2 - 1, self.t, self.schedule, gens)
        if self.sampler == "ddpm":
            z = ddpm_reverse(model, z, self.t, self.schedule, gens, clip_denoised=self.clip_denoised)
        else:
            z = sde_reverse(model, z, self.t, self.schedule, gens)
        z = (z + 1) / 2
        if resize:
            z = F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return z.clamp(0, 1)
