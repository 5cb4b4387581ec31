"""Attacks on IQA metrics. Importing this package registers the built-in attacks."""
from .base import Attack, AttackStats  # noqa: F401
from . import gradient  # noqa: F401  (registers fgsm, ifgsm, mifgsm, pgd)
