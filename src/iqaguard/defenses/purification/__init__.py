"""Purification defenses: ``purify(x)`` before the metric sees the image. Importing registers them."""
from . import identity, jpeg, blur, resize, quantization, noise  # noqa: F401
