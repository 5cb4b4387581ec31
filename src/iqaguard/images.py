"""Image tensors and files: validation, loading, saving, 8-bit quantisation.

Convention everywhere: ``torch.float32``, NCHW, RGB, values in [0, 1].
"""
from __future__ import annotations

import math
import os
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .atomic import replacing
from .errors import InputError
from .paths import readable_file

# True inside ``trusted()``: check_image keeps its shape/dtype checks, skips the value checks
_TRUSTED: ContextVar[bool] = ContextVar("iqaguard_trusted_images", default=False)


@contextmanager
def trusted():
    """Skip the value checks (finite, in [0,1]) of :func:`check_image` inside this block.

    Each value check is a host-device sync on a GPU, and an attack's inner loop calls its metric
    (and, adaptively, the defense) hundreds of times on tensors it built and clamped itself. The
    public boundary (an attack's call, the worker's image load, a metric called by a user)
    validates once, outside; ``Attack.__call__`` runs its loop inside this block."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


# Pillow refuses images above this many pixels (decompression-bomb guard); 2x it raises.
MAX_PIXELS = 89_478_485


def check_image(x, name: str = "x", *, channels: int | None = 3) -> torch.Tensor:
    """Validate an image batch; return it unchanged or raise InputError naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor (NCHW float32 in [0,1]), got {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(f"{name} must be 4-D NCHW, got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise InputError(f"{name} must have {channels} channels (RGB), got {x.shape[1]} in shape {tuple(x.shape)}")
    if x.dtype != torch.float32:
        raise InputError(f"{name} must be float32, got {x.dtype}")
    if x.numel() == 0:
        raise InputError(f"{name} is empty, shape {tuple(x.shape)}")
    if _TRUSTED.get():
        return x
    # one pass: min and max propagate NaN, and ±Inf is an extreme, so a non-finite extreme is the
    # only way non-finite values show (an isfinite() pass cost 5× the min/max on CPU)
    with torch.no_grad():
        lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{name} contains NaN or Inf")
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"{name} values must be in [0,1], got min {lo:.4g} max {hi:.4g}")
    return x


def check_pair(x: torch.Tensor, ref: torch.Tensor, names=("x", "ref")) -> None:
    check_image(x, names[0])
    check_image(ref, names[1])
    if x.shape != ref.shape:
        raise InputError(f"{names[0]} and {names[1]} must have the same shape, got {tuple(x.shape)} and {tuple(ref.shape)}")


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid, as saving to PNG and reading back would."""
    return torch.round(x.clamp(0, 1) * 255.0) / 255.0


def quantize_within(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Quantise ``x_adv`` to 8 bits without leaving the ℓ∞ ball of radius ``eps`` around ``x``.

    Rounding alone can step one level past the budget when ``eps`` is not a multiple of 1/255;
    working in integer levels, each value is clamped to the levels that lie inside the ball.
    """
    tol = 1e-4  # in 8-bit levels: absorbs float error in x ± eps
    levels = torch.round(x_adv.clamp(0, 1) * 255.0)
    lo = torch.ceil((x - eps) * 255.0 - tol).clamp(0, 255)
    hi = torch.floor((x + eps) * 255.0 + tol).clamp(0, 255)
    return torch.minimum(torch.maximum(levels, lo), hi) / 255.0


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """HWC uint8/uint16/float array -> 1×3×H×W float32 in [0,1]."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    else:
        a = a.astype(np.float32)
    if a.shape[-1] == 4:
        a = a[..., :3]
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].clamp_(0, 1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """1×3×H×W or 3×H×W float in [0,1] -> H×W×3 uint8 (rounded)."""
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise InputError(f"to_uint8 takes one image, got a batch of {x.shape[0]}")
        x = x[0]
    return (quantize_8bit(x.detach().float()).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an RGB array; 16-bit grey keeps its precision."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        maxv = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / maxv, 0, 1).astype(np.float32)
        return np.stack([a] * 3, axis=-1)
    if img.mode == "F":
        a = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
        return np.stack([a] * 3, axis=-1)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # composite on white: the common viewer convention for transparent pixels
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as a 1×3×H×W float32 RGB tensor in [0,1].

    EXIF orientation is applied; L/LA/P/RGBA/CMYK/I;16 are converted to RGB. Missing, empty,
    truncated, oversized (decompression bomb) or non-image files raise InputError naming the file.
    """
    p = readable_file(path, "image file")   # missing, directory, symlink loop, permission denied
    if p.stat().st_size == 0:
        raise InputError(f"image file {str(p)!r} is empty (0 bytes)")
    old_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise InputError(
                        f"image file {str(p)!r} is too large ({img.width}x{img.height} pixels, limit {MAX_PIXELS})")
                img.load()
                array = _pil_to_rgb(img)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"image file {str(p)!r} is too large (decompression bomb guard): {exc}") from None
    except UnidentifiedImageError:
        raise InputError(f"file {str(p)!r} is not a readable image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"image file {str(p)!r} is truncated or corrupt: {exc}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old_truncated
    return to_tensor(array)


def save_png(x: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write one image (1×3×H×W) as an 8-bit PNG, atomically (temp file then rename)."""
    check_image(x, "x")
    p = Path(path)
    with replacing(p) as tmp:
        Image.fromarray(to_uint8(x)).save(tmp, format="PNG")
    return p


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma in [0,1] (MATLAB ``rgb2ycbcr``'s Y rescaled), N×1×H×W.

    Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 with R,G,B in [0,1], the convention of the
    reference PSNR/SSIM code and pyiqa's ``test_y_channel``.
    """
    w = x.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return ((x * w).sum(1, keepdim=True) + 16.0) / 255.0


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``rgb2gray`` weights (0.2989, 0.5870, 0.1140), N×1×H×W in [0,1]."""
    w = x.new_tensor([0.298936021293775, 0.587043074451121, 0.114020904255103]).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)
