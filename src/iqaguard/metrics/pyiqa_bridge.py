"""Every pyiqa metric as an iqaguard Metric: ``create_metric("pyiqa:NAME")``.

pyiqa (IQA-PyTorch) is an optional extra (``pip install iqaguard[pyiqa]``); it is imported only
when such a metric is built or listed, so the core package never depends on it (nor on the
torchvision it pulls in). The wrapper reads the metric's mode and direction from pyiqa and takes
its score range from ``tables/score_ranges.json`` (the study's bounds) through the name map in
``tables/pyiqa_names.json``, else from pyiqa's own model-card text range mapped by that table.

Gradients: pyiqa's ``as_loss=True`` reduces the batch to one number, so the wrapper builds the
metric with ``as_loss=False`` and calls its network directly — gradients flow whenever the input
requires grad, as for every iqaguard metric. Weights are whatever pyiqa finds in its local cache:
the bridge sets ``HF_HUB_OFFLINE=1`` before importing pyiqa unless the variable is already set
(``HF_HUB_OFFLINE=0`` lets pyiqa download).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from functools import lru_cache
from importlib import resources

import torch

from ..errors import InputError
from ..registry import register_prefix
from .base import Metric, score_ranges

INSTALL_HINT = "pyiqa is not installed: pip install iqaguard[pyiqa] (or pip install pyiqa)"


@lru_cache(maxsize=1)
def name_table() -> dict:
    """``study_names`` (pyiqa name -> study name) and ``text_ranges`` (pyiqa range text -> [lo, hi])."""
    return json.loads(resources.files("iqaguard.tables").joinpath("pyiqa_names.json").read_text())


def _import_pyiqa():
    # pyiqa fetches weights from the Hugging Face hub; unless the user chose otherwise, look only
    # in the local cache (nothing downloads at run time). Read by huggingface_hub at its import.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import pyiqa
    except ImportError as exc:
        raise InputError(f"{INSTALL_HINT} ({exc})") from exc
    return pyiqa


def _parse_range(text: str) -> tuple[float, float] | None:
    """Two numbers in a model-card text not in the table yet (a newer pyiqa), else None."""
    nums = re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)
    return (float(nums[0]), float(nums[1])) if len(nums) == 2 else None


def score_range_for(name: str, card_range: str | None) -> tuple[float, float]:
    """Study bounds when the study scored this metric on pyiqa's scale, else pyiqa's model-card range."""
    table = name_table()
    study = table["study_names"].get(name, name)
    if study is not None and study in score_ranges():
        return score_ranges()[study]
    if card_range is not None:
        text = card_range.strip()
        rng = table["text_ranges"][text] if text in table["text_ranges"] else _parse_range(text)
        if rng is not None and rng[1] > rng[0]:
            return (float(rng[0]), float(rng[1]))
    raise InputError(f"no score range known for pyiqa metric {name!r} (model card: {card_range!r}); "
                     f"pass score_range='lo,hi'")


class PyiqaMetric(Metric):
    """A pyiqa metric (its network called directly, so gradients flow)."""

    def __init__(self, pyiqa_name: str, device: str = "cpu", options: str = "", score_range: str = ""):
        super().__init__()
        pyiqa = _import_pyiqa()
        try:
            opts = json.loads(options) if options else {}
        except json.JSONDecodeError as exc:
            raise InputError(f"options must be a JSON object string, got {options!r}: {exc}") from exc
        if not isinstance(opts, dict):
            raise InputError(f"options must be a JSON object string, got {options!r}")
        if pyiqa_name not in pyiqa.list_models():
            raise InputError(f"pyiqa has no metric {pyiqa_name!r}; see `iqaguard list metrics 'pyiqa:*'`")
        try:
            self.inner = pyiqa.create_metric(pyiqa_name, as_loss=False, device=torch.device(device), **opts)
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
            raise InputError(f"pyiqa could not build {pyiqa_name!r} (weights not in the local cache? "
                             f"nothing is downloaded while HF_HUB_OFFLINE=1): {type(exc).__name__}: {exc}") from exc
        self.mode = "FR" if self.inner.metric_mode == "FR" else "NR"
        self.lower_better = bool(self.inner.lower_better)
        self.differentiable = True
        self.pyiqa_name = pyiqa_name
        if score_range:
            rng = _parse_range(score_range)
            if rng is None:
                raise InputError(f"score_range must be 'lo,hi', got {score_range!r}")
            self.score_range = rng
        else:
            self.score_range = score_range_for(pyiqa_name, self.inner.score_range)

    def score(self, x: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        dev = self.inner.device
        net = self.inner.net            # what pyiqa's InferenceModel.forward calls, minus its no_grad
        out = net(x.to(dev)) if self.mode == "NR" else net(x.to(dev), ref.to(dev))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(x.shape[0]).float().to(x.device)


def _resolver(name: str):
    def pyiqa_metric(device: str = "cpu", options: str = "", score_range: str = "") -> PyiqaMetric:
        return PyiqaMetric(name, device=device, options=options, score_range=score_range)

    pyiqa_metric.__doc__ = (f"pyiqa metric {name!r}; options: JSON object of extra pyiqa.create_metric "
                            f"keywords; score_range: 'lo,hi' to override the table.")
    return pyiqa_metric


def available_names() -> list[str]:
    """pyiqa's metric names when pyiqa is installed, else []. Importing pyiqa is lazy (seconds)."""
    if importlib.util.find_spec("pyiqa") is None:
        return []
    try:
        return list(_import_pyiqa().list_models())
    except Exception:      # a broken pyiqa install must not break `iqaguard list`
        return []


register_prefix("metric", "pyiqa", _resolver, available_names)
