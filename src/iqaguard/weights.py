"""Resolve a weight id to a local file — never downloading unless the user allows it.

Order: explicit path → ``$IQAGUARD_WEIGHTS/<filename>`` → files shipped in the package
(``iqaguard/weights/``) → with ``torch_hub=True``, the torch hub cache
(``torch.hub.get_dir()/checkpoints/<filename>``, where torchvision keeps its downloads) → the
Hugging Face cache (``local_files_only`` unless allowed).
Loading is safetensors or ``torch.load(weights_only=True)`` only; SHA-256 checked where known.
"""
from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

import torch

from .errors import InputError
from .paths import readable_file


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve(filename: str, *, path: str | os.PathLike | None = None, sha256: str | None = None,
            hf_repo: str | None = None, allow_download: bool = False, source: str = "",
            torch_hub: bool = False) -> Path:
    """Find ``filename``; raise InputError saying which file is needed and where to put it."""
    if path:
        # an explicit path is used or refused, never silently replaced by another copy
        found = readable_file(path, "weights file")
        if sha256 and _sha256(found) != sha256:
            raise InputError(f"weights file {str(found)!r} has the wrong SHA-256 (expected {sha256})")
        return found
    candidates: list[Path] = []
    env = os.environ.get("IQAGUARD_WEIGHTS")
    if env:
        candidates.append(Path(env) / filename)
    shipped = resources.files("iqaguard").joinpath("weights", filename)
    candidates.append(Path(str(shipped)))
    if torch_hub:
        candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / filename)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None and hf_repo:
        try:
            from huggingface_hub import hf_hub_download  # optional

            found = Path(hf_hub_download(hf_repo, filename, local_files_only=not allow_download))
        except Exception:
            found = None
    if found is None:
        where = f" (published at: {source})" if source else ""
        raise InputError(
            f"weights file {filename!r} not found{where}. Put it in $IQAGUARD_WEIGHTS "
            f"(now {env or 'unset'}){' or the torch hub cache' if torch_hub else ''} "
            f"or pass its path explicitly; looked in: "
            + ", ".join(str(c) for c in candidates))
    if sha256 and _sha256(found) != sha256:
        raise InputError(f"weights file {str(found)!r} has the wrong SHA-256 (expected {sha256})")
    return found


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict safely (safetensors, or torch.load with weights_only=True)."""
    p = readable_file(path, "weights file")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"weights file {str(p)!r} is not a valid safetensors file: {exc}") from None
    try:
        # weights_only: a pickle may only rebuild tensors and containers, never call code
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"could not load weights {str(p)!r} safely (refused or unreadable): {first}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state
