"""Every numeric parameter of every registered method has a sane bound (issue 16: "no upper
bounds"). An absurd value fails in the constructor with an InputError naming the parameter,
instead of running for years (``ifgsm:steps=99999999999999999999``) or silently changing the
threat model (``fgsm:eps=2``)."""
from __future__ import annotations

import math

import pytest
import torch

import iqaguard as ig
from iqaguard import InputError, limits
from iqaguard.registry import ATTACKS, DEFENSES, METRICS

HUGE_INT = 10 ** 18
BAD_FLOATS = (1e30, math.inf, math.nan)

# Accepted on purpose (kept short): (parameter, value) -> why.
ALLOWED = {
    # a seed only names a random stream: any value in [0, 2**63) is valid and costs nothing
    ("seed", HUGE_INT): "seed",
    # a target is a point on the metric's scale, which the attack's constructor does not know;
    # it costs nothing (inf/nan are refused)
    ("target", 1e30): "target",
}
# Parameters whose default is None but which take a number.
OPTIONAL_NUMBERS = {"target": float, "alpha": float, "seed": int, "mse_floor": float}


def _cases():
    for reg in (METRICS, ATTACKS, DEFENSES):
        for name in reg.names():
            if ":" in name:           # prefix-resolved (pyiqa:*), not ours
                continue
            for key, default in reg.defaults(name).items():
                if isinstance(default, bool):
                    continue
                kind = type(default) if default is not None else OPTIONAL_NUMBERS.get(key)
                if kind is int:
                    yield pytest.param(reg, name, key, HUGE_INT, id=f"{reg.kind}-{name}-{key}-1e18")
                elif kind is float:
                    for v in BAD_FLOATS:
                        yield pytest.param(reg, name, key, v, id=f"{reg.kind}-{name}-{key}-{v}")


@pytest.mark.parametrize("reg, name, key, value", list(_cases()))
def test_absurd_parameter_is_refused_naming_it(reg, name, key, value):
    if (key, value) in ALLOWED:
        try:
            reg.create(name, **{key: value})   # accepted, see ALLOWED
        except InputError as exc:              # published weights not on this machine
            assert "weights file" in str(exc) and key not in str(exc).split(":")[0], str(exc)
        return
    with pytest.raises(InputError) as exc:
        reg.create(name, **{key: value})
    msg = str(exc.value)
    assert key in msg and "\n" not in msg, msg


def test_the_issue_cases():
    with pytest.raises(InputError, match=r"steps must be an integer in 1\.\.100000"):
        ig.create_attack("ifgsm:steps=99999999999999999999")
    with pytest.raises(InputError, match=r"eps must be in \[0, 1\], got 2"):
        ig.create_attack("fgsm:eps=2")


def test_bounds_are_above_the_defaults():
    """No default sits at a bound: the bounds only catch typos."""
    assert limits.MAX_STEPS >= 100 * 1000 and limits.MAX_QUERIES >= 100 * 10_000
    assert limits.MAX_SAMPLES >= 10 * 100_000   # Cohen et al. 2019 certify with n = 100 000
    ig.create_attack("ifgsm:steps=100000")      # the bound itself is allowed
    ig.create_defense("rs:n=100000")            # Cohen et al.'s certification setting


def test_l2_radius_above_the_image_diameter_is_refused():
    metric = ig.create_metric("psnr")
    x = torch.full((1, 3, 8, 8), 0.5)
    attack = ig.create_attack("pgd:norm='l2',eps=100.0")   # diameter of 3×8×8 is sqrt(192) ≈ 13.9
    with pytest.raises(InputError, match=r"eps=100 exceeds the ℓ2 diameter"):
        attack(metric, x, x)
    ig.create_attack("pgd:norm='l2',eps=1.0,steps=1")(metric, x, x)   # a sane radius runs
