"""BRISQUE components against peers in the peer venv.

1. The SVR: libsvm's own ``svm_predict`` (libsvm-official, installed with the ``brisque`` package)
   on the package's ``svm.txt`` vs our torch evaluation, same scaled features. Tolerance 1e-6
   absolute (measured ≈ 1e-12: both float64).
2. The 36 features: pyiqa's ``natural_scene_statistics`` (its port of brisque_feature.m) on the
   same luma, second scale after pyiqa's MATLAB ``imresize``. pyiqa fits the shape parameter by a
   float32 grid whose values drift from 0.2:0.001:10 and works in float32, so: shapes within one
   grid step (measured 0.001), the other features within 10 % relative (measured median 7e-6,
   max 6.7 %: the AGGD means, differences of nearly equal numbers), and the SVR score on pyiqa's
   features within 0.5 of ours (measured 0.18 on a 0-100 scale). The exact MATLAB-equivalence
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

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]

SCRIPT = f"""
import glob, sys
import torch
from libsvm import svmutil
from pyiqa.archs.brisque_arch import natural_scene_statistics
from pyiqa.matlab_utils import imresize
path = glob.glob({str(ROOT / '.venv-peers/lib/python3*/site-packages/brisque/models/svm.txt')!r})[0]
model = svmutil.svm_load_model(path)
outputs["libsvm"] = [svmutil.libsvm.svm_predict(model, svmutil.gen_svm_nodearray([float(v) for v in row])[0])
                     for row in inputs["scaled"]]
luma = torch.from_numpy(inputs["luma"])
f1 = natural_scene_statistics(luma)
f2 = natural_scene_statistics(imresize(luma, scale=0.5, antialiasing=True))
outputs["pyiqa_features"] = torch.cat([f1, f2], -1).reshape(luma.shape[0], 36)
"""


def test_brisque_svr_and_features_against_peers(peer):
    crops = [data.astronaut()[100:292, 100:292], data.chelsea()[50:242, 100:292], data.coffee()[100:292, 200:392]]
    x = torch.cat([to_tensor(c) for c in crops]).double()
    m = BRISQUE(channel="y", quantize=True)
    with torch.no_grad():
        feats = m.features(x)
        scaled = -1 + 2 * (feats - m.feat_min) / (m.feat_max - m.feat_min)
        ours = m.svr(feats).numpy()
    luma = ((x * x.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)).sum(1, keepdim=True) + 16).round()
    out = peer.run(SCRIPT, {"scaled": scaled.numpy(), "luma": luma.numpy()})

    np.testing.assert_allclose(ours, out["libsvm"], atol=1e-6)
    theirs = out["pyiqa_features"]
    f = feats.numpy()
    shape_cols = [0, 2, 6, 10, 14, 18, 20, 24, 28, 32]
    other = [c for c in range(36) if c not in shape_cols]
    assert np.abs(f[:, shape_cols] - theirs[:, shape_cols]).max() < 0.0015
    rel = np.abs(f[:, other] - theirs[:, other]) / np.abs(theirs[:, other])
    assert rel.max() < 0.10, rel.max(0)
    with torch.no_grad():
        on_theirs = m.svr(torch.from_numpy(theirs)).numpy()
    assert np.abs(on_theirs - ours).max() < 0.5, (ours, on_theirs)
