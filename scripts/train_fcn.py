"""Train the ``fcn`` purifier (FCNet) and write ``src/iqaguard/weights/fcn_mse.safetensors``.

    .venv/bin/python scripts/train_fcn.py            # seed 0, CPU, a few minutes

Pairs (attacked, clean) come from iqaguard's own attacks against NIQE on bundled photos of the
*training contents* only (astronaut, coffee, rocket, motorcycle); chelsea and grace_hopper are
held out for the tests. Clean images: each training content pristine and with two distortions
(level 3); attacks: the quick suite's ``ifgsm:eps=4/255,alpha=0.25/255`` and ``pgd:norm=l2,eps=1.0``
and the study's default ``ifgsm`` (eps 10/255, α 1/255), each quantised to 8 bits as the runner
does. For diversity every batch also gets random ±eps sign noise (eps ∈ {1, 2, 4}/255, 8-bit)
on the clean crops (8/255 was tried and dropped: it made the net denoise so hard that it
raised the error on the training pairs themselves). Loss: MSE between ``clamp(net(x_adv), 0, 1)`` and the clean image, Adam.
Deterministic for a fixed seed on the same machine (single-threaded torch).
"""
from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import iqaguard as ig
from iqaguard.data.bundled import _distorted, load_content
from iqaguard.defenses.purification.fcn import FCNet
from iqaguard.images import quantize_8bit

TRAIN_CONTENTS = ["astronaut", "coffee", "rocket", "motorcycle"]
HELD_OUT = ["chelsea", "grace_hopper"]
DISTORTIONS = ["gaussian_blur", "jpeg", "white_noise", "contrast_change"]
ATTACKS = ["ifgsm:eps=4/255,alpha=0.25/255", "pgd:norm=l2,eps=1.0", "ifgsm"]
OUT = Path(__file__).resolve().parents[1] / "src" / "iqaguard" / "weights" / "fcn_mse.safetensors"


def clean_images(size: int) -> torch.Tensor:
    """Each training content pristine plus two distortions at level 3 (types rotate per content)."""
    from iqaguard.data.distortions import DISTORTIONS as ALL

    kinds = [d for d in DISTORTIONS if d in ALL]
    imgs = []
    for i, c in enumerate(TRAIN_CONTENTS):
        imgs.append(load_content(c, size))
        for j in range(2):
            imgs.append(_distorted(c, size, kinds[(i + j) % len(kinds)], 3))
    return torch.cat(imgs).clamp(0, 1)


def attacked_pairs(clean: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    metric = ig.create_metric("niqe")
    advs, refs = [], []
    for k, spec in enumerate(ATTACKS):
        attack = ig.create_attack(spec)
        torch.manual_seed(seed + k)
        adv = attack.quantize(attack(metric, clean).detach(), clean)
        advs.append(adv)
        refs.append(clean)
        print(f"  {spec}: RMSE {float(((adv - clean) ** 2).mean().sqrt()) * 255:.2f}/255", flush=True)
    return torch.cat(advs), torch.cat(refs)


def sign_noise(x: torch.Tensor, g: torch.Generator, levels: list[float]) -> torch.Tensor:
    """x ± eps (random sign per pixel), eps drawn per crop from ``levels`` (in 1/255), 8-bit."""
    table = torch.tensor(levels, dtype=x.dtype)
    eps = table[torch.randint(0, len(levels), (x.shape[0],), generator=g)] / 255
    s = torch.randint(0, 2, x.shape, generator=g, dtype=x.dtype) * 2 - 1
    return quantize_8bit((x + eps.view(-1, 1, 1, 1) * s).clamp(0, 1))


def crops(x: torch.Tensor, ref: torch.Tensor, n: int, size: int, g: torch.Generator):
    idx = torch.randint(0, x.shape[0], (n,), generator=g)
    h, w = x.shape[-2:]
    ys = torch.randint(0, h - size + 1, (n,), generator=g)
    xs = torch.randint(0, w - size + 1, (n,), generator=g)
    a = torch.stack([x[i, :, y:y + size, z:z + size] for i, y, z in zip(idx, ys, xs)])
    b = torch.stack([ref[i, :, y:y + size, z:z + size] for i, y, z in zip(idx, ys, xs)])
    return a, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--noise-eps", type=float, nargs="+", default=[1, 2, 4],
                    help="sign-noise amplitudes, in 1/255")
    ap.add_argument("--direct", action="store_true", help="the study's direct (non-residual) output form")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--cache", type=Path, default=None, help="reuse/save the attacked pairs here (.pt)")
    args = ap.parse_args()

    torch.set_num_threads(1)          # bit-reproducible CPU reductions
    torch.manual_seed(args.seed)
    t0 = time.time()
    clean = clean_images(args.size)
    print(f"{clean.shape[0]} clean training images ({', '.join(TRAIN_CONTENTS)}); attacking NIQE …", flush=True)
    if args.cache is not None and args.cache.is_file():
        adv, ref = torch.load(args.cache, weights_only=True)
    else:
        adv, ref = attacked_pairs(clean, args.seed)
        if args.cache is not None:
            torch.save((adv, ref), args.cache)
    print(f"pairs ready in {time.time() - t0:.0f} s", flush=True)

    torch.manual_seed(args.seed)      # init independent of whether the pairs came from the cache
    net = FCNet(residual=not args.direct)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    g = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps):
        a, b = crops(adv, ref, args.batch, args.crop, g)
        c, d = crops(clean, clean, args.batch // 2, args.crop, g)
        a = torch.cat([a, sign_noise(c, g, args.noise_eps)])
        b = torch.cat([b, d])
        loss = F.mse_loss(net(a).clamp(0, 1), b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            base = F.mse_loss(a, b)
            print(f"step {step:5d}  mse {float(loss.detach()):.3e}  (identity {float(base):.3e})", flush=True)

    with torch.no_grad():   # whole training images: purified vs identity
        mse_id = float(F.mse_loss(adv, ref))
        mse_net = float(F.mse_loss(net(adv).clamp(0, 1), ref))
    print(f"train pairs, full images: identity MSE {mse_id:.3e}, fcn MSE {mse_net:.3e}")

    from safetensors.torch import save_file

    args.out.parent.mkdir(parents=True, exist_ok=True)
    # no metadata: safetensors writes a metadata map in arbitrary order, which would change the SHA-256
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(args.out))
    sha = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) sha256 {sha}; total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
