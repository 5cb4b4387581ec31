"""Our classic metrics against pyiqa 0.1.16 and piq 0.8 (peer venv) on the same inputs.

Inputs: three 192×192 crops of scikit-image photos and a noisy (σ = 0.05), 8-bit-quantised copy.
pyiqa rounds the luma to integer grey levels before SSIM / MS-SSIM / NIQE and computes SSIM in
float32 on the 0-255 scale; our SSIM does neither (it follows ssim_index.m on the BT.601 luma), so
the SSIM tolerances against pyiqa are looser than against piq, which computes on the same luma as
ours. NIQE is compared with our ``quantize=True``, which performs the same rounding, and pyiqa is
given our shipped pristine model (converted to .mat), since its own parameter file is a download.
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
outputs["pyiqa_psnr"] = pyiqa.create_metric("psnr")(y, x).flatten()
outputs["piq_psnr"] = piq.psnr(y, x, data_range=1.0, reduction="none")
outputs["pyiqa_ssim"] = pyiqa.create_metric("ssim", color_space="ycbcr")(y, x).flatten()
outputs["piq_ssim"] = piq.ssim(rgb_to_y(y), rgb_to_y(x), data_range=1.0, downsample=False, reduction="none")
outputs["pyiqa_ms_ssim"] = pyiqa.create_metric("ms_ssim", color_space="ycbcr")(y, x).flatten()
outputs["piq_ms_ssim"] = piq.multi_scale_ssim(rgb_to_y(y), rgb_to_y(x), data_range=1.0, reduction="none")
outputs["pyiqa_niqe"] = pyiqa.create_metric("niqe", color_space="ycbcr", pretrained_model_path="niqe.mat")(y).flatten()
"""


def test_classic_metrics_match_pyiqa_and_piq(peer):
    x, y = _inputs()
    out = peer.run(SCRIPT, {"x": x.numpy(), "y": y.numpy()})

    def close(ours, key, tol):
        theirs = torch.from_numpy(out[key]).float()
        diff = float((ours - theirs).abs().max())
        assert diff <= tol, (key, ours.tolist(), theirs.tolist(), diff)

    psnr = ig.create_metric("psnr", channel="rgb")(y, x)
    close(psnr, "pyiqa_psnr", 1e-4)          # dB; measured 1.9e-5 (float32 MSE)
    close(psnr, "piq_psnr", 1e-4)            # measured 1.9e-5
    close(ig.create_metric("ssim")(y, x), "pyiqa_ssim", 1.5e-3)        # measured 6.3e-4 (luma rounding)
    close(ig.create_metric("ssim")(y, x), "piq_ssim", 1e-5)            # measured 1.8e-6 (same Y, no rounding)
    close(ig.create_metric("ms_ssim")(y, x), "pyiqa_ms_ssim", 3e-4)    # measured 6.9e-5 (luma rounding)
    close(ig.create_metric("ms_ssim")(y, x), "piq_ms_ssim", 1e-5)      # measured 5.4e-7
    niqe = ig.create_metric("niqe", channel="y", quantize=True)(y)
    close(niqe, "pyiqa_niqe", 1e-3)          # NIQE ≈ 7-11 here; measured 1.3e-5
