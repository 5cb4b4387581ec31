"""Image-quality metrics. Importing this package registers the built-in ones."""
from .base import Metric, WrappedMetric, wrap_metric, score_ranges  # noqa: F401
from . import psnr, ssim, niqe  # noqa: F401
