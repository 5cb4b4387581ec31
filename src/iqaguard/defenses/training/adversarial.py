"""Adversarial training with subjective score correction (Chistyakova et al., "Increasing the
Robustness of Image Quality Assessment Models Through Adversarial Training", Technologies
12(11):220, 2024; code: github wianluna/metrics_at).

Each minibatch step makes adversarial examples x_adv of the clean batch x with the current
weights, lowers their targets by their dissimilarity from x (``labels.ScoreCorrection``) and
takes one optimiser step on the regression loss over the concatenated batch [x_adv, x] with
targets [u_adv, u] — as ``metric_at/trainer.py`` does (``torch.concat([adv_inputs, inputs])``).

Training attacks: ``fgsm`` and ``pgd`` are the registry's attacks (they raise the score: the
benchmark's threat); APGD is ``apgd.apgd_linf`` on the same objective; Free-AT (Shafahi et al.,
"Adversarial Training for Free!", NeurIPS 2019) replays each minibatch ``replays`` times, taking
the parameter *and* the perturbation gradient from one backward pass and carrying the
perturbation across replays and minibatches.

Departure (all variants): the loss is MSE on range-normalised scores instead of LinearityIQA's
norm-in-norm loss. Norm-in-norm is invariant to an affine rescaling of the outputs (the reference
refits a linear map afterwards); a protected metric here must keep the original's scale, or its
range-normalised gains would drop merely because its outputs shrank.
"""
from __future__ import annotations

import torch

from ...errors import InputError
from ...registry import ATTACKS, DEFENSES
from ..purification._checks import int_in, real
from .apgd import apgd_linf
from .base import TrainedDefense
from .labels import ScoreCorrection

ATTACK_KINDS = ("fgsm", "pgd", "apgd", "free")


class AdversarialTraining(TrainedDefense):
    """Fine-tune on [x_adv, x] with SSIM/LPIPS-corrected targets for x_adv."""

    def __init__(self, attack: str = "pgd", eps: float = 4 / 255, steps: int = 1, label: str = "ssim",
                 penalty: float = 1.0, label_weights: str = "", replays: int = 1, epochs: int = 4,
                 lr: float = 0.0125, batch: int = 8, loss: str = "mse", seed: int = 0):
        super().__init__(epochs=epochs, lr=lr, batch=batch, loss=loss, seed=seed)
        if attack not in ATTACK_KINDS:
            raise InputError(f"attack must be one of {', '.join(ATTACK_KINDS)}, got {attack!r}")
        self.attack = attack
        self.eps = real(eps, "eps", lo=0.0, hi=1.0, lo_open=True)
        self.steps = int_in(steps, "steps", 1, 1000)
        self.replays = int_in(replays, "replays", 1, 100)
        self.penalty = real(penalty, "penalty", lo=0.0)
        if not isinstance(label_weights, str):
            raise InputError(f"label_weights must be a path string ('' = look in $IQAGUARD_WEIGHTS), got {label_weights!r}")
        label = "none" if label is None else label      # a spec's label=none parses to None
        ScoreCorrection.check_name(label)
        self.label, self.label_weights = label, label_weights
        self._correction: ScoreCorrection | None = None

    # -- set-up -------------------------------------------------------------------------------
    def _prepare(self, metric, images) -> None:
        self._correction = ScoreCorrection(self.label, self.penalty, self.label_weights, who=f"defense {self.who!r}")
        self._correction.check_size(images)
        if self.attack == "fgsm":
            self._registry_attack = ATTACKS.create("fgsm", eps=self.eps)
        elif self.attack == "pgd":
            self._registry_attack = ATTACKS.create("pgd", eps=self.eps, steps=self.steps)

    def _begin(self, images) -> None:
        # Shafahi et al. start from δ = 0; at a self-distillation target the regression loss and
        # its δ-gradient are exactly 0 there, so δ would never move: start uniform in ±eps, as
        # the reference code's FGSM ``mode='uniform'`` does.
        shape = (min(self.batch, images.shape[0]), *images.shape[1:])
        self._delta = (torch.rand(shape, dtype=images.dtype, device=images.device) * 2 - 1) * self.eps

    # -- one minibatch ------------------------------------------------------------------------
    def _adversarial(self, model, x, ref) -> torch.Tensor:
        if self.attack in ("fgsm", "pgd"):
            x_adv = self._registry_attack(model, x, ref)
            self._calls += self._registry_attack.stats.grad_calls
            return x_adv

        def gain_and_grad(z):
            z = z.detach().requires_grad_(True)
            g = self.sign * self.score(model, z, ref)
            (grad,) = torch.autograd.grad(g.sum(), z)
            self._calls += 1
            return g.detach(), torch.nan_to_num(grad)

        return apgd_linf(gain_and_grad, x, self.eps, self.steps)

    def _pair_loss(self, model, x_adv, x, ref, u) -> torch.Tensor:
        u_adv = self.clip_targets(self._correction.correct(u, x_adv, x, self.sign))
        both = torch.cat([x_adv, x])
        pred = self.score(model, both, None if ref is None else torch.cat([ref, ref]))
        return self.regression(pred, torch.cat([u_adv, u]))

    def _loss(self, model, x, ref, u):
        x_adv = self._adversarial(model, x, ref).detach()
        return self._pair_loss(model, x_adv, x, ref, u)

    def _train_batch(self, model, opt, params, x, ref, u) -> None:
        if self.attack != "free":
            return super()._train_batch(model, opt, params, x, ref, u)
        # Free-AT: one backward gives the weight gradient and the perturbation gradient
        delta = self._delta[: x.shape[0]]
        for _ in range(self.replays):
            opt.zero_grad(set_to_none=True)
            d = delta.clone().requires_grad_(True)
            x_adv = (x + d).clamp(0.0, 1.0)
            loss = self._pair_loss(model, x_adv, x, ref, u)
            loss.backward()
            self._calls += 1
            with torch.no_grad():   # ascend the training loss, as Shafahi et al. (Alg. 1)
                delta.add_(d.grad.sign(), alpha=self.eps).clamp_(-self.eps, self.eps)
                delta.copy_((x + delta).clamp(0.0, 1.0) - x)
            self._finish_step(opt, params)


@DEFENSES.register("at-fgsm")
class ATFGSM(AdversarialTraining):
    """Chistyakova et al. 2024 with their published setting: one FGSM step, eps 4/255, SSIM labels."""

    def __init__(self, eps: float = 4 / 255, label: str = "ssim", penalty: float = 1.0, epochs: int = 4,
                 lr: float = 0.0125, batch: int = 8, loss: str = "mse", seed: int = 0):
        super().__init__(attack="fgsm", eps=eps, steps=1, label=label, penalty=penalty, epochs=epochs,
                         lr=lr, batch=batch, loss=loss, seed=seed)


@DEFENSES.register("at-pgd")
class ATPGD(AdversarialTraining):
    """Chistyakova et al. 2024's scheme with the registry's PGD (ℓ∞, random start) as the training attack."""

    def __init__(self, eps: float = 4 / 255, steps: int = 5, label: str = "ssim", penalty: float = 1.0,
                 epochs: int = 4, lr: float = 0.0125, batch: int = 8, loss: str = "mse", seed: int = 0):
        super().__init__(attack="pgd", eps=eps, steps=steps, label=label, penalty=penalty, epochs=epochs,
                         lr=lr, batch=batch, loss=loss, seed=seed)


class _FreeAT(AdversarialTraining):
    EPS = 4 / 255

    def __init__(self, replays: int = 4, penalty: float = 1.0, epochs: int = 2, lr: float = 0.0125,
                 batch: int = 8, loss: str = "mse", seed: int = 0):
        super().__init__(attack="free", eps=self.EPS, label="ssim", penalty=penalty, replays=replays,
                         epochs=epochs, lr=lr, batch=batch, loss=loss, seed=seed)


@DEFENSES.register("at-free-ssim-2")
class ATFreeSSIM2(_FreeAT):
    """Free-AT (Shafahi et al. 2019) at eps 2/255 with SSIM score correction (study: robust-linearity-free-ssim-2)."""

    EPS = 2 / 255


@DEFENSES.register("at-free-ssim-4")
class ATFreeSSIM4(_FreeAT):
    """Free-AT (Shafahi et al. 2019) at eps 4/255 with SSIM score correction (study: robust-linearity-free-ssim-4)."""

    EPS = 4 / 255


class _APGDAT(AdversarialTraining):
    LABEL = "lpips"

    def __init__(self, steps: int = 5, penalty: float = 1.0, label_weights: str = "", epochs: int = 4,
                 lr: float = 0.0125, batch: int = 8, loss: str = "mse", seed: int = 0):
        super().__init__(attack="apgd", eps=4 / 255, steps=steps, label=self.LABEL, penalty=penalty,
                         label_weights=label_weights, epochs=epochs, lr=lr, batch=batch, loss=loss, seed=seed)


@DEFENSES.register("at-apgd-lpips-4")
class ATAPGDLPIPS4(_APGDAT):
    """APGD (Croce & Hein 2020) at eps 4/255 with LPIPS-VGG score correction (study:
    robust-linearity-apgd-lpips-4). Needs torchvision's ImageNet VGG-16 checkpoint
    ``vgg16-397923af.pth`` (``label_weights=PATH`` or $IQAGUARD_WEIGHTS)."""

    LABEL = "lpips"


@DEFENSES.register("at-apgd-ssim-4")
class ATAPGDSSIM4(_APGDAT):
    """The offline variant: APGD at eps 4/255 with SSIM score correction (the study's
    robust-linearity-apgd-ssim-4, *not* its LPIPS one)."""

    LABEL = "ssim"

    def __init__(self, steps: int = 5, penalty: float = 1.0, epochs: int = 4, lr: float = 0.0125,
                 batch: int = 8, loss: str = "mse", seed: int = 0):
        super().__init__(steps=steps, penalty=penalty, epochs=epochs, lr=lr, batch=batch, loss=loss, seed=seed)
