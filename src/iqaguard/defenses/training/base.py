"""The trained-defense contract: ``fit`` fine-tunes a copy of a metric, ``protect`` returns it.

A trained defense changes the *metric*, not the image. ``fit(metric, images, ref=None)``
fine-tunes a deep copy of any differentiable metric with trainable parameters (shipped,
``pyiqa:*`` or ``wrap_metric``) on training images; ``protect(metric)`` returns a copy of the
metric with the fine-tuned weights, keeping its mode, direction, range, name and params. The
state is a plain tensor dict, so ``iqaguard.fitting.fit_or_load`` caches it by content hash.

Scores are handled in range units (score / width of ``metric.score_range``), so one learning
rate and one loss weight suit metrics of any scale. The regression target of a training image is
the clean metric's own score (self-distillation), or, with ``truth`` (e.g. MOS), that truth
mapped onto the metric's scale by the least-squares line through the clean scores — the
fine-tuned metric must keep the original's scale, or range-normalised gains would shrink merely
because the outputs shrank.

Fine-tuning runs the metric in eval mode (BatchNorm keeps its running statistics, dropout is
off): a metric scores one image at a time, and a few dozen training images cannot re-estimate
BatchNorm statistics.
"""
from __future__ import annotations

import copy
import hashlib
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ...attacks.base import AttackStats
from ...errors import InputError
from ...images import check_image
from ...metrics.base import Metric
from ...fitting import spec_of
from ..base import Defense
from ... import limits
from ...limits import MAX_BATCH, MAX_EPOCHS, MAX_LR
from ..purification._checks import int_in, real

LOSSES = ("mse", "l1")


def check_trainable(metric: Any, who: str) -> None:
    """A one-line InputError unless ``metric`` is a differentiable Metric with parameters."""
    label = getattr(metric, "name", "") or type(metric).__name__
    if not isinstance(metric, Metric):
        raise InputError(f"{who} fine-tunes an iqaguard Metric (see iqaguard.wrap_metric), got {type(metric).__name__}")
    if not getattr(metric, "differentiable", True):
        raise InputError(f"{who} fine-tunes on gradients; metric {label!r} is not differentiable")
    if not any(p.is_floating_point() for p in metric.parameters()):
        raise InputError(f"{who} fine-tunes a metric's weights; metric {label!r} has no trainable parameters")


def param_groups(params: list[torch.Tensor], lr: float) -> list[dict]:
    """Adam groups with a *relative* step: each weight tensor (≥ 2 dims) gets lr × its RMS, each
    1-d tensor (bias, norm affine) lr × the median RMS of the weight tensors. Adam moves every
    element by about its lr per step whatever the gradient's scale, so a uniform lr changes thin
    weights (a ResNet's 3×3 convs, RMS ≈ 0.02) far more, relatively, than wide ones (a CNNIQA
    conv, RMS ≈ 0.07); a relative step treats metrics with weights of any scale alike (the idea
    of layer-wise rates, LARS: You, Gitman & Ginsburg 2017)."""
    rms = [float(p.detach().float().pow(2).mean().sqrt()) for p in params]
    weights = sorted(r for p, r in zip(params, rms) if p.dim() >= 2 and r > 0)
    typical = weights[len(weights) // 2] if weights else 1.0
    return [{"params": [p], "lr": lr * (r if p.dim() >= 2 and r > 0 else typical)} for p, r in zip(params, rms)]


class TrainedDefense(Defense):
    """Base of the adversarial-training family. Subclasses implement ``_loss(model, x, ref, u)``:
    the training loss of one minibatch (``u``: targets in range units), adding the gradient
    calls they spend making adversarial examples to ``self._calls``."""

    family = "training"
    trainable = True
    randomized = False
    differentiable = True
    changes_size = False

    def __init__(self, epochs: int = 4, lr: float = 0.0125, batch: int = 8, loss: str = "mse", seed: int = 0):
        self.epochs = int_in(epochs, "epochs", 1, MAX_EPOCHS)
        self.lr = real(lr, "lr", lo=0.0, lo_open=True, hi=MAX_LR)
        self.batch = int_in(batch, "batch", 1, MAX_BATCH)
        if loss not in LOSSES:
            raise InputError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.loss = loss
        self.seed = limits.seed(seed, optional=False)   # training is seeded
        self.truth: torch.Tensor | None = None
        self.fit_stats = AttackStats()
        self.fitted_on: str | None = None
        self._state: dict[str, torch.Tensor] | None = None
        self.on_step: Callable[[], Any] | None = None     # called after each minibatch (progress bars)

    # -- identity ---------------------------------------------------------------------------
    @property
    def who(self) -> str:
        return self.name or type(self).__name__

    def training_spec(self) -> str:
        """Everything that shapes training: the spec (all parameters are training parameters)
        plus a digest of the ground-truth targets when they were given."""
        spec = spec_of(self)        # registry spec, or class + constructor attributes
        if self.truth is not None:
            h = hashlib.sha256(self.truth.detach().cpu().to(torch.float64).numpy().tobytes()).hexdigest()
            spec += f"|truth={h[:16]}"
        return spec

    def set_truth(self, truth) -> "TrainedDefense":
        """Regress on ground truth (e.g. MOS, one value per training image, higher = better)
        instead of the clean metric's own scores. Kept in ``training_spec`` so caching sees it."""
        self.truth = None if truth is None else torch.as_tensor(truth, dtype=torch.float64).flatten().clone()
        return self

    # -- state --------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self._state is not None

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self._state is None:
            raise InputError(f"defense {self.who!r} is not fitted: call defense.fit(metric, images) first")
        return {k: v.clone() for k, v in self._state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Store a fine-tuned metric's state (checked against the metric in ``protect``)."""
        if not isinstance(state, dict) or not state or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            raise InputError("state must be a non-empty dict of name -> tensor (from defense.state_dict())")
        if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
            raise InputError("state holds non-finite values")
        self._state = {k: v.detach().cpu().clone() for k, v in state.items()}

    # -- protect ------------------------------------------------------------------------------
    def protect(self, metric: Metric) -> Metric:
        """A copy of ``metric`` with the fine-tuned weights, eval mode, frozen parameters."""
        if self._state is None:
            raise InputError(f"defense {self.who!r} is not fitted: call defense.fit(metric, images) "
                             f"or iqaguard.fitting.fit_or_load(defense, metric, images, cache_dir) first")
        if not isinstance(metric, Metric):
            raise InputError(f"defense {self.who!r} protects an iqaguard Metric, got {type(metric).__name__}")
        own = metric.state_dict()
        expected = {k: tuple(v.shape) for k, v in own.items()}
        got = {k: tuple(v.shape) for k, v in self._state.items()}
        if expected != got:
            missing = sorted(set(expected) - set(got))[:3]
            extra = sorted(set(got) - set(expected))[:3]
            wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])[:3]
            raise InputError(f"the state of {self.who!r} does not fit metric {metric.name!r} "
                             f"(missing {missing}, unexpected {extra}, wrong shape {wrong}): it was fitted on "
                             f"{self.fitted_on or 'another metric'}")
        out = copy.deepcopy(metric)
        out.load_state_dict({k: v.to(own[k].device, own[k].dtype) for k, v in self._state.items()})
        out.eval()
        for p in out.parameters():
            p.requires_grad_(False)
        out.mode, out.lower_better, out.differentiable = metric.mode, metric.lower_better, metric.differentiable
        out.name, out.params = metric.name, dict(metric.params)
        out._score_range = metric.score_range
        out.protected_by = self.training_spec()
        return out

    def unsupported(self, metric: Metric) -> str | None:
        try:
            check_trainable(metric, f"defense {self.who!r}")
        except InputError as exc:
            return str(exc)
        return None

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, metric: Metric, images: torch.Tensor, ref: torch.Tensor | None = None,
            truth=None) -> "TrainedDefense":
        """Fine-tune a copy of ``metric`` on ``images`` (N×3×H×W in [0,1]; FR metrics need ``ref``).
        ``truth``: optional ground truth per image (else ``set_truth``'s, else self-distillation).
        Seeded; the original metric is not modified. Returns ``self``."""
        check_trainable(metric, f"defense {self.who!r}")
        check_image(images, "images")
        if metric.mode == "FR":
            if ref is None:
                raise InputError(f"fitting on full-reference metric {metric.name!r} needs ref")
            check_image(ref, "ref")
            if ref.shape != images.shape:
                raise InputError(f"ref must have the shape of images {tuple(images.shape)}, got {tuple(ref.shape)}")
        else:
            ref = None
        if truth is not None:
            self.set_truth(truth)
        self._prepare(metric, images)
        device = next(metric.parameters()).device
        images = images.detach().to(device, torch.float32)
        ref = None if ref is None else ref.detach().to(device, torch.float32)
        n = images.shape[0]
        self.width = metric.range_width
        self.sign = -1.0 if metric.lower_better else 1.0
        lo, hi = metric.score_range
        self.bounds = (lo / self.width, hi / self.width)
        start = time.perf_counter()
        self._calls = 0
        model = copy.deepcopy(metric)
        model.eval()
        params = [p for p in model.parameters() if p.is_floating_point()]
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(self.seed)
            u = self._targets(model, images, ref)
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.Adam(param_groups(params, self.lr))
            gen = torch.Generator().manual_seed(self.seed)
            self._begin(images)
            for _ in range(self.epochs):
                order = torch.randperm(n, generator=gen)
                for i in range(0, n, self.batch):
                    idx = order[i:i + self.batch]
                    self._train_batch(model, opt, params, images[idx], None if ref is None else ref[idx], u[idx])
                    if self.on_step is not None:
                        self.on_step()
        self._state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self.fitted_on = spec_of(metric)
        self.fit_stats = AttackStats(grad_calls=self._calls, seconds=time.perf_counter() - start, batch=n)
        return self

    def total_steps(self, n_images: int) -> int:
        """Minibatches ``fit`` runs on ``n_images`` images (``on_step`` calls)."""
        return self.epochs * -(-int(n_images) // self.batch)

    def _prepare(self, metric: Metric, images: torch.Tensor) -> None:
        """Build helpers (label metric) and fail early, before any training."""

    def _begin(self, images: torch.Tensor) -> None:
        """Per-fit state (Free-AT's carried perturbation)."""

    def _train_batch(self, model, opt, params, x, ref, u) -> None:
        """One optimiser step on the loss of a minibatch (Free-AT overrides it with replays)."""
        opt.zero_grad(set_to_none=True)
        self._loss(model, x, ref, u).backward()
        self._calls += 1
        self._finish_step(opt, params)

    def _finish_step(self, opt, params) -> None:
        for p in params:
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
        opt.step()

    def _loss(self, model, x, ref, u) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------------
    def score(self, model, x: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        """Score in range units (score / width)."""
        return (model(x, ref) if ref is not None else model(x)) / self.width

    def regression(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, target) if self.loss == "mse" else F.l1_loss(pred, target)

    def _targets(self, model, images, ref) -> torch.Tensor:
        """Clean scores (range units) or ground truth mapped onto them by least squares."""
        with torch.no_grad():
            u = torch.cat([self.score(model, images[i:i + self.batch],
                                      None if ref is None else ref[i:i + self.batch])
                           for i in range(0, images.shape[0], self.batch)]).detach()
        if self.truth is None:
            return u
        t = self.truth.to(torch.float64)
        if t.numel() != u.numel():
            raise InputError(f"truth has {t.numel()} values for {u.numel()} training images")
        if not torch.isfinite(t).all() or float(t.std()) == 0.0:
            raise InputError("truth must be finite and not constant")
        a = torch.stack([t, torch.ones_like(t)], 1)
        coef = torch.linalg.lstsq(a, u.to(torch.float64).unsqueeze(1)).solution.squeeze(1)
        if coef[0] * self.sign <= 0:   # truth is higher-better; the metric's direction is self.sign
            raise InputError("truth and the metric's clean scores are not positively related "
                             "(for a lower-better metric, truth must still be higher = better)")
        return (a @ coef).to(u.dtype)

    def clip_targets(self, u: torch.Tensor) -> torch.Tensor:
        return u.clamp(*self.bounds)
