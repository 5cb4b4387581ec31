"""``ddrs`` and ``densepure``: smoothing with the guided-diffusion model as the denoiser.

The smoothing noise σ on [0,1] images is noise 2σ on the model's [−1,1] scale. The timestep t
is the one whose noise-to-signal ratio √(1/ᾱ_t − 1) is nearest 2σ (DensePure's rule; the study's
DDRS takes the first t at or above it), and the noisy sample is scaled into the diffusion state
x_t = √ᾱ_t·(2z − 1), which has x₀'s signal plus noise of the variance the model expects at t.

- ``ddrs`` (Carlini et al., ICLR 2023): one step — x̂₀ = (x_t − √(1−ᾱ_t)·ε_θ(x_t, t))/√ᾱ_t,
  clipped to [−1, 1] — then the metric.
- ``densepure`` (Xiao et al., ICLR 2023): ``votes`` independent reverse runs from x_t to 0 with
  ``steps`` respaced DDPM steps (guided-diffusion's timestep respacing; the study ran 2), each
  scored by the metric; the base classifier is the majority bin of the runs (ties: the lowest
  bin), and the sample's score is the median of the runs in that bin.

The UNet and schedule are ``diffpure``'s (:mod:`..purification.diffpure`), the same weights file
``256x256_diffusion_uncond.pt`` through :mod:`iqaguard.weights`. The model runs at the input
resolution (reflect-padded to a multiple of 32, cropped back); the study resized every image to
256×256 first, which would certify the resized image instead of the input.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ... import weights as _weights
from ...errors import InputError
from ...registry import DEFENSES, bind_params
from ..purification.diffpure import (WEIGHTS_FILE, WEIGHTS_SOURCE, LinearSchedule, _cached_unet,
                                     _split_output, call_unet)
from . import bounds
from .defense import count
from .gaussian import RS
from .smoothing import BinnedSmoothedMetric

PAD_TO = 32   # 2^(levels − 1) of the released 256×256 UNet (6 resolution levels)


def _pad_multiple(model: nn.Module) -> int:
    """Input sides must be multiples of 2^(levels − 1) of the UNet (32 for the released model)."""
    config = getattr(model, "config", None)
    if isinstance(config, dict) and config.get("channel_mult"):
        return 2 ** (len(config["channel_mult"]) - 1)
    return PAD_TO


def matching_timestep(sigma: float, sched: LinearSchedule) -> int:
    """0-based index t with √(1/ᾱ_t − 1) nearest to 2σ."""
    ratio = torch.sqrt(1 / sched.alphas_cumprod - 1)
    return int(torch.argmin((ratio - 2 * sigma).abs()))


def _normal(x: torch.Tensor, gen) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


class DiffusionDenoiser:
    """z (noisy sample of one image, any values) → denoised image in [0, 1]."""

    def __init__(self, model: nn.Module, sigma: float, steps: int = 0):
        self.model = model
        self.sched = LinearSchedule()
        self.t = matching_timestep(sigma, self.sched)
        self.steps = steps   # 0: one-step x̂₀ (ddrs); >= 1: respaced reverse run (densepure)
        ac = self.sched.alphas_cumprod
        if steps:
            # respaced timesteps t = s_K > … > s_1 (guided-diffusion ``space_timesteps`` style,
            # evenly spaced, always including t); a step s_k → s_{k−1} uses
            # β' = 1 − ᾱ_{s_k}/ᾱ_{s_{k−1}} with ᾱ_{s_0} = 1.
            k = min(steps, self.t + 1)
            self.indices = sorted({int(round(v)) for v in np.linspace(0, self.t, k)} | {self.t})
            abar = ac[self.indices]
            prev = torch.cat([abar.new_ones(1), abar[:-1]])
            self.betas = 1 - abar / prev
            self.abar, self.abar_prev = abar, prev

    def _model(self, x, t_index: int):
        p = next(self.model.parameters(), None)
        if p is not None and p.device != x.device:
            self.model = self.model.to(x.device)
        return call_unet(self.model, x, t_index)

    def __call__(self, z: torch.Tensor, gen) -> torch.Tensor:
        h, w = z.shape[-2:]
        mult = _pad_multiple(self.model)
        ph, pw = (-h) % mult, (-w) % mult
        if ph or pw:
            z = F.pad(z, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
        ab = float(self.sched.alphas_cumprod[self.t])
        x = math.sqrt(ab) * (2 * z - 1)
        x0 = self._one_step(x) if not self.steps else self._reverse(x, gen)
        return ((x0 + 1) / 2).clamp(0, 1)[..., :h, :w]

    def _one_step(self, x):
        ab = float(self.sched.alphas_cumprod[self.t])
        eps, _ = _split_output(self._model(x, self.t), x.shape[1])
        return ((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)

    def _reverse(self, x, gen):
        """DDPM ancestral sampling over the respaced steps (clip x̂₀; learned-range variance
        interpolated between the respaced β' and β̃'; β̃' for a 3-channel model: guided-diffusion's
        fixed-large β' re-adds most of the noise when few steps are kept — on the project's small
        model, 2 steps gave 18.8 dB with β' vs 27.3 dB with β̃' on 18.99 dB noisy photos)."""
        c = x.shape[1]
        for j in reversed(range(len(self.indices))):
            ab, ab_prev, beta = float(self.abar[j]), float(self.abar_prev[j]), float(self.betas[j])
            eps, v = _split_output(self._model(x, self.indices[j]), c)
            x0 = ((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)
            if j == 0:
                return x0
            coef_x0 = beta * math.sqrt(ab_prev) / (1 - ab)
            coef_xt = (1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab)
            mean = coef_x0 * x0 + coef_xt * x
            post_var = beta * (1 - ab_prev) / (1 - ab)
            if v is not None:
                frac = (v + 1) / 2
                log_var = frac * math.log(beta) + (1 - frac) * math.log(post_var)
                std = torch.exp(0.5 * log_var)
            else:
                std = math.sqrt(post_var)
            x = mean + std * _normal(x, gen)
        return x


class _DiffusionRS(RS):
    """Shared construction: the UNet from ``weights`` (or ``with_model``)."""

    def _load(self, weights: str) -> nn.Module:
        if not isinstance(weights, str):
            raise InputError(f"weights must be a path string, got {weights!r}")
        self.weights = weights
        path = _weights.resolve(WEIGHTS_FILE, path=weights or None, source=WEIGHTS_SOURCE)
        st = path.stat()
        return _cached_unet(str(path), st.st_mtime_ns, st.st_size)

    @classmethod
    def with_model(cls, model: nn.Module, **params):
        """The defense with ``model`` (ε_θ(x_t, t) → 3 or 6 channels) instead of the published
        weights (tests, small models); ``name``/``params`` set as the registry would."""
        bound = bind_params(cls, params, f"defense {cls.registered!r}")
        obj = cls.__new__(cls)
        obj._configure(model=model, **bound)
        obj.name, obj.params = cls.registered, bound
        return obj


@DEFENSES.register("ddrs")
class DDRS(_DiffusionRS):
    """Diffusion denoised smoothing: RS of the binned metric of the one-step diffusion denoiser."""

    registered = "ddrs"

    def __init__(self, sigma: float = 0.12, n0: int = 100, n: int = 1000, alpha: float = 0.001, bins: int = 10,
                 weights: str = ""):
        self._configure(sigma, n0, n, alpha, bins, weights)

    def _configure(self, sigma, n0, n, alpha, bins, weights, model=None):
        RS.__init__(self, sigma, n0, n, alpha, bins)
        if model is None:
            model = self._load(weights)
        self.weights = weights
        self._denoiser = DiffusionDenoiser(model, self.sigma)


@DEFENSES.register("densepure")
class DensePure(_DiffusionRS):
    """DensePure: RS of the majority bin over ``votes`` multi-step reverse diffusion runs."""

    registered = "densepure"

    def __init__(self, sigma: float = 0.12, n0: int = 100, n: int = 1000, alpha: float = 0.001, bins: int = 10,
                 steps: int = 2, votes: int = 5, weights: str = ""):
        self._configure(sigma, n0, n, alpha, bins, steps, votes, weights)

    def _configure(self, sigma, n0, n, alpha, bins, steps, votes, weights, model=None):
        RS.__init__(self, sigma, n0, n, alpha, bins)
        self.steps = count(steps, "steps", 1, 1000)   # the DDPM schedule has 1000 timesteps
        self.votes = count(votes, "votes")
        if model is None:
            model = self._load(weights)
        self.weights = weights
        self._denoiser = DiffusionDenoiser(model, self.sigma, steps=self.steps)

    def protect(self, metric):
        return VotedSmoothedMetric(metric, self.sigma, self.n, self.alpha, n0=self.n0, bins=self.bins,
                                   denoiser=self._denoiser, method=self.name or "densepure", votes=self.votes)


class VotedSmoothedMetric(BinnedSmoothedMetric):
    """Binned smoothing whose base classifier is a majority vote over ``votes`` denoiser runs."""

    def __init__(self, *args, votes: int = 5, **kw):
        super().__init__(*args, **kw)
        self.votes = votes

    def _base(self, z, ref1, gen):
        runs = torch.stack([super(VotedSmoothedMetric, self)._base(z, ref1, gen) for _ in range(self.votes)], 1)
        vals = runs.detach().double().cpu().numpy()
        cls = bounds.to_bins(vals, self.edges)
        out = torch.empty(z.shape[0], dtype=torch.float64)
        for j in range(z.shape[0]):
            top = int(np.bincount(cls[j], minlength=self.bins + 2).argmax())
            out[j] = float(np.median(vals[j][cls[j] == top]))
        return out.to(runs.dtype)

    def _base_noisy(self, z, ref1, gen):
        """EOT objective: one reverse run per draw (the vote is a non-differentiable selection)."""
        return super()._base(z, ref1, gen)
