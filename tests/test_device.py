"""The GPU path: validation at the public boundary only, and the grid on CUDA (skipped without a GPU).

On CPU: inside an attack's loop the metric's input checks (finite, in [0,1]: each a host-device
sync on a GPU) are skipped, while the attack's own call and a bare metric call still validate.
On CUDA: a small grid gives the CPU's rows within float tolerance, and the number of host-device
syncs an attack makes does not grow with its steps.
"""
from __future__ import annotations

import warnings

import pytest
import torch

import iqaguard as ig
from iqaguard.errors import InputError
from iqaguard.images import _TRUSTED, check_image, trusted
from iqaguard.metrics.base import wrap_metric
from iqaguard.registry import ATTACKS

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_trusted_skips_only_the_value_checks():
    bad = torch.full((1, 3, 8, 8), float("nan"))
    with pytest.raises(InputError, match="NaN"):
        check_image(bad)
    with trusted():
        assert check_image(bad) is bad                       # values not checked (no sync) ...
        with pytest.raises(InputError, match="4-D"):
            check_image(bad[0])                              # ... shape and dtype still are
    with pytest.raises(InputError, match="NaN"):
        check_image(bad)                                     # and the block ends with the with


def test_attack_loop_runs_trusted_and_its_call_validates():
    seen = []

    def energy(z):
        seen.append(_TRUSTED.get())
        return z.square().mean(dim=(1, 2, 3))

    metric = wrap_metric(energy, name="energy")
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ATTACKS.create("pgd", steps=3)(metric, x)
    assert seen and all(seen), seen                          # every metric call of the loop is trusted
    assert _TRUSTED.get() is False
    with pytest.raises(InputError, match="NaN"):
        ATTACKS.create("pgd", steps=3)(metric, torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(InputError, match=r"\[0,1\]"):
        ig.create_metric("iqg-cnn")(torch.full((1, 3, 64, 64), 2.0))   # a bare call validates


def test_nan_gradient_is_zeroed_without_a_test():
    """The gradient is made finite unconditionally (identity when finite): a NaN metric gradient
    leaves the image where it is instead of poisoning it."""
    metric = wrap_metric(lambda z: z.sqrt().mean(dim=(1, 2, 3)), name="sqrt")   # d sqrt / dz = inf at 0
    x = torch.zeros(1, 3, 8, 8)
    attack = ATTACKS.create("pgd", steps=2, random_start=False)
    _, grad = attack.gain_and_grad(metric, x, None)
    assert torch.equal(grad, torch.zeros_like(x))


@cuda
def test_grid_on_cuda_matches_cpu(tmp_path):
    kw = dict(metrics=["iqg-cnn"], attacks=["pgd:steps=3,random_start=False"], defenses=["no-defense", "jpeg"],
              dataset="bundled:size=64", limit=2, report=False)
    cpu = ig.benchmark(**kw, out=str(tmp_path / "cpu"), device="cpu").rows.sort_values(["defense", "image"])
    gpu = ig.benchmark(**kw, out=str(tmp_path / "gpu"), device="cuda").rows.sort_values(["defense", "image"])
    for col in ("clear", "attacked", "defended_clear", "defended_attacked"):
        assert (cpu[col].to_numpy() - gpu[col].to_numpy()).__abs__().max() < 1e-2 * (cpu.range_hi - cpu.range_lo).iloc[0], col


@cuda
def test_attack_syncs_do_not_grow_with_steps():
    metric = ig.create_metric("iqg-cnn").cuda().eval()
    x = torch.rand(2, 3, 64, 64, device="cuda")

    def syncs(steps: int) -> int:
        attack = ATTACKS.create("pgd", steps=steps, random_start=False)
        attack(metric, x)                                   # warm-up
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as rec:
                warnings.simplefilter("always")
                attack(metric, x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return len(rec)

    assert syncs(20) == syncs(5)
