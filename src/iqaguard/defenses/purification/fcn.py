"""``fcn``: the study's "FCNet" purifier — a 3-layer convolutional net trained with MSE to map
attacked images back to clean ones.

Architecture (the study's ``metrics/defences/fcn/run.py``, msu-video-group/adversarial-defenses-for-iqa
@c1df1e1, built as ``FCN(3, 3, 64, norm_type='instance', act_type='relu')``)::

    e1 = conv1(x)                                   3 → 64, 3×3, pad 1
    e2 = InstanceNorm(conv2(LeakyReLU_0.2(e1)))     64 → 16, 3×3, pad 1 (no affine parameters)
    e3 = conv3(LeakyReLU_0.2(e2))                   16 → 3, 3×3, pad 1
    out = tanh(e3)

and the defense returns ``out.clamp(0, 1)``. Parameter names are the study's (``conv1``, ``conv2``,
``conv3``), so its ``fcn_mse.pth`` (``{'model': state_dict}``) loads strictly with ``residual=False``.

Our shipped weights use the *residual* form ``clamp(x + tanh(e3), 0, 1)`` (``residual=True``, the
default): the network predicts a bounded correction and starts at the identity (``conv3``
initialised to zero). Adversarial perturbations are a few /255, so the clean image is almost
the input; the direct form has to rebuild the whole image through InstanceNorm (which removes
each feature map's mean and contrast), a much harder target for a net this small trained for
minutes on CPU. The architecture and parameter names are unchanged.
Training: ``scripts/train_fcn.py`` (pairs made by our own attacks on bundled photos).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ...registry import DEFENSES
from ._learned import LearnedPurifier, freeze, load_checkpoint, load_strict

SHIPPED = "fcn_mse.safetensors"
SHIPPED_SHA256 = "b7fde3ee6ff29f34e2d7512175f0ff75c1f6846a46526a5abc1d79d0e015c4d4"
STUDY_FILE = "fcn_mse.pth"
STUDY_SOURCE = ("the study's server, https://titan.gml-team.ru:5003/fsdownload/vbKqFGe3o/fcn_mse.pth "
                "(msu-video-group/adversarial-defenses-for-iqa, metrics/defences/fcn/dfsrc/setup.sh)")


class FCNet(nn.Module):
    """3→64→16→3 convolutions, LeakyReLU(0.2), InstanceNorm after the second, tanh output."""

    def __init__(self, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1)
        self.conv2 = nn.Conv2d(64, 16, 3, 1, 1)
        self.conv3 = nn.Conv2d(16, 3, 3, 1, 1)
        if residual:  # start at the identity: zero correction
            nn.init.zeros_(self.conv3.weight)
            nn.init.zeros_(self.conv3.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.conv1(x)
        e2 = F.instance_norm(self.conv2(F.leaky_relu(e1, 0.2)))
        out = torch.tanh(self.conv3(F.leaky_relu(e2, 0.2)))
        return x + out if self.residual else out


@DEFENSES.register("fcn")
class FCN(LearnedPurifier):
    """The FCNet purifier: ``clamp(net(x), 0, 1)``. Differentiable, deterministic, same size.

    ``weights``: a file path; empty = the shipped ``fcn_mse.safetensors`` (``residual=True``) or
    the study's ``fcn_mse.pth`` (``residual=False``, not shipped: put it in ``$IQAGUARD_WEIGHTS``).
    """

    def __init__(self, weights: str = "", residual: bool = True):
        if not isinstance(weights, str):
            raise InputError(f"weights must be a file path (str), got {weights!r}")
        if not isinstance(residual, bool):
            raise InputError(f"residual must be a bool, got {residual!r}")
        self.weights = weights
        self.residual = residual
        if residual:
            state = load_checkpoint(SHIPPED, path=weights,
                                    source="shipped with iqaguard; rebuild with scripts/train_fcn.py",
                                    sha256=None if weights else SHIPPED_SHA256)
        else:
            state = load_checkpoint(STUDY_FILE, path=weights, source=STUDY_SOURCE)
        self.net = FCNet(residual)
        load_strict(self.net, state, "fcn")
        freeze(self.net)

    def transform(self, x, gens):
        return self._net_on(x)(x).clamp(0, 1)
