"""Fit once, then load: the shared cache of everything the grid trains.

Trainable attacks (universal perturbations, generators) and trained defenses (adversarially
fine-tuned metrics) both learn a state from a training split. ``fit_or_load`` turns that into a
cache lookup keyed by content: the object's training spec, the metric's spec *and weight bytes*,
the package version and the training images rounded to 8 bits. The state is saved atomically
(temporary file + ``os.replace``) as safetensors; a corrupt, truncated or foreign file is refit.

A fittable object has ``trainable = True``, ``fit(metric, images, ref)``, ``state_dict()``,
``load_state_dict(state)``, ``training_spec()`` (its spec without test-time parameters) and,
after ``fit``, ``fit_stats`` with ``seconds`` and ``grad_calls``.
"""
from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import Any, Callable

import torch

from ._version import __version__
from .atomic import replacing
from .errors import InputError
from .images import check_image
from .spec import format_spec

__all__ = ["fit_or_load", "state_key", "state_path", "name_params", "spec_of", "weights_digest", "STATE_FORMAT"]

STATE_FORMAT = "1"


def name_params(obj) -> tuple[str, dict[str, Any]]:
    """Registry name and params, or (for an object built directly) its class and the attributes
    named like its constructor's parameters."""
    name = getattr(obj, "name", "") or f"{type(obj).__module__}.{type(obj).__qualname__}"
    params = dict(getattr(obj, "params", {}) or {})
    if not params:
        try:
            sig = inspect.signature(type(obj).__init__)
        except (TypeError, ValueError):
            sig = None
        if sig is not None:
            for k in sig.parameters:
                if k != "self" and hasattr(obj, k):
                    params[k] = getattr(obj, k)
    params = {k: v for k, v in params.items()
              if isinstance(v, (int, float, str, bool, tuple, list)) or v is None}
    return name, params


def spec_of(obj) -> str:
    """A spec string naming ``obj`` (registry spec, or class + constructor attributes)."""
    name, params = name_params(obj)
    return format_spec(name, params)


def _tensor_digest(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    # reshape(-1): a 0-dim tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _images_digest(h, images: torch.Tensor) -> None:
    q = torch.round(images.detach().cpu().clamp(0, 1) * 255.0).to(torch.uint8).contiguous()
    h.update(f"{tuple(q.shape)}".encode())
    h.update(q.numpy().tobytes())


def weights_digest(metric) -> str:
    """sha256 of a module's state (names, dtypes, shapes and bytes); '' for a non-module."""
    h = hashlib.sha256()
    if hasattr(metric, "state_dict"):
        for k, v in sorted(metric.state_dict().items()):
            h.update(k.encode())
            _tensor_digest(h, v)
    return h.hexdigest()


def state_key(obj, metric, images: torch.Tensor, ref: torch.Tensor | None = None) -> str:
    """sha256 (hex) of what determines a trained state: the object's training spec, the metric's
    spec and weights, the package version and the training images (+ref) rounded to 8 bits."""
    h = hashlib.sha256()
    h.update(f"iqaguard-trainable-state/{STATE_FORMAT}\n".encode())
    h.update(f"attack={obj.training_spec()}\n".encode())
    h.update(f"metric={spec_of(metric)}\n".encode())
    h.update(f"version={__version__}\n".encode())
    h.update(f"weights={weights_digest(metric)}\n".encode())
    h.update(b"images\n")
    _images_digest(h, images)
    if ref is not None:
        h.update(b"ref\n")
        _images_digest(h, ref)
    return h.hexdigest()


def state_path(obj, key: str, cache_dir: str | os.PathLike) -> Path:
    name = (getattr(obj, "name", "") or type(obj).__name__).replace("/", "_").replace(":", "_")
    return Path(cache_dir) / f"{name}-{key[:16]}.safetensors"


def _say(log, msg: str) -> None:
    if log is None:
        return
    (log.info if hasattr(log, "info") else log)(msg)


def fit_or_load(obj, metric, images: torch.Tensor, cache_dir: str | os.PathLike,
                ref: torch.Tensor | None = None, log: Callable[[str], Any] | None = None):
    """Load ``obj``'s state from ``cache_dir`` when a state for this key exists, else fit and
    save it atomically. A corrupt or mismatched file is refit. ``log`` is a callable taking a
    message (or a ``logging.Logger``). Returns ``obj``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    label = getattr(obj, "name", "") or type(obj).__name__
    if not getattr(obj, "trainable", False):
        raise InputError(f"{label!r} is not trainable")
    check_image(images, "images")
    key = state_key(obj, metric, images, ref)
    path = state_path(obj, key, cache_dir)
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("key") != key:
                    raise InputError(f"key mismatch ({meta.get('key')!r})")
                state = {k: f.get_tensor(k) for k in f.keys()}
            obj.load_state_dict(state)
            obj.fitted_on = meta.get("metric")
            obj.fit_seconds = float(meta.get("fit_seconds", "nan"))   # what fitting it cost, for reports
            _say(log, f"{label}: loaded trained state {path.name}")
            return obj
        except Exception as exc:  # corrupt, truncated or foreign file: train again
            _say(log, f"{label}: cached state {path.name} unusable ({exc}); refitting")
    _say(log, f"{label}: fitting on {images.shape[0]} images for {spec_of(metric)}")
    obj.fit(metric, images, ref)
    obj.fit_seconds = float(obj.fit_stats.seconds)
    _say(log, f"{label}: fitted in {obj.fit_stats.seconds:.1f} s ({obj.fit_stats.grad_calls} gradient steps)")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"key": key, "attack": obj.training_spec(), "attack_full": spec_of(obj),
            "metric": spec_of(metric), "version": __version__, "format": STATE_FORMAT,
            "train_images": str(tuple(images.shape)),
            "fit_seconds": f"{obj.fit_stats.seconds:.3f}"}
    with replacing(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in obj.state_dict().items()}, str(tmp), metadata=meta)
    obj.fitted_on = spec_of(metric)
    return obj
