"""Attacks on IQA metrics. Importing this package registers the built-in attacks."""
from .base import Attack, AttackStats  # noqa: F401
from . import gradient  # noqa: F401  (registers fgsm, ifgsm, mifgsm, amifgsm, pgd)
from . import perceptual  # noqa: F401  (registers korhonen-et-al, zhang-et-al(-dists), ssah, madc)
from . import blackbox  # noqa: F401  (registers square-attack, parsimonious, grad-est)
from . import sparse, spatial  # noqa: F401  (registers patch-rs, onepixel, stadv)
from . import universal  # noqa: F401  (registers the trainable uap, cnn-attack)
from . import colorization  # noqa: F401  (registers cadv)
