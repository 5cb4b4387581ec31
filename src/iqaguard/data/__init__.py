"""Datasets. Importing this package registers the built-in ones."""
from .base import Dataset, Item  # noqa: F401
from . import bundled  # noqa: F401
from . import folder  # noqa: F401
from . import iqa_datasets  # noqa: F401
