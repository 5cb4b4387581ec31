"""Speed of the classic metrics on a batch of 8 × 3×384×512 (CPU): ours vs scikit-image / pyiqa.

Run: ``python benchmarks/bench_metrics.py`` (best of ``--repeat`` runs; pyiqa rows only if installed).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from _timing import best  # noqa: E402  (benchmarks/ is on sys.path when a script runs)
from skimage.metrics import structural_similarity

from iqaguard.images import rgb_to_y
from iqaguard.metrics.niqe import NIQE
from iqaguard.metrics.ssim import SSIM




def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(8, 3, 384, 512, generator=g)
    x = (ref + 0.05 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    rows = []

    ssim = SSIM()
    t_ours = best(lambda: ssim(x, ref), args.repeat)
    xy, ry = rgb_to_y(x)[:, 0].double().numpy(), rgb_to_y(ref)[:, 0].double().numpy()
    t_sk = best(lambda: [structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                               data_range=1.0) for a, b in zip(xy, ry)], args.repeat)
    xg = x.clone().requires_grad_(True)
    t_ours_b = best(lambda: ssim(xg, ref).sum().backward(), args.repeat)
    rows += [("ssim forward", t_ours, "skimage (per image, Y)", t_sk),
             ("ssim forward+backward", t_ours_b, "", None)]

    niqe = NIQE()
    t_n = best(lambda: niqe(x), args.repeat)
    t_nb = best(lambda: niqe(xg).sum().backward(), args.repeat)
    rows += [("niqe forward", t_n, "", None), ("niqe forward+backward", t_nb, "", None)]

    try:  # optional peer
        import pyiqa
        for name, ours_f, ours_fb, make in (("ssim", t_ours, t_ours_b, lambda: pyiqa.create_metric("ssim", as_loss=True)),
                                            ("niqe", t_n, t_nb, lambda: pyiqa.create_metric("niqe", as_loss=True))):
            m = make()
            fr = name == "ssim"
            tf = best(lambda: m(x, ref) if fr else m(x), args.repeat)
            tb = best(lambda: (m(xg, ref) if fr else m(xg)).sum().backward(), args.repeat)
            rows += [(f"{name} forward", ours_f, "pyiqa", tf), (f"{name} forward+backward", ours_fb, "pyiqa", tb)]
    except ImportError:
        pass

    print(f"batch 8x3x384x512, torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeat}")
    for what, t, peer, tp in rows:
        line = f"{what:24s} ours {t * 1e3:8.1f} ms"
        if tp is not None:
            line += f"   {peer:24s} {tp * 1e3:8.1f} ms   speed-up x{tp / t:.1f}"
        print(line)
    print(f"niqe backward/forward cost ratio: {t_nb / t_n:.2f}")


if __name__ == "__main__":
    main()
