"""The Metric contract: an ``nn.Module`` that scores images, with its direction and range.

NR: ``m(x) -> (N,)``; FR: ``m(x, ref) -> (N,)``. Gradients flow whenever the input requires grad.
``score_range`` is the typical (lo, hi) on natural images, used to normalise gains; it comes
from the data table ``tables/score_ranges.json`` unless a metric sets it.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..images import check_image, check_pair


@lru_cache(maxsize=1)
def score_ranges() -> dict[str, tuple[float, float]]:
    """The score-range table (metric name -> (lo, hi)); lo > hi is never used: lo < hi always."""
    text = resources.files("iqaguard.tables").joinpath("score_ranges.json").read_text()
    table = json.loads(text)
    return {k: (float(v["lo"]), float(v["hi"])) for k, v in table.items() if not k.startswith("_")}


class Metric(nn.Module):
    """Base class. Subclasses implement ``score(x, ref)`` on validated input."""

    mode: str = "NR"              # "NR" | "FR"
    lower_better: bool = False
    differentiable: bool = True
    name: str = ""
    params: dict[str, Any] = {}
    _score_range: tuple[float, float] | None = None

    @property
    def score_range(self) -> tuple[float, float]:
        if self._score_range is not None:
            return self._score_range
        table = score_ranges()
        if self.name in table:
            return table[self.name]
        raise InputError(f"metric {self.name!r} has no score_range; add it to tables/score_ranges.json")

    @score_range.setter
    def score_range(self, value: tuple[float, float]) -> None:
        lo, hi = (float(v) for v in value)
        if not hi > lo:
            raise InputError(f"score_range must be (lo, hi) with hi > lo, got {value!r}")
        self._score_range = (lo, hi)

    @property
    def range_width(self) -> float:
        lo, hi = self.score_range
        return hi - lo

    def like(self, metric: "Metric") -> None:
        """Declare the same facts as ``metric`` (for metrics that wrap another: a defended, an
        adaptive or a smoothed metric is still read, ranged and attacked as the original)."""
        self.mode, self.lower_better, self.name = metric.mode, metric.lower_better, metric.name
        self.params = dict(metric.params)
        self._score_range = metric.score_range

    def check_input(self, x: torch.Tensor, ref: torch.Tensor | None) -> None:
        """The public boundary's validation: shape, dtype, range, finiteness; ref for FR."""
        if self.mode == "FR":
            if ref is None:
                raise InputError(f"full-reference metric {self.name or type(self).__name__!r} needs ref")
            check_pair(x, ref)
        else:
            check_image(x, "x")
            if ref is not None:
                check_image(ref, "ref")

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x, ref)
        out = self.score(x, ref)
        return out.reshape(x.shape[0])

    def score(self, x: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def better(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """True where score ``a`` is better than ``b``."""
        return a < b if self.lower_better else a > b

    def extra_repr(self) -> str:
        return f"mode={self.mode}, lower_better={self.lower_better}"


class WrappedMetric(Metric):
    """A user model declared as a metric (``ig.wrap_metric``)."""

    def __init__(self, module: nn.Module, mode: str = "NR", lower_better: bool = False,
                 score_range: tuple[float, float] = (0.0, 1.0), differentiable: bool = True,
                 name: str = "wrapped"):
        super().__init__()
        if mode not in ("NR", "FR"):
            raise InputError(f"mode must be 'NR' or 'FR', got {mode!r}")
        if not callable(module):
            raise InputError(f"module must be callable, got {type(module).__name__}")
        self.module = module
        self.mode = mode
        self.lower_better = bool(lower_better)
        self.differentiable = bool(differentiable)
        self.score_range = score_range
        self.name = name
        self.params = {}

    def score(self, x, ref):
        out = self.module(x) if self.mode == "NR" else self.module(x, ref)
        out = torch.as_tensor(out)
        if out.numel() != x.shape[0]:
            raise InputError(f"wrapped metric returned {out.numel()} values for a batch of {x.shape[0]}")
        return out.float()


def wrap_metric(module: nn.Module, *, mode: str = "NR", lower_better: bool = False,
                score_range: tuple[float, float] = (0.0, 1.0), differentiable: bool = True,
                name: str = "wrapped") -> Metric:
    """Declare any callable ``module(x[, ref]) -> (N,)`` as an iqaguard Metric."""
    return WrappedMetric(module, mode, lower_better, score_range, differentiable, name)
