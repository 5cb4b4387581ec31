"""Train the small diffusion model that the tests of ``ddrs``/``densepure`` run through ``iqaguard run``
and write ``tests/fixtures/diffusion-tiny.safetensors``.

    .venv/bin/python scripts/train_tiny_diffusion.py          # seed 0, one CPU thread

It is *not* a substitute for the published 256×256 unconditional guided-diffusion checkpoint
(Dhariwal & Nichol 2021) that ``ddrs``/``densepure`` load by default: it is a 0.78 M-parameter ADM
UNet (the package's ``GuidedUNet``: 32 channels, two levels, one residual block each, attention
only in the middle block, fixed variance: 3 output channels; float16 on disk) that makes the real
code path denoise real images, so the certified pipeline can be run end to end on CPU without the
2 GB file. Never use it for published numbers.

ε-prediction (Ho et al. 2020, the "simple" loss) on the DDPM linear schedule (1000 steps), with t
drawn uniformly from [0, t*] only, where t* is the timestep whose noise matches the smoothing σ
(``matching_timestep``): ``ddrs`` calls the model at t* once and ``densepure`` runs the respaced
reverse chain from t* down to 0, so no other timestep is ever used. Content is that of
``scripts/train_dncnn.py`` (disjoint from the bundled evaluation photos). Adam, lr 1e-3 with
cosine decay, 600 steps of 8 random 32×32 crops with flips. Reports the one-step (ddrs) and the
2-step (densepure's default) denoising PSNR on the six bundled photos at 128 px.
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

from iqaguard.data.bundled import CONTENTS, load_content
from iqaguard.defenses.certified.diffusion import DiffusionDenoiser, matching_timestep
from iqaguard.defenses.purification.diffpure import GuidedUNet, LinearSchedule, save_guided_unet
from train_dncnn import batch, psnr, training_images

CONFIG = dict(image_size=32, in_channels=3, model_channels=32, out_channels=3, num_res_blocks=1,
              attention_resolutions=[], channel_mult=[1, 2], num_heads=1, num_head_channels=32,
              use_scale_shift_norm=True, resblock_updown=True)
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "diffusion-tiny.safetensors"


@torch.no_grad()
def evaluate(model: GuidedUNet, sigma: float, size: int = 128) -> dict[str, float]:
    """Mean PSNR (dB) against the clean bundled photos: noisy, one-step, 2-step reverse."""
    model.eval()
    g = torch.Generator().manual_seed(0)
    out = {"noisy": [], "one-step": [], "2-step": []}
    for name in CONTENTS:
        x = load_content(name, size)
        z = x + sigma * torch.randn(x.shape, generator=g)
        out["noisy"].append(psnr(z.clamp(0, 1), x))
        out["one-step"].append(psnr(DiffusionDenoiser(model, sigma)(z, None), x))
        out["2-step"].append(psnr(DiffusionDenoiser(model, sigma, steps=2)(z, g), x))
    model.train()
    return {k: float(np.mean(v)) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sigma", type=float, default=0.12)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    imgs = training_images(args.seed)
    sched = LinearSchedule()
    t_star = matching_timestep(args.sigma, sched)
    abar = sched.alphas_cumprod.float()
    model = GuidedUNet(**CONFIG)
    print(f"{len(imgs)} training images; t* = {t_star}; "
          f"{sum(p.numel() for p in model.parameters())} parameters", flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        x0 = 2 * batch(imgs, g, args.patch, args.batch) - 1
        t = torch.randint(t_star + 1, (args.batch,), generator=g)
        a = abar[t].view(-1, 1, 1, 1)
        eps = torch.randn(x0.shape, generator=g)
        loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr.step()
        if step % 250 == 0 or step == args.steps:
            print(f"step {step}/{args.steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
    train_s = time.time() - t0
    res = evaluate(model, args.sigma)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_guided_unet(model.half().eval(), args.out)   # float16 on disk (half the bytes)
    sha = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"bundled photos, 128 px, sigma {args.sigma:.2f}: noisy {res['noisy']:.2f} dB, "
          f"one-step {res['one-step']:.2f} dB, 2-step {res['2-step']:.2f} dB")
    print(f"training time {train_s:.0f}s; wrote {args.out} ({args.out.stat().st_size} bytes) sha256 {sha}")


if __name__ == "__main__":
    main()
