"""Adversarial-training defenses: ``fit`` fine-tunes a copy of a metric, ``protect`` returns it.
Importing registers at-fgsm, at-pgd, at-free-ssim-2/4, at-apgd-lpips-4, at-apgd-ssim-4, nt, at-trades."""
from .base import TrainedDefense, check_trainable  # noqa: F401
from . import adversarial, nt, trades  # noqa: F401
from .command import train_defense_command  # noqa: F401,E402
