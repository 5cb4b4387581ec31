"""``jpeg``: real JPEG compression of the 8-bit image (Pillow / libjpeg), the study's JPEG defense."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from ...images import to_uint8
from ...registry import DEFENSES
from ..base import Purifier
from ._checks import int_in
from .diffjpeg import diff_jpeg


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode an H×W×3 uint8 array as JPEG and decode it again, with Pillow's defaults."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as dec:
        return np.asarray(dec.convert("RGB"))


@DEFENSES.register("jpeg")
class Jpeg(Purifier):
    """Encode/decode each image as an 8-bit RGB JPEG at ``quality`` (1..100).

    Source: the study's ``jpeg`` (torchvision ``encode_jpeg``/``decode_jpeg`` on uint8, ``q``).
    We use Pillow with its defaults: baseline, libjpeg's standard quantisation tables scaled by
    ``quality``, and 4:2:0 chroma subsampling at every quality (checked for 10/30/50/70/90;
    torchvision's encoder also leaves libjpeg's 4:2:0 default). The float image is rounded to
    8 bits first, as saving a file would. One image at a time (JPEG is per-image by nature).

    Not differentiable: ``estimate_forward`` (the BPDA surrogate) is the differentiable JPEG
    (``diffjpeg``) at the same quality, with straight-through rounding.
    """

    differentiable = False

    def __init__(self, quality: int = 50):
        self.quality = int_in(quality, "quality", 1, 100)

    def estimate_forward(self, x, seeds=None):
        return diff_jpeg(x, self.quality, ste=True)

    def transform(self, x, gens):
        out = []
        with torch.no_grad():
            for i in range(x.shape[0]):
                dec = jpeg_roundtrip(to_uint8(x[i:i + 1]), self.quality)
                out.append(torch.from_numpy(dec.transpose(2, 0, 1).astype(np.float32) / 255.0))
        return torch.stack(out).to(x.device)
