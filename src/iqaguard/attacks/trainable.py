"""Trainable attacks: ``fit`` once on a training split, then apply cheaply to any image.

A trainable attack (a universal perturbation, a perturbation generator) learns its state from
images *disjoint* from the ones it is evaluated on, as in the study (UAP and FACPA were trained on
COCO/VOC and tested on KonIQ; Gushchin et al. 2024, arXiv 2408.01541; code msu-video-group/adversarial-defenses-for-iqa). ``iqaguard.fitting.fit_or_load`` (shared
with trained defenses) makes training a cache lookup: the state is saved as safetensors under a
content key (training spec, metric spec and weights, package version, training images as 8-bit
bytes), so a runner trains once per (attack, metric, training set) and every later call loads.

Parameters applied only at test time (``test_params``, e.g. the study's ``amplitude``) are left
out of the key: one fit serves the low/medium/high presets, exactly as one trained UAP served
all the study's presets.
"""
from __future__ import annotations

import time

import torch

from ..errors import InputError
from ..fitting import fit_or_load, name_params, spec_of, state_key, state_path  # noqa: F401  (re-exported)
from ..images import check_image, quantize_within
from ..spec import format_spec
from . import _checks as check
from .base import Attack, AttackStats

STATE_FORMAT = "1"


def straight_through_clip(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0,1] in value but pass the gradient through unchanged (the reference UAP
    trainer clamps ``.data`` in place, so saturated pixels still receive gradient)."""
    return x + (x.clamp(0.0, 1.0) - x).detach()


class TrainableAttack(Attack):
    """Base of the trainable attacks.

    Subclasses implement ``_init_state(images)`` (fresh parameters, seeded), ``_parameters()``
    (the tensors Adam optimises), ``_train_delta(x)`` (the perturbation added during training),
    ``_apply(x)`` (the attacked image at test time) and ``state_dict`` / ``_load(state)``.
    Training maximises ``Attack.gain`` (toward *better* by default, normalised by the metric's
    range: the study's loss ``1 − sign·score/range``) with Adam over shuffled mini-batches.
    """

    trainable = True
    threat = "universal"
    keeps_best = False            # the perturbation is fixed by the fit (universal / generator)
    budget_param = "amplitude"
    test_params: tuple[str, ...] = ("amplitude",)

    def __init__(self, epochs: int = 5, lr: float = 1e-3, batch: int = 4, seed: int = 0,
                 direction: str = "better", target: float | None = None):
        super().__init__(direction=direction, target=target)
        self.epochs = check.integer(epochs, "epochs", maximum=check.MAX_EPOCHS)
        self.lr = check.lr(lr)
        self.batch = check.integer(batch, "batch")
        self.seed = check.limits.seed(seed, optional=False)   # training is seeded
        self._fitted = False
        self.fit_stats = AttackStats()
        self.fitted_on: str | None = None

    # -- state ------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self._fitted

    def state_dict(self) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def _load(self, state: dict[str, torch.Tensor]) -> None:  # pragma: no cover
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a state saved by ``state_dict``; a wrong key set or shape raises InputError."""
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise InputError("state must be a dict of tensors (from state_dict())")
        expected = {k: tuple(v.shape) for k, v in self.state_dict_template().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if expected != got:
            missing = sorted(set(expected) - set(got))
            extra = sorted(set(got) - set(expected))
            wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
            raise InputError(f"state does not fit {self.name or type(self).__name__}: "
                             f"missing {missing}, unexpected {extra}, wrong shape {wrong}")
        if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
            raise InputError("state holds non-finite values")
        self._load({k: v.detach().to("cpu", torch.float32).clone() for k, v in state.items()})
        self._fitted = True

    def state_dict_template(self) -> dict[str, torch.Tensor]:  # pragma: no cover
        """Tensors of the right names and shapes (used to validate a loaded state)."""
        raise NotImplementedError

    # -- training -------------------------------------------------------------------------
    def _init_state(self, images: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def _parameters(self) -> list[torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def _train_delta(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _train_adv(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self._train_delta(x)).clamp(0.0, 1.0)

    def _train_mode(self, on: bool) -> None:
        """Switch dropout etc. of a generator (no-op for a plain perturbation)."""

    def fit(self, metric, images: torch.Tensor, ref: torch.Tensor | None = None):
        """Train on ``images`` (N×3×H×W in [0,1]; FR metrics need ``ref`` of the same shape).

        Seeded and deterministic on CPU for a fixed thread count. Returns ``self``.
        """
        check_image(images, "images")
        if getattr(metric, "mode", "NR") == "FR":
            if ref is None:
                raise InputError(f"fitting on full-reference metric {getattr(metric, 'name', '')!r} needs ref")
            check_image(ref, "ref")
            if ref.shape != images.shape:
                raise InputError(f"ref must have the shape of images {tuple(images.shape)}, got {tuple(ref.shape)}")
        if not getattr(metric, "differentiable", True):
            raise InputError(f"{self.name or type(self).__name__!r} trains on the metric's gradient; "
                             f"{getattr(metric, 'name', '')!r} is not differentiable")
        images = images.detach().to(torch.float32)
        ref = None if ref is None else ref.detach().to(torch.float32)
        n = images.shape[0]
        self._fitted = False          # a fit that fails half-way must not leave a "fitted" attack
        stats = AttackStats(batch=n)
        start = time.perf_counter()
        was_training = getattr(metric, "training", False)
        if hasattr(metric, "eval"):
            metric.eval()
        gen = torch.Generator().manual_seed(self.seed)
        try:
            with torch.random.fork_rng(devices=[]), torch.enable_grad():
                torch.manual_seed(self.seed)      # parameter init and dropout draws
                self._init_state(images)
                params = self._parameters()
                opt = torch.optim.Adam(params, lr=self.lr)
                self._train_mode(True)
                for _ in range(self.epochs):
                    order = torch.randperm(n, generator=gen)
                    for i in range(0, n, self.batch):
                        idx = order[i:i + self.batch]
                        x = images[idx]
                        x_adv = self._train_adv(x)
                        score = metric(x_adv, ref[idx]) if ref is not None else metric(x_adv)
                        loss = -self.gain(metric, score).mean()
                        grads = torch.autograd.grad(loss, params)
                        for p, g in zip(params, grads):
                            p.grad = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
                        opt.step()
                        self._after_step()
                        stats.grad_calls += 1
        finally:
            self._train_mode(False)
            if was_training:
                metric.train()
        for p in self._parameters():
            p.requires_grad_(False)
            p.grad = None
        stats.seconds = time.perf_counter() - start
        self.fit_stats = stats
        self.fitted_on = spec_of(metric)
        self._fitted = True
        return self

    def _after_step(self) -> None:
        """Projection after each optimiser step (UAP: clamp to the ±0.1 box)."""

    # -- call -----------------------------------------------------------------------------
    def __call__(self, metric, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the trained state; the metric is not queried (the state was fitted on it)."""
        if not self._fitted:
            raise InputError(f"attack {self.name or type(self).__name__!r} is not trained: call "
                             f"attack.fit(metric, train_images) or iqaguard.attacks.trainable.fit_or_load(...) first")
        check_image(x, "x")
        if getattr(metric, "mode", "NR") == "FR" and ref is None:
            raise InputError(f"attack on full-reference metric {getattr(metric, 'name', '')!r} needs ref")
        if ref is not None:
            check_image(ref, "ref")
        self.stats = AttackStats(batch=x.shape[0])
        start = time.perf_counter()
        with torch.no_grad():
            x_adv = self._apply(x.detach())
        self.stats.seconds = time.perf_counter() - start
        return x_adv.detach().clamp(0, 1)

    def _apply(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def perturb(self, metric, x, ref):
        return self._apply(x)

    def quantize(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """8-bit rounding that stays inside the declared ℓ∞ bound ``budget``."""
        return quantize_within(x_adv, x, self.budget)

    # -- identity -------------------------------------------------------------------------
    def training_spec(self) -> str:
        """Spec of everything that shapes the trained state (``test_params`` left out)."""
        name, params = name_params(self)
        return format_spec(name, {k: v for k, v in params.items() if k not in self.test_params})
