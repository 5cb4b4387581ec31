"""Purification defenses: ``purify(x)`` before the metric sees the image. Importing registers them."""
from . import identity, jpeg, blur, resize, quantization, noise  # noqa: F401
from . import geometric, unsharp, diffjpeg  # noqa: F401
from . import fcn, mprnet, realesrgan  # noqa: F401
from . import diffpure, disco  # noqa: F401
