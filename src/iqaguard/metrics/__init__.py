"""Image-quality metrics. Importing this package registers the built-in ones."""
from .base import Metric, WrappedMetric, wrap_metric, score_ranges  # noqa: F401
from . import psnr, ssim, niqe  # noqa: F401
from . import brisque  # noqa: F401
from . import lpips, dists  # noqa: F401
from . import learned  # noqa: F401  (iqg-cnn, iqg-resnet: shipped weights)
from . import pyiqa_bridge  # noqa: F401  (the pyiqa:NAME prefix; imports pyiqa lazily)
