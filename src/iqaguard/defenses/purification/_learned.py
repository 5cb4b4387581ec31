"""Shared plumbing of the learned purifiers (``fcn``, ``mprnet``, ``realesrgan``).

A published checkpoint comes in its authors' wrapping (``{'model': …}``, ``{'state_dict': …}``,
``{'params': …}``, keys prefixed ``module.`` by DataParallel); :func:`unwrap_state` takes the
plain state dict out of it and :func:`load_strict` loads it with ``strict=True``, turning a
mismatch into an ``InputError`` that says which keys differ — a wrong file must never load
half-way and run with random weights.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ...errors import InputError
from ...weights import load_state, resolve
from ..base import Purifier

_WRAPPERS = ("params_ema", "params", "state_dict", "model")


def unwrap_state(state: Mapping, prefer: tuple[str, ...] = _WRAPPERS) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: the first wrapper key present, ``module.`` stripped."""
    if not isinstance(state, Mapping):
        raise InputError(f"weights: expected a state dict, got {type(state).__name__}")
    for key in prefer:
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise InputError(f"weights: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k[7:] if k.startswith("module.") else k] = v
    return out


def load_strict(net: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with an InputError naming the missing/unexpected keys."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        def few(keys):
            return ", ".join(keys[:5]) + (f" … ({len(keys)} in all)" if len(keys) > 5 else "")
        parts = [f"missing {few(missing)}" if missing else "",
                 f"unexpected {few(unexpected)}" if unexpected else "",
                 f"wrong shape {few(wrong)}" if wrong else ""]
        raise InputError(f"{what}: the weights do not match the architecture: "
                         + "; ".join(p for p in parts if p))
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def load_checkpoint(filename: str, *, path: str = "", source: str = "", sha256: str | None = None,
                    prefer: tuple[str, ...] = _WRAPPERS) -> dict[str, torch.Tensor]:
    """Resolve ``filename`` (explicit ``path`` first) and return its plain state dict."""
    file = resolve(filename, path=path or None, source=source, sha256=sha256)
    return unwrap_state(load_state(file), prefer)


def freeze(net: nn.Module) -> nn.Module:
    """Inference mode with frozen weights: attacks differentiate w.r.t. the image only."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class LearnedPurifier(Purifier):
    """A purifier whose transform is a frozen network ``self.net`` (moved to the input's device)."""

    differentiable = True
    randomized = False
    net: nn.Module

    def _net_on(self, x: torch.Tensor) -> nn.Module:
        p = next(self.net.parameters(), None)
        if p is not None and p.device != x.device:
            self.net.to(x.device)
        return self.net
