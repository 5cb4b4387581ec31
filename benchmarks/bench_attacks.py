"""Per-iteration cost of the white-box attacks, in units of one forward+backward of the target metric.

An attack iteration needs exactly one metric forward+backward; everything else (sign, momentum,
projection) should be noise. For each target metric (iqg-cnn and niqe, batch 4 × 3×256×256) this
times each attack next to forward+backward passes, in the same run, and prints
``(attack seconds / gradient calls) / (forward+backward seconds)``. Target for the gradient family
(fgsm, ifgsm, mifgsm, amifgsm, pgd ℓ∞/ℓ2): < 1.2. amifgsm's figure includes its one NIQE forward
(the radius) spread over its steps. The perceptual attacks (Adam on the metric plus their own
terms: Korhonen's Sobel map, Zhang's SSIM) are shown for reference; their extra terms are part of
the method.

Run: ``python benchmarks/bench_attacks.py [--repeat 3 --steps 5 --threads N]`` (median over
``--repeat`` paired runs after one warm-up; each run times the attack between two forward+backward
passes, so load drift on a shared machine cancels in the ratio).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import iqaguard
from iqaguard.metrics.base import wrap_metric
from iqaguard.registry import ATTACKS

GRADIENT = [("fgsm", {}), ("ifgsm", {}), ("mifgsm", {}), ("amifgsm", {"K": 0.0573}),
            ("pgd", {"random_start": False}), ("pgd", {"norm": "l2", "eps": 0.5, "random_start": False})]
PERCEPTUAL = [("korhonen-et-al", {}), ("zhang-et-al", {})]


def timed(fn):
    """(wall seconds, process CPU seconds) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def paired_ratio(attack_fn, calls_fn, fb_fn, repeat):
    """Medians over repeats of (attack time / gradient calls) / (forward+backward time), wall and
    CPU. Each repeat times the attack between two forward+backward passes, so load drift on a
    shared machine cancels; the CPU-time ratio (process time, which excludes time spent waiting
    for a core) is the robust one when other jobs share the machine."""
    attack_fn(), fb_fn()  # warm-up
    wall, cpu, per_iter, fbs = [], [], [], []
    for _ in range(repeat):
        f1 = timed(fb_fn)
        a = timed(attack_fn)
        f2 = timed(fb_fn)
        calls = max(calls_fn(), 1)
        fw, fc = (f1[0] + f2[0]) / 2, (f1[1] + f2[1]) / 2
        wall.append(a[0] / calls / fw)
        cpu.append(a[1] / calls / fc)
        per_iter.append(a[0] / calls)
        fbs.append(fw)
    med = statistics.median
    return med(wall), med(cpu), med(per_iter), med(fbs)


def forward_backward(metric, x):
    xg = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(metric(xg).sum(), xg)
    return g


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5, help="iterations of the iterative attacks")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--metrics", default="iqg-cnn,niqe")
    ap.add_argument("--no-perceptual", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.rand(4, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    x = torch.round(x * 255) / 255
    attacks = [(n, kw, True) for n, kw in GRADIENT]
    attacks += [] if args.no_perceptual else [(n, kw, False) for n, kw in PERCEPTUAL]
    print(f"batch 4x3x256x256, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeat}, {args.steps} steps")
    # attack-side work alone: the same attacks on a near-free metric (mean of x², whose gradient
    # is a dense tensor like a real metric's), minus its forward+backward; this is what the
    # ratios above 1 are made of, free of metric-timing noise
    free = wrap_metric(lambda z: z.square().mean(dim=(1, 2, 3)), name="energy")
    print("-- attack-side overhead per iteration (near-free metric)")
    for name, kw, family in attacks[:len(GRADIENT)]:
        kw = dict(kw, **({} if name == "fgsm" else {"steps": args.steps}))
        if name == "amifgsm":
            continue  # its one extra cost, the NIQE radius, is a metric forward: see the ratios
        attack = ATTACKS.create(name, **kw)
        _, _, t_iter, t_fb = paired_ratio(lambda: attack(free, x), lambda: attack.stats.grad_calls,
                                          lambda: forward_backward(free, x), max(args.repeat, 5))
        label = name + ("" if not kw.get("norm") else f":norm={kw['norm']}")
        print(f"{label:22s} {(t_iter - t_fb) * 1e3:8.2f} ms/iter")
    worst = 0.0
    for mname in args.metrics.split(","):
        metric = iqaguard.create_metric(mname)
        metric.eval()
        print(f"-- {mname}")
        for name, kw, family in attacks:
            kw = dict(kw)
            if name != "fgsm":
                kw["steps"] = args.steps
            attack = ATTACKS.create(name, **kw)
            ratio, cpu_ratio, t_iter, t_fb = paired_ratio(
                lambda: attack(metric, x), lambda: attack.stats.grad_calls,
                lambda: forward_backward(metric, x), args.repeat)
            label = name + ("" if not kw.get("norm") else f":norm={kw['norm']}")
            if family:
                worst = max(worst, cpu_ratio)
            print(f"{label:22s} {t_iter * 1e3:8.1f} ms/iter   fwd+bwd {t_fb * 1e3:8.1f} ms   "
                  f"ratio wall {ratio:5.2f}  cpu {cpu_ratio:5.2f}"
                  f"{'' if family else '   (reference)'}")
    print(f"worst gradient-family CPU-time ratio: {worst:.2f} (target < 1.2)")


if __name__ == "__main__":
    main()
