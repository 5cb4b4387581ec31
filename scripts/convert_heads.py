"""Convert the published LPIPS linear heads and DISTS α/β weights to safetensors for shipping.

Sources (both small, both permissively licensed; see NOTICE):
  - LPIPS heads: ``lpips/weights/v{0.0,0.1}/{alex,vgg}.pth`` inside the ``lpips`` PyPI package
    0.1.4 (BSD-2-Clause, Zhang et al.).
  - DISTS α/β: ``DISTS_pytorch/weights.pt`` inside the ``DISTS_pytorch`` PyPI package 0.1 (MIT, Ding).

Usage (the wheels come from ``pip download --no-deps lpips==0.1.4 DISTS_pytorch==0.1 -d /tmp/w``;
installed package folders work too):

    python scripts/convert_heads.py --lpips /tmp/w/lpips-0.1.4-py3-none-any.whl \
        --dists /tmp/w/DISTS_pytorch-0.1-py3-none-any.whl --out src/iqaguard/weights

Tensors are copied unchanged (float32, same key names); the source and its SHA-256 go in the
safetensors metadata (key ``source``), the SHA-256 of each output is printed (and recorded in
``iqaguard/metrics/lpips.py`` and ``dists.py``).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

LPIPS_FILES = {f"lpips_v{v}_{net}.safetensors": f"lpips/weights/v{v}/{net}.pth"
               for v in ("0.0", "0.1") for net in ("alex", "vgg")}
DISTS_FILES = {"dists_alpha_beta.safetensors": "DISTS_pytorch/weights.pt"}


def read_member(source: Path, member: str) -> bytes:
    """``member`` from a wheel (zip) or from an installed package's site-packages folder."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as z:
            return z.read(member)
    for root in (source, source.parent):
        if (root / member).is_file():
            return (root / member).read_bytes()
    raise FileNotFoundError(f"{member} not found under {source}")


def convert(source: Path, files: dict[str, str], package: str, out: Path) -> None:
    for target, member in files.items():
        raw = read_member(source, member)
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        state = {k: v.detach().float().contiguous() for k, v in state.items()}
        negative = [k for k, v in state.items() if (v < 0).any()]
        if negative:
            raise SystemExit(f"{member}: negative weights in {negative}; expected non-negative")
        # one metadata key only: safetensors writes metadata in hash-map order, so several keys
        # would make the output bytes (and its SHA-256) differ from run to run
        origin = f"{package}:{member} sha256={hashlib.sha256(raw).hexdigest()}"
        path = out / target
        save_file(state, str(path), metadata={"source": origin})
        path.chmod(0o644)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{target}  sha256={digest}  from {origin}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lpips", type=Path, required=True, help="lpips wheel or installed package folder")
    ap.add_argument("--dists", type=Path, required=True, help="DISTS_pytorch wheel or installed package folder")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/iqaguard/weights")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    convert(args.lpips, LPIPS_FILES, "lpips 0.1.4", args.out)
    convert(args.dists, DISTS_FILES, "DISTS_pytorch 0.1", args.out)


if __name__ == "__main__":
    main()
