"""Why two purifiers are our own code rather than kornia's (measured in the same run).

- diffjpeg: ours vs ``kornia.enhance.jpeg_codec_differentiable`` — speed, and PSNR to real
  (Pillow) JPEG at the same quality on the bundled photos: the surrogate's job is to be close to it.
- median-blur: kornia's ``median_blur`` (used) vs a plain unfold + median (the study's method).

Run: ``python benchmarks/bench_defenses.py``.
"""
from __future__ import annotations


import kornia
import torch

from _timing import best  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

import iqaguard as ig
import torch.nn.functional as F
from iqaguard.defenses.purification.diffjpeg import diff_jpeg
from iqaguard.metrics.psnr import PSNR




def unfold_median(x, k):
    """The study's median: reflect pad, unfold, median over the k² window values."""
    p = k // 2
    win = F.pad(x, (p, p, p, p), mode="reflect").unfold(2, k, 1).unfold(3, k, 1)
    return win.reshape(*x.shape, -1).median(dim=-1).values


def main(argv: list[str] | None = None) -> dict:
    ds = ig.create_dataset("bundled", include_pristine=True)
    seen, photos = set(), []
    for it in ds.items:
        content = it.id.split("/")[0]
        if content not in seen:
            seen.add(content)
            photos.append(it.load_ref())
    x = torch.cat(photos)
    psnr = PSNR(channel="rgb")
    print(f"photos: {tuple(x.shape)}")
    rows = []
    print(f"{'quality':>8} {'ours dB':>8} {'kornia dB':>9} {'ours s':>7} {'kornia s':>8} {'speed ×':>7}")
    for q in (10, 30, 50, 70, 90):
        real = ig.create_defense("jpeg", quality=q).purify(x)
        ours = diff_jpeg(x, q)
        theirs = kornia.enhance.jpeg_codec_differentiable(x, torch.tensor([float(q)])).clamp(0, 1)
        t_ours = best(lambda: diff_jpeg(x, q))
        t_k = best(lambda: kornia.enhance.jpeg_codec_differentiable(x, torch.tensor([float(q)])))
        p_ours, p_k = float(psnr(ours, real).mean()), float(psnr(theirs, real).mean())
        print(f"{q:>8} {p_ours:8.2f} {p_k:9.2f} {t_ours:7.3f} {t_k:8.3f} {t_k / t_ours:7.2f}")
        rows.append({"method": f"diffjpeg q={q}", "peer": "kornia", "ours_s": t_ours, "peer_s": t_k,
                     "speedup": t_k / t_ours, "ours_psnr_to_real": p_ours, "peer_psnr_to_real": p_k})
    print(f"\n{'kernel':>6} {'unfold s':>8} {'kornia s':>8} {'kornia ×':>8} {'max|diff|':>9}")
    for k in (3, 5, 11):
        t_ours = best(lambda: unfold_median(x, k))
        t_k = best(lambda: kornia.filters.median_blur(x, k, border_type="reflect"))
        diff = float((unfold_median(x, k) - kornia.filters.median_blur(x, k, border_type="reflect")).abs().max())
        print(f"{k:>6} {t_ours:8.3f} {t_k:8.3f} {t_ours / t_k:8.2f} {diff:9.3f}")
        rows.append({"method": f"median k={k}", "peer": "unfold (the study's)", "ours_s": t_k, "peer_s": t_ours,
                     "speedup": t_ours / t_k, "max_abs_diff": diff})
    return {"name": "defenses", "rows": rows}


if __name__ == "__main__":
    main()
