"""Train the learned NR metrics ``iqg-cnn`` and ``iqg-resnet`` (seeded, CPU, minutes).

Why: the package ships small learned metrics whose weights anyone can rebuild. The idea is
BIECON's (Kim & Lee 2017): a no-reference model learns what a full-reference metric sees.
Data: the bundled suite (6 photos × 21 distortion types × 5 levels at 256 px, plus the 6
pristine photos); target: MS-SSIM (RGB, the package's ``ms_ssim``) of each image vs its pristine
original, in dB (−10·log10(1 − MS-SSIM), clipped to [0, 40]) ×2.5, i.e. in [0, 100]. Training
sees random 64-px crops (random flips) labelled with their image's target, like CNNIQA's
patches; Adam, cosine learning rate, MSE.

Usage::

    python scripts/train_learned_metrics.py                   # both, all photos, into src/iqaguard/weights
    python scripts/train_learned_metrics.py --lopo            # also leave-one-photo-out SROCC
    python scripts/train_learned_metrics.py --names iqg-cnn --out /tmp/w

Importable: ``train_learned_metric(name, out=..., seed=0, epochs=None, exclude=())``.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from iqaguard.data.bundled import CONTENTS, load_content
from iqaguard.data.distortions import DISTORTIONS
from iqaguard.metrics.learned import ARCHS, build_net
from iqaguard.seeds import derive_seed

SIZE = 256
CROP = 64
BATCH = 32
EPOCHS = {"iqg-cnn": 30, "iqg-resnet": 30}
LR = {"iqg-cnn": 2e-3, "iqg-resnet": 1e-3}
DB_CLIP = 40.0
PRISTINE_REPEAT = 5          # the pristine photo counts like one more group of 5 images
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "src" / "iqaguard" / "weights"


def target_from_msssim(ms: torch.Tensor) -> torch.Tensor:
    """MS-SSIM → quality in [0, 100]: dB of (1 − MS-SSIM), clipped to [0, 40] dB, ×2.5."""
    db = -10.0 * torch.log10((1.0 - ms.double()).clamp_min(10 ** (-DB_CLIP / 10)))
    return (db.clamp(0.0, DB_CLIP) * (100.0 / DB_CLIP)).float()


def build_dataset(cache: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Bundled images (uint8 N×3×256×256), targets (N,), content, type and level per image.

    Uses the same per-group distortion seeds as the ``bundled`` dataset, so the images are the
    suite's images. ``cache``: a .pt file reused when present (generation takes ~1–2 min).
    """
    if cache and Path(cache).is_file():
        return torch.load(cache, weights_only=True)
    from iqaguard.data.bundled import default_types
    from iqaguard.metrics.ssim import MSSSIM

    t0 = time.time()
    msssim = MSSSIM(channel="rgb")
    images, targets, content, dtype, level = [], [], [], [], []
    for ci, c in enumerate(CONTENTS):
        ref = load_content(c, SIZE)
        group = [ref]
        meta = [("pristine", 0)]
        for d in default_types():
            seed = derive_seed("bundled", c, d)
            for lv in range(1, 6):
                group.append(DISTORTIONS[d](ref, lv, seed))
                meta.append((d, lv))
        x = torch.cat(group)
        with torch.no_grad():
            ms = msssim(x, ref.expand_as(x))
        t = target_from_msssim(ms)
        t[0] = 100.0                                  # pristine: MS-SSIM = 1 → the clip
        images.append(torch.round(x * 255).to(torch.uint8))
        targets.append(t)
        content += [ci] * len(meta)
        dtype += [m[0] for m in meta]
        level += [m[1] for m in meta]
        log(f"  data: {c} done ({time.time() - t0:.0f} s)")
    types = sorted(set(dtype))
    data = {"images": torch.cat(images), "targets": torch.cat(targets),
            "content": torch.tensor(content), "level": torch.tensor(level),
            "dtype": torch.tensor([types.index(d) for d in dtype]), "types": types,
            "contents": list(CONTENTS)}
    if cache:
        torch.save(data, cache)
    return data


def _partners(data: dict, items: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """For each item, another image of the same photo and distortion type (or its pristine
    original; for a pristine item, any distorted version of it), drawn at random."""
    c, d, lv = data["content"], data["dtype"], data["level"]
    out = []
    for i in items.tolist():
        if lv[i] == 0:
            pool = torch.nonzero((c == c[i]) & (lv > 0)).flatten()
        else:
            pool = torch.nonzero((c == c[i]) & (((d == d[i]) & (lv != lv[i])) | (lv == 0))).flatten()
        out.append(int(pool[torch.randint(len(pool), (1,), generator=gen)]))
    return torch.tensor(out)


def _batches(n_items: int, epochs: int, gen: torch.Generator):
    """BATCH // 2 anchors per step (each paired with a partner): an epoch shows n_items images."""
    half = BATCH // 2
    for _ in range(epochs):
        perm = torch.randperm(n_items, generator=gen)
        for k in range(n_items // BATCH):
            yield perm[k * half:(k + 1) * half]


def _crops(images: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random CROP×CROP windows with random horizontal flips, as float in [0,1]. The second half
    of ``idx`` (the partners) gets the same windows and flips as the first half (the anchors)."""
    n = len(idx) // 2
    ys = torch.randint(0, SIZE - CROP + 1, (n,), generator=gen).repeat(2)
    xs = torch.randint(0, SIZE - CROP + 1, (n,), generator=gen).repeat(2)
    flip = (torch.rand(n, generator=gen) < 0.5).repeat(2)
    out = torch.stack([images[i, :, y:y + CROP, x:x + CROP] for i, y, x in zip(idx.tolist(), ys.tolist(), xs.tolist())])
    out = out.float() / 255.0
    return torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)


def fit(name: str, data: dict, *, seed: int = 0, epochs: int | None = None, exclude: Sequence[str] = (),
        log: Callable[[str], None] = print) -> torch.nn.Module:
    """Train a fresh network on every bundled photo except ``exclude``; returns it in eval mode."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(derive_seed("iqg-train", name, seed))
    keep_c = [i for i, c in enumerate(data["contents"]) if c not in exclude]
    sel = torch.isin(data["content"], torch.tensor(keep_c))
    pristine = sel & (data["level"] == 0)
    index = torch.cat([torch.nonzero(sel & (data["level"] > 0)).flatten()]
                      + [torch.nonzero(pristine).flatten()] * PRISTINE_REPEAT)
    images, targets = data["images"], data["targets"]
    net = build_net(name).train()
    with torch.no_grad():                       # start at the mean target: faster, stabler start
        last = net.out
        last.bias.fill_(float(targets[index].mean()))
    epochs = EPOCHS[name] if epochs is None else int(epochs)
    steps = epochs * (len(index) // BATCH)
    opt = torch.optim.AdamW(net.parameters(), lr=LR[name], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR[name], total_steps=steps, pct_start=0.1)
    t0, running = time.time(), 0.0
    for step, b in enumerate(_batches(len(index), epochs, gen)):
        anchors = index[b]
        idx = torch.cat([anchors, _partners(data, anchors, gen)])
        pred, t = net(_crops(images, idx, gen)), targets[idx]
        half = len(anchors)
        # absolute target + its difference between two versions of the same crop: the second term
        # is free of the photo's own content, i.e. what the within-group ranking needs
        loss = (F.mse_loss(pred, t) + F.mse_loss(pred[:half] - pred[half:], t[:half] - t[half:])) / 100.0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"  {name} step {step + 1}/{steps} loss {running:.3f} ({time.time() - t0:.0f} s)")
    return net.eval()


def srocc_vs_level(net: torch.nn.Module, data: dict, contents: Sequence[str]) -> float:
    """SROCC(score, −level) within each (content, type) group, averaged (groups are equal size)."""
    from scipy.stats import spearmanr

    cid = [data["contents"].index(c) for c in contents]
    sel = torch.isin(data["content"], torch.tensor(cid)) & (data["level"] > 0)
    idx = torch.nonzero(sel).flatten()
    with torch.no_grad():
        s = torch.cat([net(data["images"][idx[i:i + 16]].float() / 255) for i in range(0, len(idx), 16)])
    groups: dict[tuple[int, int], tuple[list, list]] = {}
    for k, i in enumerate(idx.tolist()):
        g = groups.setdefault((int(data["content"][i]), int(data["dtype"][i])), ([], []))
        g[0].append(float(s[k]))
        g[1].append(-int(data["level"][i]))
    rs = [spearmanr(a, b).correlation for a, b in groups.values()]
    return float(np.nanmean(rs))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train_learned_metric(name: str, out: str | Path | None = None, *, seed: int = 0, epochs: int | None = None,
                         exclude: Sequence[str] = (), cache: str | Path | None = None,
                         log: Callable[[str], None] = print) -> dict:
    """Train ``name`` ('iqg-cnn' | 'iqg-resnet') and save ``<out>/<name>.safetensors``.

    ``out``: a folder (default: the package's weights folder). Returns a dict with ``path``,
    ``sha256``, ``seconds``, ``params``, ``epochs``, ``seed`` and ``train_srocc`` (SROCC vs level on
    the training photos). The shipped weights are ``train_learned_metric(name)`` with defaults.
    """
    if name not in ARCHS:
        raise ValueError(f"unknown learned metric {name!r}; valid: {', '.join(ARCHS)}")
    from safetensors.torch import save_file

    data = build_dataset(cache, log)
    t0 = time.time()
    net = fit(name, data, seed=seed, epochs=epochs, exclude=exclude, log=log)
    seconds = time.time() - t0
    folder = Path(out) if out else WEIGHTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    # float16 halves the file; the metric loads it into float32 parameters (scores change < 1e-2)
    state = {k: (v.half() if v.is_floating_point() else v).detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata={"name": name, "seed": str(seed), "target": "ms_ssim rgb dB x2.5",
                                          "exclude": ",".join(exclude)})
    train_contents = [c for c in data["contents"] if c not in exclude]
    return {"name": name, "path": str(path), "sha256": sha256_of(path), "seconds": round(seconds, 1),
            "params": sum(p.numel() for p in net.parameters()),
            "epochs": EPOCHS[name] if epochs is None else int(epochs), "seed": seed,
            "train_srocc": srocc_vs_level(net, data, train_contents)}


def leave_one_photo_out(name: str, *, seed: int = 0, epochs: int | None = None, cache: str | Path | None = None,
                        log: Callable[[str], None] = print) -> dict[str, float]:
    """SROCC vs level on each held-out photo of a model trained on the other five."""
    data = build_dataset(cache, log)
    res = {}
    for c in data["contents"]:
        net = fit(name, data, seed=seed, epochs=epochs, exclude=[c], log=lambda m: None)
        res[c] = srocc_vs_level(net, data, [c])
        log(f"  LOPO {name} held out {c}: SROCC {res[c]:.3f}")
    res["mean"] = float(np.mean([res[c] for c in data["contents"]]))
    return res


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", default=",".join(ARCHS))
    ap.add_argument("--out", default=None, help="weights folder (default: src/iqaguard/weights)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lopo", action="store_true", help="also run leave-one-photo-out")
    ap.add_argument("--lopo-epochs", type=int, default=None)
    ap.add_argument("--no-final", action="store_true", help="only the leave-one-photo-out runs")
    ap.add_argument("--cache", default=None, help="dataset cache file (.pt)")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    for name in [n.strip() for n in a.names.split(",") if n.strip()]:
        if not a.no_final:
            info = train_learned_metric(name, a.out, seed=a.seed, epochs=a.epochs, cache=a.cache)
            print(f"FINAL {info}", flush=True)
        if a.lopo:
            t0 = time.time()
            res = leave_one_photo_out(name, seed=a.seed, epochs=a.lopo_epochs, cache=a.cache)
            print(f"LOPO {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items())
                  + f" ({time.time() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
