"""Train the learned NR metrics ``iqg-cnn`` and ``iqg-resnet`` on content disjoint from the bundled suite.

Why: the package ships small learned metrics whose weights anyone can rebuild, and the bundled
suite (six photos from scikit-image and matplotlib) is the default evaluation dataset, so the
training content must not include those photos. The idea is BIECON's (Kim & Lee 2017): a
no-reference model learns what a full-reference metric sees.

Content (offline, seeded; never the bundled photos, never ``iqaguard.data.bundled``):

- the *other* photographs in the installed scikit-image (``SOURCES``), cropped at several scales
  (crop sides from the usable area's short side down to 256 px in steps of √2, each resized to
  256 px with Lanczos, random flip/rotation); greyscale photos get a random smooth Lab chroma
  field (pseudo-colour) so colour distortions have something to act on;
- procedural dead-leaves images (Lee, Mumford & Huang, IJCV 2001; Cao, Guichard & Hornung,
  SPIE 2010): occluding disks with radii ∝ r⁻³, Lab colours, per-leaf shading and 1/f texture,
  rendered at 2× and downsampled.

Distortions: the bundled suite's own KADID-style generator (``iqaguard.data.distortions``) on the
``TRAIN_TYPES``; ``HELD_OUT_TYPES`` (one or two per KADID family) are never used in training so
the accuracy on them measures generalisation to unseen distortions. Each pristine image gets
``TYPES_PER_IMAGE`` types drawn at random, 5 levels each. Target: MS-SSIM (RGB, the package's
``ms_ssim``) vs the pristine image in dB, −10·log10(1 − MS-SSIM) clipped to [0, 40], ×2.5 → [0, 100]
(pristine = 100). Training: random crops (iqg-cnn; whole images for iqg-resnet) with flips, labelled with their
image's target, paired with the same crop of another level of the same group; loss = MSE(score) + MSE(pair difference); AdamW,
one-cycle LR, a fixed number of steps (deterministic for a given torch build and thread count).

Accuracy on the bundled suite is measured by ``scripts/evaluate_learned_metrics.py`` (a separate
script: this one never reads the evaluation photos, ``tests/scripts/test_train_learned_metrics.py``
asserts it).

Usage::

    python scripts/train_learned_metrics.py --cache /tmp/iqg-train.pt   # both, into src/iqaguard/weights
    python scripts/train_learned_metrics.py --names iqg-cnn --out /tmp/w --steps 500

Importable: ``build_dataset(...)``, ``train_learned_metric(name, out=..., seed=0, steps=None, data=None)``.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from iqaguard.data.distortions import DISTORTIONS
from iqaguard.metrics.learned import ARCHS, build_net
from iqaguard.seeds import derive_seed

SIZE = 256
BATCH = {"iqg-cnn": 32, "iqg-resnet": 8}
# iqg-resnet pools globally: it trains on whole 256-px images, so its pooling sees at training
# time what it sees at test time (128-px crops at lr 1e-3: held-out SROCC 0.576; whole images at
# lr 2e-3: 0.762, docs/methods/learned_metrics.md)
CROP = {"iqg-cnn": 64, "iqg-resnet": 256}
STEPS = {"iqg-cnn": 2500, "iqg-resnet": 2000}
LR = {"iqg-cnn": 2e-3, "iqg-resnet": 2e-3}
DB_CLIP = 40.0
PRISTINE_REPEAT = 5          # the pristine image counts like one more group of 5 images
TYPES_PER_IMAGE = 6
N_LEAVES = 48                # dead-leaves images
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "src" / "iqaguard" / "weights"

# Distortion types never shown in training (KADID families: blur, noise, compression, colour,
# brightness, spatial); the evaluation reports them apart as "unseen types".
HELD_OUT_TYPES = ("motion_blur", "multiplicative_noise", "jpeg2000", "color_diffusion", "mean_shift",
                  "non_eccentricity_patch")
TRAIN_TYPES = tuple(t for t in DISTORTIONS if t not in HELD_OUT_TYPES)

# Photographs from the installed scikit-image used for training: file -> usable box (left, top,
# right, bottom; None = whole image). Left out on purpose: the bundled suite's photos (astronaut,
# chelsea, coffee, rocket, motorcycle_left, grace_hopper) and motorcycle_right.png (the other
# stereo view of the bundled motorcycle scene); non-photographs (text, page, logos, charts,
# chessboards, the colour wheel) and already-blurred images (cell, clock_motion).
SOURCES: dict[str, tuple[int, int, int, int] | None] = {
    "ihc.png": None,                       # immunohistochemistry micrograph, colour
    "retina.jpg": (206, 206, 1206, 1206),  # fundus photo, colour; the square inside the disc
    "hubble_deep_field.jpg": None,         # Hubble deep field, colour
    "camera.png": None,                    # cameraman, grey
    "moon.png": None,                      # lunar surface, grey
    "grass.png": None,                     # texture, grey
    "gravel.png": None,                    # texture, grey
    "brick.png": None,                     # texture, grey
    "coins.png": None,                     # coins, grey
}


def source_path(file: str) -> Path:
    """The file inside the installed scikit-image's data folder (no fetcher, no network)."""
    import skimage.data

    return Path(skimage.data.__file__).parent / file


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    """H×W×3 float in [0,1] → 1×3×H×W float32 on the 8-bit grid."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]
    return torch.round(t.clamp(0, 1) * 255) / 255


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """H×W×3 Lab (L in [0,100]) → H×W×3 sRGB in [0,1] (kornia, clipped)."""
    from kornia.color import lab_to_rgb

    t = torch.from_numpy(np.ascontiguousarray(lab, dtype=np.float32)).permute(2, 0, 1)[None]
    return lab_to_rgb(t, clip=True)[0].permute(1, 2, 0).numpy()


def _smooth_field(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """A smooth random n×n field: cells×cells Gaussian values upsampled bicubically, unit scale."""
    low = rng.standard_normal((cells, cells)).astype(np.float32)
    t = torch.from_numpy(low)[None, None]
    return F.interpolate(t, size=(n, n), mode="bicubic", align_corners=False)[0, 0].numpy()


def _pink_noise(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """n×n noise with power spectrum ∝ 1/f^beta, zero mean, unit standard deviation."""
    f = np.sqrt(np.fft.fftfreq(n)[:, None] ** 2 + np.fft.fftfreq(n)[None, :] ** 2)
    f[0, 0] = 1.0
    spec = np.fft.fft2(rng.standard_normal((n, n))) / f ** (beta / 2)
    spec[0, 0] = 0
    x = np.real(np.fft.ifft2(spec))
    return (x / (x.std() + 1e-12)).astype(np.float32)


def pseudo_colour(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grey H×W in [0,1] → RGB: L* from the grey level, a*/b* a smooth random field plus a tint."""
    n = gray.shape[0]
    amp = rng.uniform(3, 15)
    a = rng.normal(0, 8) + amp * _smooth_field(rng, n, int(rng.integers(2, 5)))
    b = rng.normal(0, 8) + amp * _smooth_field(rng, n, int(rng.integers(2, 5)))
    return _lab_to_rgb(np.stack([100 * gray, a, b], -1))


def dead_leaves(seed: int, size: int = SIZE, ss: int = 2) -> torch.Tensor:
    """A colour dead-leaves image (Lee et al. 2001): disks drawn front to back, radii ∝ r⁻³ on
    [3–6, size/4–size/2] px at the output scale; each leaf a Lab colour with a linear shading ramp and a
    per-leaf amount of a shared 1/f texture; rendered at ``ss``× and Lanczos-downsampled."""
    rng = np.random.default_rng(seed)
    n = size * ss
    rmin, rmax = rng.uniform(3, 6) * ss, rng.uniform(0.25, 0.5) * n
    chroma = rng.uniform(4, 20)
    lab = np.zeros((n, n, 3), np.float32)
    covered = np.zeros((n, n), bool)
    texture = _pink_noise(rng, n, rng.uniform(1.0, 2.0))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    for _ in range(40000):
        u = rng.uniform()
        r = (rmin ** -2 - u * (rmin ** -2 - rmax ** -2)) ** -0.5
        cy, cx = rng.uniform(-r, n + r, 2)
        y0, y1 = max(0, int(cy - r)), min(n, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r)), min(n, int(cx + r) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        m = (dy * dy + dx * dx <= r * r) & ~covered[y0:y1, x0:x1]
        if not m.any():
            continue
        g = rng.normal(0, 15, 2) / max(r, 1.0)                    # shading ramp, L* per pixel
        tex = rng.uniform(0, 12) if rng.uniform() < 0.6 else 0.0    # texture amplitude, L* units
        L = rng.uniform(8, 95) + g[0] * dy[m] + g[1] * dx[m] + tex * texture[y0:y1, x0:x1][m]
        sub = lab[y0:y1, x0:x1]
        sub[m] = np.stack([L, np.full_like(L, rng.normal(0, chroma)), np.full_like(L, rng.normal(0, chroma))], -1)
        covered[y0:y1, x0:x1] |= m
        if covered.all():
            break
    lab[..., 0] = lab[..., 0].clip(0, 100)
    rgb = _lab_to_rgb(lab)
    img = Image.fromarray(np.round(rgb * 255).astype(np.uint8)).resize((size, size), Image.Resampling.LANCZOS)
    return _to_tensor(np.asarray(img) / 255.0)


def photo_crops(file: str, seed: int, size: int = SIZE, per_scale: int = 2) -> list[tuple[str, torch.Tensor]]:
    """Square crops of one photo at sides short·2^(−k/2) (k = 0, 1, … while ≥ ``size``), ``per_scale``
    random crops per side (one at full scale), each Lanczos-resized to ``size`` px, randomly
    flipped/rotated by a multiple of 90°; greyscale photos pseudo-coloured."""
    rng = np.random.default_rng(seed)
    with Image.open(source_path(file)) as im:
        box = SOURCES[file]
        im = im.crop(box) if box else im
        grey = im.mode in ("L", "I", "I;16", "1")
        im = im.convert("L" if grey else "RGB")
        w, h = im.size
        out = []
        short = min(w, h)
        k = 0
        while short * 2 ** (-k / 2) >= size - 1:
            side = int(round(short * 2 ** (-k / 2)))
            for j in range(1 if k == 0 else per_scale):
                x0 = int(rng.integers(0, w - side + 1))
                y0 = int(rng.integers(0, h - side + 1))
                c = im.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.Resampling.LANCZOS)
                a = np.asarray(c, dtype=np.float32) / 255.0
                a = np.rot90(a, int(rng.integers(4)))
                if rng.uniform() < 0.5:
                    a = a[:, ::-1]
                a = pseudo_colour(np.ascontiguousarray(a), rng) if grey else a
                out.append((f"{Path(file).stem}@{side}#{j}", _to_tensor(a)))
            k += 1
    return out


def pristine_images(seed: int = 0, n_leaves: int = N_LEAVES, sources: Sequence[str] | None = None,
                    log: Callable[[str], None] = print) -> list[tuple[str, torch.Tensor]]:
    """All pristine training images (name, 1×3×SIZE×SIZE): photo crops, then dead leaves."""
    out = []
    for file in (SOURCES if sources is None else sources):
        out += photo_crops(file, derive_seed("iqg-train-crops", file, seed))
    log(f"  data: {len(out)} photo crops from {len(SOURCES if sources is None else sources)} photos")
    for i in range(n_leaves):
        out.append((f"dead_leaves#{i}", dead_leaves(derive_seed("iqg-train-leaves", i, seed))))
    log(f"  data: {n_leaves} dead-leaves images")
    return out


def target_from_msssim(ms: torch.Tensor) -> torch.Tensor:
    """MS-SSIM → quality in [0, 100]: dB of (1 − MS-SSIM), clipped to [0, 40] dB, ×2.5."""
    db = -10.0 * torch.log10((1.0 - ms.double()).clamp_min(10 ** (-DB_CLIP / 10)))
    return (db.clamp(0.0, DB_CLIP) * (100.0 / DB_CLIP)).float()


def build_dataset(cache: str | Path | None = None, *, seed: int = 0, n_leaves: int = N_LEAVES,
                  sources: Sequence[str] | None = None, types_per_image: int = TYPES_PER_IMAGE,
                  log: Callable[[str], None] = print) -> dict:
    """Training images (uint8 N×3×256×256), targets (N,), pristine index, type and level per image.

    ``cache``: a .pt file reused when present (generation takes a few minutes).
    """
    if cache and Path(cache).is_file():
        return torch.load(cache, weights_only=True)
    from iqaguard.metrics.ssim import MSSSIM

    t0 = time.time()
    msssim = MSSSIM(channel="rgb")
    pristine = pristine_images(seed, n_leaves, sources, log)
    types = list(TRAIN_TYPES)
    images, targets, content, dtype, level = [], [], [], [], []
    for ci, (name, ref) in enumerate(pristine):
        rng = np.random.default_rng(derive_seed("iqg-train-types", name, seed))
        chosen = sorted(rng.choice(len(types), size=min(types_per_image, len(types)), replace=False).tolist())
        group, meta = [ref], [(-1, 0)]
        for d in chosen:
            s = derive_seed("iqg-train", name, types[d], seed)
            for lv in range(1, 6):
                group.append(DISTORTIONS[types[d]](ref, lv, s))
                meta.append((d, lv))
        x = torch.cat(group)
        with torch.no_grad():
            t = target_from_msssim(msssim(x, ref.expand_as(x)))
        t[0] = 100.0                                  # pristine: MS-SSIM = 1 → the clip
        images.append(torch.round(x * 255).to(torch.uint8))
        targets.append(t)
        content += [ci] * len(meta)
        dtype += [m[0] for m in meta]
        level += [m[1] for m in meta]
        if (ci + 1) % 10 == 0:
            log(f"  data: {ci + 1}/{len(pristine)} pristine images distorted ({time.time() - t0:.0f} s)")
    data = {"images": torch.cat(images), "targets": torch.cat(targets), "content": torch.tensor(content),
            "level": torch.tensor(level), "dtype": torch.tensor(dtype), "types": types,
            "contents": [n for n, _ in pristine]}
    log(f"  data: {len(data['images'])} images ({time.time() - t0:.0f} s)")
    if cache:
        torch.save(data, cache)
    return data


def _partners(data: dict, items: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """For each item, another image of the same pristine image and distortion type (or the pristine
    itself; for a pristine item, any distorted version of it), drawn at random."""
    c, d, lv = data["content"], data["dtype"], data["level"]
    out = []
    for i in items.tolist():
        if lv[i] == 0:
            pool = torch.nonzero((c == c[i]) & (lv > 0)).flatten()
        else:
            pool = torch.nonzero((c == c[i]) & (((d == d[i]) & (lv != lv[i])) | (lv == 0))).flatten()
        out.append(int(pool[torch.randint(len(pool), (1,), generator=gen)]))
    return torch.tensor(out)


def _crops(images: torch.Tensor, idx: torch.Tensor, crop: int, gen: torch.Generator) -> torch.Tensor:
    """Random crop×crop windows with random horizontal flips, as float in [0,1]. The second half
    of ``idx`` (the partners) gets the same windows and flips as the first half (the anchors)."""
    n = len(idx) // 2
    size = images.shape[-1]
    ys = torch.randint(0, size - crop + 1, (n,), generator=gen).repeat(2)
    xs = torch.randint(0, size - crop + 1, (n,), generator=gen).repeat(2)
    flip = (torch.rand(n, generator=gen) < 0.5).repeat(2)
    out = torch.stack([images[i, :, y:y + crop, x:x + crop] for i, y, x in zip(idx.tolist(), ys.tolist(), xs.tolist())])
    out = out.float() / 255.0
    return torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)


def fit(name: str, data: dict, *, seed: int = 0, steps: int | None = None,
        log: Callable[[str], None] = print) -> torch.nn.Module:
    """Train a fresh network on ``data``; returns it in eval mode."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(derive_seed("iqg-train", name, seed))
    index = torch.cat([torch.nonzero(data["level"] > 0).flatten()]
                      + [torch.nonzero(data["level"] == 0).flatten()] * PRISTINE_REPEAT)
    images, targets = data["images"], data["targets"]
    net = build_net(name).train()
    with torch.no_grad():                       # start at the mean target: faster, stabler start
        net.out.bias.fill_(float(targets[index].mean()))
    steps = STEPS[name] if steps is None else int(steps)
    half = BATCH[name] // 2
    opt = torch.optim.AdamW(net.parameters(), lr=LR[name], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR[name], total_steps=steps, pct_start=0.1)
    t0, running, perm, pos = time.time(), 0.0, torch.randperm(len(index), generator=gen), 0
    for step in range(steps):
        if pos + half > len(perm):
            perm, pos = torch.randperm(len(index), generator=gen), 0
        anchors = index[perm[pos:pos + half]]
        pos += half
        idx = torch.cat([anchors, _partners(data, anchors, gen)])
        pred, t = net(_crops(images, idx, CROP[name], gen)), targets[idx]
        # absolute target + its difference between two versions of the same crop: the second term
        # is free of the image's own content, i.e. what the within-group ranking needs
        loss = (F.mse_loss(pred, t) + F.mse_loss(pred[:half] - pred[half:], t[:half] - t[half:])) / 100.0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            log(f"  {name} step {step + 1}/{steps} loss {running:.3f} ({time.time() - t0:.0f} s)")
    return net.eval()


def srocc_vs_level(net: torch.nn.Module, data: dict) -> float:
    """SROCC(score, −level) within each (image, type) group of ``data``, averaged."""
    from scipy.stats import spearmanr

    idx = torch.nonzero(data["level"] > 0).flatten()
    with torch.no_grad():
        s = torch.cat([net(data["images"][idx[i:i + 16]].float() / 255) for i in range(0, len(idx), 16)])
    groups: dict[tuple[int, int], tuple[list, list]] = {}
    for k, i in enumerate(idx.tolist()):
        g = groups.setdefault((int(data["content"][i]), int(data["dtype"][i])), ([], []))
        g[0].append(float(s[k]))
        g[1].append(-int(data["level"][i]))
    return float(np.nanmean([spearmanr(a, b).correlation for a, b in groups.values()]))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train_learned_metric(name: str, out: str | Path | None = None, *, seed: int = 0, steps: int | None = None,
                         cache: str | Path | None = None, data: dict | None = None,
                         log: Callable[[str], None] = print) -> dict:
    """Train ``name`` ('iqg-cnn' | 'iqg-resnet') and save ``<out>/<name>.safetensors``.

    ``out``: a folder (default: the package's weights folder). Returns a dict with ``path``,
    ``sha256``, ``seconds`` (training only), ``params``, ``steps``, ``seed`` and ``train_srocc``
    (SROCC vs level on the training data). The shipped weights are ``train_learned_metric(name)``.
    """
    if name not in ARCHS:
        raise ValueError(f"unknown learned metric {name!r}; valid: {', '.join(ARCHS)}")
    from safetensors.torch import save_file

    data = build_dataset(cache, seed=seed, log=log) if data is None else data
    t0 = time.time()
    net = fit(name, data, seed=seed, steps=steps, log=log)
    seconds = time.time() - t0
    folder = Path(out) if out else WEIGHTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    # float16 halves the file; the metric loads it into float32 parameters
    state = {k: (v.half() if v.is_floating_point() else v).detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata={"name": name, "seed": str(seed), "target": "ms_ssim rgb dB x2.5",
                                          "content": "skimage non-bundled photos + dead leaves",
                                          "held_out_types": ",".join(HELD_OUT_TYPES)})
    return {"name": name, "path": str(path), "sha256": sha256_of(path), "seconds": round(seconds, 1),
            "params": sum(p.numel() for p in net.parameters()), "steps": STEPS[name] if steps is None else int(steps),
            "seed": seed, "images": len(data["images"]), "pristine": len(data["contents"]),
            "train_srocc": srocc_vs_level(net, data)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", default=",".join(ARCHS))
    ap.add_argument("--out", default=None, help="weights folder (default: src/iqaguard/weights)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="optimisation steps (default: STEPS per model)")
    ap.add_argument("--cache", default=None, help="dataset cache file (.pt)")
    ap.add_argument("--data-only", action="store_true", help="build (and cache) the dataset, then stop")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = build_dataset(a.cache, seed=a.seed)
    if a.data_only:
        return 0
    for name in [n.strip() for n in a.names.split(",") if n.strip()]:
        info = train_learned_metric(name, a.out, seed=a.seed, steps=a.steps, data=data)
        print(f"FINAL {info}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
