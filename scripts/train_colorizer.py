"""Train the ``cadv`` colouriser (seeded, one CPU thread, ≈ 2 min of CPU) into src/iqaguard/weights.

Why: cAdv steers a user-guided colourisation network (Zhang et al., "Real-Time User-Guided Image
Colorization with Learned Deep Priors", SIGGRAPH 2017); the study's ``cadv-colorization-model.pth``
is not redistributable offline, so iqaguard trains a small U-Net (``iqaguard.attacks.colorizer``)
on the 6 bundled photos and ships it (float16 safetensors).

Data: random 64×64 crops (random flips) of the bundled photos at 256 and 160 px, converted to
Lab with kornia. Hints as in Zhang et al. 2017: a geometric number of hint patches (keep adding
one with probability 1 − 1/8), each a square of side uniform in 1..9 px at a location drawn from
a normal centred on the crop (σ = side/4), whose hint value is the patch's mean ab and whose mask
is 1. Departure (so the network also learns to follow many hints, as the attack's optimised
dense hints ask of it): with probability 0.15 every pixel is a hint, and with probability 0.15
each pixel is a hint independently with a probability uniform in [0.01, 0.5].
Loss: Huber (δ = 1 ab unit) on ab, as Zhang et al.'s regression loss; Adam, cosine lr.

Usage::

    python scripts/train_colorizer.py                  # writes src/iqaguard/weights/cadv-colorizer.safetensors
    python scripts/train_colorizer.py --out /tmp/w --iters 50
"""
from __future__ import annotations

import argparse
import hashlib
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab

from iqaguard.attacks.colorizer import AB_NORM, L_CENT, L_NORM, MASK_CENT, WEIGHTS_FILE, ColorUNet
from iqaguard.data.bundled import CONTENTS, load_content

SIZES = (256, 160)
CROP = 64
BATCH = 12
ITERS = 400
LR = 2e-3
P_GEOM = 1 / 8                 # Zhang et al. 2017: p of the geometric number of hints
PATCH_SIDES = range(1, 10)     # Zhang et al. 2017: hint patch sides 1..9 px
P_ALL, P_RANDOM = 0.15, 0.15   # departure: dense-hint samples
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "src" / "iqaguard" / "weights"


def sample_hints(ab: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Hint ab (N,2,H,W, Lab units, 0 off-hint) and mask (N,1,H,W in {0,1}) for a batch."""
    n, _, h, w = ab.shape
    hints = torch.zeros_like(ab)
    mask = torch.zeros(n, 1, h, w)
    for i in range(n):
        u = rng.random()
        if u < P_ALL:
            mask[i] = 1.0
            hints[i] = ab[i]
            continue
        if u < P_ALL + P_RANDOM:
            keep = torch.from_numpy(rng.random((h, w)) < rng.uniform(0.01, 0.5)).float()
            mask[i, 0] = keep
            hints[i] = ab[i] * keep
            continue
        while rng.random() < 1 - P_GEOM:
            side = int(rng.choice(list(PATCH_SIDES)))
            y = int(np.clip(rng.normal((h - side + 1) / 2, (h - side + 1) / 4), 0, h - side))
            x = int(np.clip(rng.normal((w - side + 1) / 2, (w - side + 1) / 4), 0, w - side))
            hints[i, :, y:y + side, x:x + side] = ab[i, :, y:y + side, x:x + side].mean((1, 2), keepdim=True)
            mask[i, :, y:y + side, x:x + side] = 1.0
    return hints, mask


def train(out: Path = WEIGHTS_DIR, iters: int = ITERS, seed: int = 0, log=print) -> Path:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.set_num_threads(1)
    photos = [rgb_to_lab(load_content(c, s))[0] for c in CONTENTS for s in SIZES]
    net = ColorUNet()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / iters)))
    start, cpu = time.perf_counter(), time.process_time()
    for it in range(iters):
        crops = []
        for _ in range(BATCH):
            p = photos[rng.integers(len(photos))]
            y, x = rng.integers(p.shape[1] - CROP + 1), rng.integers(p.shape[2] - CROP + 1)
            c = p[:, y:y + CROP, x:x + CROP]
            if rng.random() < 0.5:
                c = c.flip(2)
            crops.append(c)
        lab = torch.stack(crops)
        hints, mask = sample_hints(lab[:, 1:], rng)
        pred = net((lab[:, :1] - L_CENT) / L_NORM, hints / AB_NORM, mask - MASK_CENT) * AB_NORM
        loss = F.huber_loss(pred, lab[:, 1:], delta=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if it % 50 == 0 or it == iters - 1:
            log(f"iter {it:4d}  huber {loss.item():.3f}  {time.perf_counter() - start:.0f}s")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    path = out / WEIGHTS_FILE
    save_file({k: v.detach().half().contiguous() for k, v in net.state_dict().items()}, str(path))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    log(f"trained {iters} iterations in {seconds:.0f} s wall, {cpu:.0f} s CPU, on one thread; wrote {path} "
        f"({path.stat().st_size / 1e6:.2f} MB), sha256 {sha}")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--iters", type=int, default=ITERS)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    train(args.out, args.iters, args.seed)


if __name__ == "__main__":
    main()
