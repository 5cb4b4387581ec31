"""Sparse black-box attacks: Patch-RS (one square patch) and the one-pixel attack (DE).

Both only read scores through ``Attack.query`` (no gradients; every scored image counts as one
query) and change few pixels: a square of ``eps`` pixels (patch-rs) or ``pixel_count`` single
pixels (onepixel). Every image of a batch is attacked independently, all candidates of one step
are scored in one batched metric call.

Sources (algorithms only; no code copied):
- Patch-RS: Croce, Andriushchenko, Singh, Flammarion & Hein, "Sparse-RS: a versatile framework for
  query-efficient sparse black-box adversarial attacks", AAAI 2022 (§ image-specific patches).
- One-pixel: Su, Vargas & Sakurai, "One Pixel Attack for Fooling Deep Neural Networks",
  IEEE TEVC 2019 (DE/rand/1, F = 0.5, no crossover, greedy parent/child selection).
"""
from __future__ import annotations

import math

import torch

from ..errors import InputError
from ..registry import ATTACKS
from . import _checks as check
from .base import Attack








def _generator(seed, device) -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _randint(high: torch.Tensor, gen) -> torch.Tensor:
    """Uniform integers in [0, high) element-wise (``high`` a long tensor >= 1)."""
    u = torch.rand(high.shape, generator=gen, device=high.device)
    return torch.minimum((u * high).long(), high - 1)


# ------------------------------------------------------------------------------------------
# Patch-RS
# ------------------------------------------------------------------------------------------

@ATTACKS.register("patch-rs")
class PatchRS(Attack):
    """Random search over the location and content of one square patch (Sparse-RS, patches).

    ``eps`` is the patch area in pixels (a perfect square; the study's presets are 16..625, default
    169 = 13×13). The search starts from a random location and a patch of random colours from
    {0,1}³, scores it, then for ``n_queries − 1`` iterations proposes one change and keeps it only
    if the gain does not get worse (Croce et al. 2022 accept on improvement; ties are accepted
    here so that the patch keeps moving across flat regions of the score). Every ``update_loc_period``-th iteration
    moves the patch by a random offset (up to ``p·(side of image − side of patch)`` pixels per
    axis); the others recolour a random sub-square of side ``max(1, round(sqrt(p)·s))`` of the
    patch with one random vertex of the colour cube (the Sparse-RS patch update). ``p`` starts
    at ``p_init`` and is halved on the Square-attack schedule (iterations 10, 50, 200, 500, 1000,
    2000, 4000, 6000, 8000 of 10,000, rescaled to ``n_queries``).

    Budget: the patch area; ``x_adv`` differs from ``x`` only inside one s×s square.
    """

    threat = "sparse"
    white_box = False
    budget_param = "eps"          # the patch area in pixels

    def __init__(self, eps: int = 169, n_queries: int = 10000, p_init: float = 0.8,
                 update_loc_period: int = 4, seed: int | None = 0,
                 direction: str = "better", target: float | None = None):
        super().__init__(direction=direction, target=target)
        self.eps = check.integer(eps, "eps", 1, maximum=check.MAX_SIDE ** 2)
        side = math.isqrt(self.eps)
        if side * side != self.eps:
            raise InputError(f"eps (patch area in pixels) must be a perfect square, got {eps!r}")
        self.side = side
        self.n_queries = check.queries(n_queries)
        self.p_init = check.unit(p_init, "p_init", low_open=True)
        self.update_loc_period = check.integer(update_loc_period, "update_loc_period", 2, maximum=check.MAX_QUERIES)
        self.seed = check.seed(seed)

    @property
    def budget(self) -> float:
        return float(self.eps)

    def _p(self, it: int) -> float:
        """Square-attack halving schedule, rescaled from 10,000 iterations to ``n_queries``."""
        t = int(it / self.n_queries * 10000)
        halvings = sum(t > m for m in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
        return self.p_init / 2 ** halvings

    def _paste(self, x, patch, rows, cols):
        """``x`` with each image's patch pasted at its own (row, col)."""
        n, s = x.shape[0], self.side
        ar = torch.arange(s, device=x.device)
        b = torch.arange(n, device=x.device)[:, None, None]
        r = (rows[:, None] + ar)[:, :, None]
        c = (cols[:, None] + ar)[:, None, :]
        out = x.clone()
        out[b, :, r, c] = patch.permute(0, 2, 3, 1)
        return out

    def perturb(self, metric, x, ref):
        n, ch, h, w = x.shape
        s = self.side
        if s > min(h, w):
            raise InputError(f"patch side {s} (eps={self.eps}) exceeds image size {h}x{w}")
        gen = _generator(self.seed, x.device)
        dev = x.device
        rows = _randint(torch.full((n,), h - s + 1, device=dev), gen)
        cols = _randint(torch.full((n,), w - s + 1, device=dev), gen)
        patch = (torch.rand(n, ch, s, s, generator=gen, device=dev) < 0.5).to(x.dtype)
        best = self.query(metric, self._paste(x, patch, rows, cols), ref)
        for it in range(1, self.n_queries):
            p = self._p(it)
            new_rows, new_cols, new_patch = rows, cols, patch
            if it % self.update_loc_period == 0:
                dr = max(1, int(round(p * (h - s)))) if h > s else 0
                dc = max(1, int(round(p * (w - s)))) if w > s else 0
                step_r = _randint(torch.full((n,), 2 * dr + 1, device=dev), gen) - dr
                step_c = _randint(torch.full((n,), 2 * dc + 1, device=dev), gen) - dc
                new_rows = (rows + step_r).clamp(0, h - s)
                new_cols = (cols + step_c).clamp(0, w - s)
            else:
                k = max(1, min(s, int(round(math.sqrt(p) * s))))
                r0 = _randint(torch.full((n,), s - k + 1, device=dev), gen)
                c0 = _randint(torch.full((n,), s - k + 1, device=dev), gen)
                colour = (torch.rand(n, ch, 1, 1, generator=gen, device=dev) < 0.5).to(x.dtype)
                ar = torch.arange(s, device=dev)
                inside = (((ar[None] >= r0[:, None]) & (ar[None] < (r0 + k)[:, None]))[:, :, None]
                          & ((ar[None] >= c0[:, None]) & (ar[None] < (c0 + k)[:, None]))[:, None, :])
                new_patch = torch.where(inside[:, None], colour, patch)
            cand = self.query(metric, self._paste(x, new_patch, new_rows, new_cols), ref)
            better = cand >= best  # ties accepted: the patch can drift across flat score regions
            if better.any():
                best = torch.where(better, cand, best)
                rows = torch.where(better, new_rows, rows)
                cols = torch.where(better, new_cols, cols)
                patch = torch.where(better[:, None, None, None], new_patch, patch)
        self.patch_location = torch.stack([rows, cols], dim=1)
        return self._paste(x, patch, rows, cols)


# ------------------------------------------------------------------------------------------
# One-pixel attack
# ------------------------------------------------------------------------------------------

@ATTACKS.register("onepixel")
class OnePixel(Attack):
    """Differential evolution over ``pixel_count`` pixels, each encoded as (row, col, r, g, b).

    Su et al. 2019: DE/rand/1 mutation ``v = x_r1 + F·(x_r2 − x_r3)`` with F = 0.5, greedy
    selection (a child replaces its parent if its gain is at least as high), ``steps`` generations
    (study: 10). ``popsize`` is the *total* number of candidates (study: 300; Su et al. used 400),
    not scipy's per-dimension multiplier. ``recombination`` is the binomial crossover rate CR as in
    scipy's ``differential_evolution``; the default 1.0 takes every gene from the mutant, i.e. the
    paper's "no crossover" (also the setting of the study's torchattacks/scipy call). All genes are
    scaled to [0,1] (row = floor(u·H), colour = u); a mutant gene that leaves [0,1] is redrawn
    uniformly, as scipy does. The initial population is uniform (scipy ``init='random'``; the paper
    draws colours from N(128,127)). Cost: ``popsize·(steps+1)`` queries per image.

    Budget: ``pixel_count``; ``x_adv`` differs from ``x`` in at most that many pixel positions.
    """

    threat = "sparse"
    white_box = False
    budget_param = "pixel_count"

    def __init__(self, pixel_count: int = 3, popsize: int = 300, steps: int = 10,
                 mutation: float = 0.5, recombination: float = 1.0, chunk: int = 256,
                 seed: int | None = 0, direction: str = "better", target: float | None = None):
        super().__init__(direction=direction, target=target)
        self.pixel_count = check.integer(pixel_count, "pixel_count", 1, maximum=check.MAX_SIDE ** 2)
        self.popsize = check.integer(popsize, "popsize", 4, maximum=check.MAX_QUERIES)
        self.steps = check.steps(steps, minimum=0)
        if isinstance(mutation, bool) or not isinstance(mutation, (int, float)) \
                or not math.isfinite(mutation) or not 0 < mutation <= 2:
            raise InputError(f"mutation (F) must be a number in (0, 2], got {mutation!r}")
        self.mutation = float(mutation)
        self.recombination = check.unit(recombination, "recombination")
        self.chunk = check.integer(chunk, "chunk", 1)
        self.seed = check.seed(seed)

    @property
    def budget(self) -> float:
        return float(self.pixel_count)

    def _apply(self, x, genes):
        """``x`` (M,C,H,W) and genes (M,P,k,5) in [0,1] -> candidates (M·P,C,H,W)."""
        n, ch, h, w = x.shape
        p, k = genes.shape[1], genes.shape[2]
        out = x.repeat_interleave(p, dim=0)
        g = genes.reshape(n * p, k, 5)
        r = (g[..., 0] * h).long().clamp_(0, h - 1)
        c = (g[..., 1] * w).long().clamp_(0, w - 1)
        b = torch.arange(n * p, device=x.device)[:, None].expand(-1, k)
        colour = g[..., 2:2 + ch] if ch <= 3 else g[..., 2:3].expand(-1, -1, ch)
        out[b, :, r, c] = colour.to(x.dtype)
        return out

    def _score(self, metric, x, ref, genes):
        """Gains (N,P) of all candidates, built and scored ``chunk`` images at a time so the
        N·P candidate images never exist at once (300 × a 512×384 image is ~0.7 GB)."""
        n, p = genes.shape[:2]
        flat = genes.reshape(n * p, 1, *genes.shape[2:])
        out = []
        for i in range(0, n * p, self.chunk):
            j = torch.arange(i, min(i + self.chunk, n * p), device=x.device)
            owner = torch.div(j, p, rounding_mode="floor")
            cand = self._apply(x[owner], flat[j])
            out.append(self.query(metric, cand, None if ref is None else ref[owner]))
        return torch.cat(out).view(n, p)

    def perturb(self, metric, x, ref):
        n, ch = x.shape[:2]
        if ch not in (1, 3):
            raise InputError(f"onepixel needs 1- or 3-channel images, got {ch} channels")
        gen = _generator(self.seed, x.device)
        dev, P, k = x.device, self.popsize, self.pixel_count
        pop = torch.rand(n, P, k, 5, generator=gen, device=dev)
        fit = self._score(metric, x, ref, pop)
        for _ in range(self.steps):
            # three distinct partners per member, all different from the member itself
            key = torch.rand(n, P, P, generator=gen, device=dev)
            key.diagonal(dim1=1, dim2=2).fill_(2.0)
            idx = key.topk(3, dim=2, largest=False).indices                 # (n,P,3)
            pick = lambda j: torch.gather(pop, 1, idx[..., j, None, None].expand(-1, -1, k, 5))
            mutant = pick(0) + self.mutation * (pick(1) - pick(2))
            bad = (mutant < 0) | (mutant > 1)
            mutant = torch.where(bad, torch.rand(mutant.shape, generator=gen, device=dev), mutant)
            if self.recombination < 1.0:
                # binomial crossover; one gene always from the mutant (scipy's 'binomial')
                flat_m, flat_p = mutant.view(n, P, -1), pop.view(n, P, -1)
                cross = torch.rand(flat_m.shape, generator=gen, device=dev) < self.recombination
                forced = _randint(torch.full((n, P), flat_m.shape[-1], device=dev), gen)
                cross.scatter_(2, forced[..., None], True)
                mutant = torch.where(cross, flat_m, flat_p).view(n, P, k, 5)
            trial_fit = self._score(metric, x, ref, mutant)
            keep = trial_fit >= fit
            pop = torch.where(keep[..., None, None], mutant, pop)
            fit = torch.where(keep, trial_fit, fit)
        best = fit.argmax(dim=1)
        winner = pop[torch.arange(n, device=dev), best][:, None]
        return self._apply(x, winner)
