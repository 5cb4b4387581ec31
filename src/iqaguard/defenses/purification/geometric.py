"""Geometric purifiers: ``flip`` (180° rotation), ``random-crop`` and ``random-rotate``.

They move pixels rather than change their values, so an adversarial pattern tuned to one pixel
grid no longer lines up with the metric's receptive fields.
"""
from __future__ import annotations

from typing import Sequence

import torch
from kornia.geometry.transform import rotate

from ...errors import InputError
from ...images import check_image
from ...registry import DEFENSES
from ..base import Purifier
from ._checks import int_in, real


@DEFENSES.register("flip")
class Flip(Purifier):
    """Flip both H and W — a 180° rotation (the study's ``torch.flip(x, axes=[2, 3])``).

    A permutation of pixels: differentiable, deterministic, same size. The metric sees the image
    upside down, which is the point (its learned orientation priors and the attack's spatial
    alignment both break); it also means an orientation-sensitive metric changes its clean score.
    """

    geometric = True

    differentiable = True

    def transform(self, x, gens):
        return torch.flip(x, dims=(2, 3))


@DEFENSES.register("random-crop")
class RandomCrop(Purifier):
    """A random ``size``×``size`` crop; the metric is evaluated **on the crop** (as in the study).

    Offsets are uniform over all valid positions (torchvision ``RandomCrop``: top in
    0..H−h, left in 0..W−w), one draw per image. When the image is smaller than ``size`` on a
    side we crop min(size, H) × min(size, W) (the study's torchvision call would raise); an image
    no larger than ``size`` on both sides is returned unchanged.

    FR metrics: the reference must get the *same* crop, so ``purify_pair`` draws the boxes once
    and cuts both images; ``align_ref`` alone cannot know the box and refuses a size mismatch.
    """

    geometric = True

    differentiable = True   # a linear selection of pixels for a given draw
    randomized = True
    changes_size = True

    def __init__(self, size: int = 128):
        self.size = int_in(size, "size", 1, 1 << 16)

    def boxes(self, x: torch.Tensor, gens) -> tuple[int, int, list[tuple[int, int]]]:
        """Crop height, width and one (top, left) per image, from the image's own generator."""
        h, w = x.shape[-2:]
        ch, cw = min(self.size, h), min(self.size, w)
        tops_lefts = []
        for i in range(x.shape[0]):
            u = self.draw(gens, i, (2,), x.device).tolist()
            # floor(u·(n+1)) is uniform on 0..n; min() guards against u·(n+1) rounding up to n+1
            tops_lefts.append((min(int(u[0] * (h - ch + 1)), h - ch), min(int(u[1] * (w - cw + 1)), w - cw)))
        return ch, cw, tops_lefts

    @staticmethod
    def crop(x: torch.Tensor, ch: int, cw: int, tops_lefts: list[tuple[int, int]]) -> torch.Tensor:
        return torch.stack([x[i, :, t:t + ch, l:l + cw] for i, (t, l) in enumerate(tops_lefts)])

    def transform(self, x, gens):
        return self.crop(x, *self.boxes(x, gens))

    def purify_pair(self, x, ref, seeds=None):
        check_image(x, "x")
        if ref is None:
            return self.purify(x, seeds), None
        check_image(ref, "ref")
        if ref.shape != x.shape:
            raise InputError(f"ref must have the shape of x for random-crop: {tuple(ref.shape)} vs {tuple(x.shape)}")
        box = self.boxes(x, self._generators(x, seeds))
        return self.crop(x, *box), self.crop(ref, *box)

    def align_ref(self, ref, purified):
        if ref.shape[-2:] == purified.shape[-2:]:
            return ref
        raise InputError("ref cannot be aligned to a random crop after the fact: use "
                         "purify_pair(x, ref, seeds), which cuts the same box from both")


@DEFENSES.register("random-rotate")
class RandomRotate(Purifier):
    """Rotation by an angle uniform in [−``angle_limit``, ``angle_limit``] degrees (one per image)
    about the image centre, nearest-neighbour sampling, zeros outside, same size — the study's
    torchvision ``RandomRotation(angle_limit)`` with nearest interpolation and fill 0.

    Positive angles turn the image counter-clockwise as displayed (torchvision/Pillow convention).
    Gradients: nearest sampling makes the output a re-indexing of input pixels, so the gradient
    with respect to x exists but is a sparse 0/1 routing that jumps as the angle changes — "poor"
    for an attacker averaging over draws. ``estimate_forward`` therefore uses the same rotation
    (same draws) with bilinear sampling, a smooth surrogate for BPDA/EOT.
    """

    geometric = True

    differentiable = True
    randomized = True

    def __init__(self, angle_limit: float = 15):
        real(angle_limit, "angle_limit", lo=0.0, hi=180.0, what=" (degrees)")
        self.angle_limit = angle_limit

    def angles(self, x: torch.Tensor, gens) -> torch.Tensor:
        u = torch.cat([self.draw(gens, i, (1,), x.device) for i in range(x.shape[0])])
        return ((2 * u - 1) * float(self.angle_limit)).to(x.dtype)

    def _rotate(self, x: torch.Tensor, gens, mode: str) -> torch.Tensor:
        # kornia rotates about ((W−1)/2, (H−1)/2) with align_corners=True: the pixel-grid centre,
        # the same point as Pillow's/torchvision's (W/2, H/2) in corner coordinates.
        return rotate(x, self.angles(x, gens), mode=mode, padding_mode="zeros", align_corners=True).clamp(0, 1)

    def transform(self, x, gens):
        return self._rotate(x, gens, "nearest")

    def estimate_forward(self, x: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        return self._rotate(x, self._generators(x, seeds), "bilinear")
