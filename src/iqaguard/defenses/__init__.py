"""Defenses. Importing this package registers the built-in ones."""
from .base import Defense, Purifier, PurifiedMetric  # noqa: F401
from . import purification  # noqa: F401
from . import training  # noqa: F401
from . import certified  # noqa: F401
