"""The defaults, created by bare name, equal pyiqa's metrics of the same names (pyiqa 0.1.16, peer venv).

Images: the five TID2013 pairs pyiqa ships in its wheel (``ResultsCalibra/{ref,dist}_dir``, 512×384
BMPs; see test_published_values.py). pyiqa runs in the peer venv with its own defaults
(``pyiqa.create_metric(name)``), except that NIQE is given our shipped pristine model (its own
parameter file is a download). Every check names its tolerance and the measured deviation.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import iqaguard as ig
from iqaguard.metrics.channels import rgb_to_yiq_y

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["I03", "I04", "I06", "I08", "I19"]

SCRIPT = f"""
import importlib.util, os, sys
sys.path.insert(0, {str(ROOT / 'src')!r})
import scipy.io, torch, pyiqa
from PIL import Image
from pyiqa.utils.color_util import to_y_channel
from iqaguard.metrics.niqe import pristine_params
base = os.path.join(os.path.dirname(importlib.util.find_spec("pyiqa").submodule_search_locations[0]), "ResultsCalibra")
outputs["base"] = base
for kind in ("ref", "dist"):
    outputs[kind] = np.stack([np.asarray(Image.open(f"{{base}}/{{kind}}_dir/{{n}}.bmp").convert("RGB")) for n in {NAMES!r}])
t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255
ref, dist = t(outputs["ref"]), t(outputs["dist"])
with torch.no_grad():
    for name in ("psnr", "psnry", "ssim", "ssimc", "ms_ssim"):
        outputs[name] = pyiqa.create_metric(name, device="cpu")(dist, ref).flatten().double()
    p = pristine_params()
    scipy.io.savemat("niqe.mat", {{"mu_prisparam": p["mu_pris_param"], "cov_prisparam": p["cov_pris_param"]}})
    outputs["niqe"] = pyiqa.create_metric("niqe", device="cpu", pretrained_model_path="niqe.mat")(dist).flatten().double()
    outputs["luma"] = to_y_channel(dist, 255, "yiq")          # the 8-bit luma ssim/niqe/brisque read
"""


@pytest.fixture(scope="module")
def tid(peer):
    out = peer.run(SCRIPT)
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    return to_t(out["dist"]), to_t(out["ref"]), out


def _ours(name, dist, ref):
    m = ig.create_metric(name)
    with torch.no_grad():
        return (m(dist, ref) if m.mode == "FR" else m(dist)).double().numpy()


@pytest.mark.parametrize("name, tol", [
    ("psnr", 1e-3),      # dB; measured 0 (same float32 MSE + 1e-8); the issue asks ≤ 0.01 dB
    ("psnry", 1e-3),     # dB; measured 0 (I04 and I06 are at 56 dB, where pyiqa's ε shows: it is ours too)
    ("ssim", 2e-5),      # measured 4.4e-6: we filter in float32, pyiqa in float64 with a float32 window;
                         # the issue asks ≤ 1e-3
    ("ssimc", 2e-5),     # measured 5.3e-6, same cause
    ("ms_ssim", 2e-5),   # measured 1.5e-6, same cause
])
def test_fr_defaults_equal_pyiqa(tid, name, tol):
    dist, ref, out = tid
    ours = _ours(name, dist, ref)
    np.testing.assert_allclose(ours, out[name], atol=tol, rtol=0)


def test_luma_is_pyiqas_bit_for_bit(tid):
    """The rounded YIQ luma (ssim, ms_ssim, niqe and brisque defaults) equals pyiqa's to_y_channel
    exactly, exact .5 ties included (they are why rgb_to_yiq_y copies pyiqa's matmul)."""
    dist, _, out = tid
    ours = torch.round(rgb_to_yiq_y(dist) * 255.0).numpy()
    assert np.array_equal(ours, out["luma"])


def test_niqe_default_against_pyiqa(tid):
    """Same input (rounded YIQ luma) and same pristine model. I04 has no flat region and agrees
    to 1e-3 (measured 1.4e-5). The others contain flat, saturated areas (|MSCN| < 1e-6 on 2 %, 1 %,
    2 % and 30 % of the pixels of I03, I06, I08, I19): there the MSCN is floating-point noise,
    whose signs decide the AGGD fits, and pyiqa's noise differs from ours (it also resamples the
    second scale in float32: its imresize casts float64 input down). Measured deviations 0.043,
    0.0013, 0.021, 0.405 (I19); ours is the closer one to the MATLAB release's published values
    on I19 (8.668 vs 8.635; pyiqa 9.073): see test_published_values.py."""
    dist, _, out = tid
    ours = _ours("niqe", dist, None)
    dev = np.abs(ours - out["niqe"])
    assert dev[NAMES.index("I04")] < 1e-3, dev
    assert dev.max() < 0.5, dev


@pytest.mark.parametrize("metric, name, tol", [
    ("psnr", "psnr", 1e-3),   # dB; the CLI prints 6 significant digits (≤ 5e-5 dB rounding) + the 0 above
    ("ssim", "ssim", 2e-5),   # 6 digits (≤ 5e-7) + the 4.4e-6 above
])
def test_cli_score_prints_pyiqas_values(tid, metric, name, tol):
    """End to end: ``iqaguard score -m NAME DIST --ref REF`` on the BMP files pyiqa ships."""
    _, _, out = tid
    base = Path(str(out["base"]))
    for i, n in enumerate(NAMES):
        r = subprocess.run([sys.executable, "-m", "iqaguard.cli", "score", "-m", metric,
                            str(base / "dist_dir" / f"{n}.bmp"), "--ref", str(base / "ref_dir" / f"{n}.bmp")],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        value = float(r.stdout.split()[0])
        assert abs(value - float(out[name][i])) <= tol, (n, value, float(out[name][i]))
