"""Adaptive attacks: make ``defense.protect(metric)`` something every gradient attack can differentiate.

A defense that only survives attacks that ignore it is not a defense (Athalye, Carlini & Wagner,
"Obfuscated Gradients Give a False Sense of Security", ICML 2018). Two wrappers, composable:

- **BPDA** (Backward Pass Differentiable Approximation): the forward value is the *real* defense
  (bit-exact: the purified image itself is what the metric sees), the backward pass goes through
  the defense's ``estimate_forward`` (a differentiable surrogate; identity = straight-through).
- **EOT** (Expectation over Transformation): each call replicates the batch ``k`` times with ``k``
  independent draws of a randomized defense and returns the mean score, so the gradient is the
  mean of the ``k`` per-draw gradients (one forward of the k-replicated batch).

``adaptive(defense, metric, wrapper="auto")`` picks BPDA for non-differentiable defenses, EOT for
randomized ones, both when both, and the plain defended metric for differentiable deterministic
ones. The result is a :class:`Metric` (same name, mode, direction and range, ``differentiable``
True), so an attack runs through it unchanged: ``attack(adaptive(defense, metric), x)``.

Randomness: every call draws one seed per (draw, image) from torch's global generator and passes
them to the defense, so the real defense and its surrogate see the *same* draw, and a run seeded
with ``torch.manual_seed`` is reproducible. Cost: ``draws`` counts images × draws purified and
scored; an attack's gradient call through an EOT-k wrapper costs k metric gradients
(``grad_cost`` = k).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import InputError
from .metrics.base import Metric

__all__ = ["AdaptiveMetric", "BPDA", "EOT", "adaptive", "auto_wrapper", "wrapper_name", "WRAPPERS", "DEFAULT_EOT_K"]

WRAPPERS = ("auto", "bpda", "eot", "bpda+eot", "none")
DEFAULT_EOT_K = 10


class _Substitute(torch.autograd.Function):
    """Forward: the real defended image (exactly); backward: the gradient goes to the surrogate."""

    @staticmethod
    def forward(ctx, surrogate: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return real.detach().clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def auto_wrapper(defense) -> str:
    """The wrapper ``auto`` resolves to for ``defense`` (without the k)."""
    bpda = not getattr(defense, "differentiable", True)
    eot = bool(getattr(defense, "randomized", False))
    return "bpda+eot" if bpda and eot else "bpda" if bpda else "eot" if eot else "none"


def wrapper_name(kind: str, k: int) -> str:
    """The string recorded with results: ``none``, ``bpda``, ``eot10``, ``bpda+eot10``."""
    return {"none": "none", "bpda": "bpda", "eot": f"eot{k}", "bpda+eot": f"bpda+eot{k}"}[kind]


class AdaptiveMetric(Metric):
    """``metric ∘ defense`` with BPDA and/or EOT; see the module docstring.

    ``bpda``: backward through ``defense.estimate_forward``; ``k``: draws per call (1 = no EOT).
    ``wrapper`` is the recorded name; ``grad_cost`` the metric gradients per attack gradient call.
    """

    def __init__(self, metric: Metric, defense, bpda: bool = False, k: int = 1):
        super().__init__()
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InputError(f"k (EOT draws) must be a positive integer, got {k!r}")
        purifier = hasattr(defense, "purify_pair")
        if bpda and not purifier:
            raise InputError(f"BPDA needs a purification defense with estimate_forward; "
                             f"{getattr(defense, 'name', type(defense).__name__)!r} is a {getattr(defense, 'family', '?')} defense")
        self.metric = metric
        self.defense = defense
        self.protected = None if purifier else defense.protect(metric)
        self.bpda = bool(bpda)
        self.k = k
        self.like(metric)
        chain = self.bpda or (getattr(defense, "differentiable", True) if purifier
                              else getattr(self.protected, "differentiable", True))
        if not (metric.differentiable and chain):
            raise InputError(
                f"{getattr(defense, 'name', '')!r} is not differentiable: use wrapper 'bpda' "
                f"(or 'bpda+eot' for a randomized defense) so gradients go through estimate_forward")
        self.differentiable = True
        self.randomized = bool(getattr(defense, "randomized", False))
        kind = ("bpda+eot" if k > 1 else "bpda") if self.bpda else ("eot" if k > 1 else "none")
        self.wrapper = wrapper_name(kind, k)
        self.grad_cost = k
        self.draws = 0

    def _seeds(self, n: int) -> list[int] | None:
        if not self.randomized:
            return None
        return torch.randint(0, 2**62, (n,)).tolist()

    def score(self, x: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        n, k = x.shape[0], self.k
        xk = x.repeat(k, 1, 1, 1) if k > 1 else x      # draw-major: draw j is rows j·n … j·n+n−1
        rk = None if ref is None else (ref.repeat(k, 1, 1, 1) if k > 1 else ref)
        if self.protected is not None:                  # trained / certified defenses: repeat calls
            s = torch.stack([self._call(self.protected, x, ref) for _ in range(k)])
            self.draws += n * k
            return s.mean(0)
        seeds = self._seeds(n * k)
        if self.bpda:
            with torch.no_grad():
                real, r_real = self.defense.purify_pair(xk.detach(), rk, seeds)
            est = self.defense.estimate_forward(xk, seeds)
            if est.shape != real.shape:   # a size-changing defense whose surrogate keeps the size
                est = F.interpolate(est, size=real.shape[-2:], mode="bilinear", align_corners=False)
            y = _Substitute.apply(est, real)
            r = r_real
        else:
            y, r = self.defense.purify_pair(xk, rk, seeds)
        s = self._call(self.metric, y, r)
        self.draws += n * k
        return s.reshape(k, n).mean(0)

    @staticmethod
    def _call(metric, y, ref):
        return metric(y) if ref is None else metric(y, ref)


def _unpack(defended) -> tuple[Metric, object]:
    metric, defense = getattr(defended, "metric", None), getattr(defended, "defense", None)
    if metric is None or defense is None:
        raise InputError("defended must be defense.protect(metric) of a purification defense "
                         f"(a PurifiedMetric), got {type(defended).__name__}")
    return metric, defense


def BPDA(defended) -> AdaptiveMetric:  # noqa: N802  (named after the method)
    """BPDA around ``defense.protect(metric)``: real forward, backward through ``estimate_forward``."""
    metric, defense = _unpack(defended)
    return AdaptiveMetric(metric, defense, bpda=True, k=1)


def EOT(defended, k: int = DEFAULT_EOT_K, bpda: bool = False) -> AdaptiveMetric:  # noqa: N802
    """EOT over ``k`` draws around ``defense.protect(metric)`` (``bpda=True``: BPDA+EOT)."""
    metric, defense = _unpack(defended)
    return AdaptiveMetric(metric, defense, bpda=bpda, k=k)


def adaptive(defense, metric: Metric, wrapper: str = "auto", k: int = DEFAULT_EOT_K) -> Metric:
    """``metric ∘ defense`` made attackable: ``wrapper`` in ``auto``, ``bpda``, ``eot``,
    ``bpda+eot``, ``none``; ``k`` draws for EOT (ignored by ``bpda``/``none``). The returned
    metric's ``wrapper`` attribute is the string recorded with results."""
    if wrapper not in WRAPPERS:
        raise InputError(f"wrapper must be one of {', '.join(WRAPPERS)}; got {wrapper!r}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InputError(f"k (EOT draws) must be a positive integer, got {k!r}")
    kind = auto_wrapper(defense) if wrapper == "auto" else wrapper
    if kind in ("bpda", "none"):
        k = 1
    return AdaptiveMetric(metric, defense, bpda=kind.startswith("bpda"), k=k)


def resolved_wrapper(defense, wrapper: str = "auto", k: int = DEFAULT_EOT_K) -> str:
    """The recorded wrapper string ``adaptive(defense, m, wrapper, k)`` would use, without building it."""
    if wrapper not in WRAPPERS:
        raise InputError(f"wrapper must be one of {', '.join(WRAPPERS)}; got {wrapper!r}")
    kind = auto_wrapper(defense) if wrapper == "auto" else wrapper
    if kind in ("eot", "bpda+eot") and k == 1:
        kind = "bpda" if kind == "bpda+eot" else "none"
    return wrapper_name(kind, k)

