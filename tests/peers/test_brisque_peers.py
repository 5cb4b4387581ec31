"""BRISQUE components against peers in the peer venv.

1. The SVR: libsvm's own ``svm_predict`` (libsvm-official, installed with the ``brisque`` package)
   on the package's ``svm.txt`` vs our torch evaluation, same scaled features. Tolerance 1e-6
   absolute (measured ≈ 1e-12: both float64).
2. The 36 features at the default input — pyiqa's own: ``to_y_channel(x, 255)``, the rounded YIQ
   luma its ``brisque`` reads — through pyiqa's ``natural_scene_statistics`` (its port of
   brisque_feature.m), second scale after pyiqa's MATLAB ``imresize``. pyiqa fits the shape parameter by a
   float32 grid whose values drift from 0.2:0.001:10 and works in float32, so: shapes within one
   grid step (measured 1.7e-7: no fit landed on a different grid point), the other features within
   1 % relative (measured median 6e-6, max 0.19 %: the AGGD means, differences of nearly equal
   numbers), and the SVR score on pyiqa's features within 0.01 of ours (measured 5e-4 on a 0-100
   scale). The exact MATLAB-equivalence
   test is tests/metrics/test_brisque.py (float64 reference, 1e-8).

Not checked here: pyiqa's and piq's full BRISQUE scores — both need their SVR weights file
(brisque_svm_weights.pth / .pt, the MATLAB release's model, ρ = −153.591), which is a download;
and the ``brisque`` package's own score (its module needs OpenCV, and its features differ: zero
padding in scipy's convolve2d aside, it fits shapes by root finding instead of the grid).
"""
import numpy as np
import torch
from skimage import data

from iqaguard.images import to_tensor
from iqaguard.metrics.brisque import BRISQUE

SCRIPT = f"""
import sys
import torch
from libsvm import svmutil
from pyiqa.archs.brisque_arch import natural_scene_statistics
from pyiqa.matlab_utils import imresize
from pyiqa.utils.color_util import to_y_channel
import importlib.util, os
path = os.path.join(importlib.util.find_spec("brisque").submodule_search_locations[0], "models", "svm.txt")  # located, not imported
model = svmutil.svm_load_model(path)
outputs["libsvm"] = [svmutil.libsvm.svm_predict(model, svmutil.gen_svm_nodearray([float(v) for v in row])[0])
                     for row in inputs["scaled"]]
luma = to_y_channel(torch.from_numpy(inputs["x"]), 255.0).double()
f1 = natural_scene_statistics(luma)
f2 = natural_scene_statistics(imresize(luma, scale=0.5, antialiasing=True))
outputs["pyiqa_features"] = torch.cat([f1, f2], -1).reshape(luma.shape[0], 36)
"""


def test_brisque_svr_and_features_against_peers(peer):
    crops = [data.astronaut()[100:292, 100:292], data.chelsea()[50:242, 100:292], data.coffee()[100:292, 200:392]]
    x = torch.cat([to_tensor(c) for c in crops])
    m = BRISQUE()                                    # the default: pyiqa's input
    with torch.no_grad():
        feats = m.features(x)
        scaled = -1 + 2 * (feats - m.feat_min) / (m.feat_max - m.feat_min)
        ours = m.svr(feats).numpy()
    out = peer.run(SCRIPT, {"scaled": scaled.numpy(), "x": x.numpy()})

    np.testing.assert_allclose(ours, out["libsvm"], atol=1e-6)
    theirs = out["pyiqa_features"]
    f = feats.numpy()
    shape_cols = [0, 2, 6, 10, 14, 18, 20, 24, 28, 32]
    other = [c for c in range(36) if c not in shape_cols]
    assert np.abs(f[:, shape_cols] - theirs[:, shape_cols]).max() < 0.0015
    rel = np.abs(f[:, other] - theirs[:, other]) / np.abs(theirs[:, other])
    assert rel.max() < 0.01, rel.max(0)
    with torch.no_grad():
        on_theirs = m.svr(torch.from_numpy(theirs)).numpy()
    assert np.abs(on_theirs - ours).max() < 0.01, (ours, on_theirs)
