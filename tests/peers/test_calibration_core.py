"""Our classic metrics against pyiqa 0.1.16 and piq 0.8 (peer venv) on the same inputs.

Inputs: three 192×192 crops of scikit-image photos and a noisy (σ = 0.05), 8-bit-quantised copy.

1. The defaults (bare names) against pyiqa's metrics of the same names: pyiqa's conventions are
   ours (rounded YIQ luma, clipped cs, RGB PSNR with ε = 1e-8), so the tolerances only absorb
   float32-vs-float64 filtering. NIQE: pyiqa is given our shipped pristine model (converted to
   .mat), since its own parameter file is a download; these crops have no flat areas, so the two
   agree closely (on flat areas they need not: see test_pyiqa_defaults.py).
2. The other channel choices keep their meaning: ``channel='y'`` (rgb2ycbcr Y, unrounded) against
   piq on the same luma, and with rounding + clipping against pyiqa's ``color_space='ycbcr'``.
"""
import numpy as np
import torch
from skimage import data

import iqaguard as ig
from iqaguard.images import to_tensor

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _inputs():
    crops = [data.astronaut()[100:292, 100:292], data.chelsea()[50:242, 100:292], data.coffee()[100:292, 200:392]]
    x = torch.cat([to_tensor(c) for c in crops])
    g = torch.Generator().manual_seed(0)
    return x, ((x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1) * 255).round() / 255


SCRIPT = f"""
import os, sys
sys.path.insert(0, {str(ROOT / 'src')!r})
import scipy.io, torch, pyiqa, piq
from iqaguard.metrics.niqe import pristine_params
from iqaguard.images import rgb_to_y
t = {{k: torch.from_numpy(v) for k, v in inputs.items()}}
x, y = t["x"], t["y"]
p = pristine_params()
scipy.io.savemat("niqe.mat", {{"mu_prisparam": p["mu_pris_param"], "cov_prisparam": p["cov_pris_param"]}})
for name in ("psnr", "psnry", "ssim", "ssimc", "ms_ssim"):
    outputs["pyiqa_" + name] = pyiqa.create_metric(name)(y, x).flatten()
outputs["pyiqa_niqe"] = pyiqa.create_metric("niqe", pretrained_model_path="niqe.mat")(y).flatten()
outputs["pyiqa_ssim_ycbcr"] = pyiqa.create_metric("ssim", color_space="ycbcr")(y, x).flatten()
outputs["pyiqa_ms_ssim_ycbcr"] = pyiqa.create_metric("ms_ssim", color_space="ycbcr")(y, x).flatten()
outputs["pyiqa_niqe_ycbcr"] = pyiqa.create_metric("niqe", color_space="ycbcr", pretrained_model_path="niqe.mat")(y).flatten()
outputs["piq_psnr"] = piq.psnr(y, x, data_range=1.0, reduction="none")
outputs["piq_ssim_y"] = piq.ssim(rgb_to_y(y), rgb_to_y(x), data_range=1.0, downsample=False, reduction="none")
outputs["piq_ms_ssim_y"] = piq.multi_scale_ssim(rgb_to_y(y), rgb_to_y(x), data_range=1.0, reduction="none")
"""


def test_classic_metrics_match_pyiqa_and_piq(peer):
    x, y = _inputs()
    out = peer.run(SCRIPT, {"x": x.numpy(), "y": y.numpy()})

    def close(spec, key, tol):
        m = ig.create_metric(spec)
        ours = m(y, x) if m.mode == "FR" else m(y)
        theirs = torch.from_numpy(out[key]).float()
        diff = float((ours - theirs).abs().max())
        assert diff <= tol, (spec, key, ours.tolist(), theirs.tolist(), diff)

    # 1. defaults, by bare name
    close("psnr", "pyiqa_psnr", 1e-4)          # dB; measured 0 (same float32 MSE and ε)
    close("psnr:channel=rgb,mse_floor=1e-10", "piq_psnr", 1e-4)   # measured 1.9e-5; piq adds no ε
    close("psnry", "pyiqa_psnry", 1e-4)        # measured 0
    close("ssim", "pyiqa_ssim", 2e-5)          # measured 8.9e-7: float32 vs float64 filtering
    close("ssimc", "pyiqa_ssimc", 2e-5)        # measured 3.6e-7
    close("ms_ssim", "pyiqa_ms_ssim", 2e-5)    # measured 1.8e-7
    close("niqe", "pyiqa_niqe", 1e-3)          # NIQE ≈ 7-11 here; measured 8.6e-6
    # 2. the rgb2ycbcr Y keeps its meaning; with pyiqa's rounding and clipping it is pyiqa's ycbcr
    close("ssim:channel=y", "piq_ssim_y", 1e-5)              # same Y, no rounding; measured 1.8e-6
    close("ms_ssim:channel=y", "piq_ms_ssim_y", 1e-5)        # measured 5.4e-7
    close("ssim:channel=y,quantize=true,clip_cs=true", "pyiqa_ssim_ycbcr", 2e-5)     # measured 1.2e-6
    close("ms_ssim:channel=y,quantize=true,clip_cs=true,pool_border=zero", "pyiqa_ms_ssim_ycbcr", 2e-5)  # 4.8e-7
    close("niqe:channel=y,quantize=true", "pyiqa_niqe_ycbcr", 1e-3)                  # measured 1.2e-5
