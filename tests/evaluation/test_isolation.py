"""A failing method never sinks a run (issue: reliability, "Isolation").

A purifier that raises, a purifier and a metric that give NaN, and an attack that raises each lose
their own cells only: the cells are stored as failed with their error, every other cell of the run
is computed, no failed value reaches a score, a rerun keeps them failed and ``retry_failed``
computes them again.
"""
import contextlib
import subprocess
import sys

import pytest
import torch

import iqaguard as ig
from iqaguard.attacks.base import Attack
from iqaguard.defenses.base import Purifier
from iqaguard.evaluation.store import Store
from iqaguard.registry import ATTACKS, DEFENSES, METRICS

DATA = "bundled:size=64"


class Exploding(Purifier):
    fail = True

    def __init__(self):
        pass

    def transform(self, x, gens):
        if Exploding.fail:
            raise RuntimeError("boom in purify")
        return x


class NaNPurifier(Purifier):
    def __init__(self):
        pass

    def transform(self, x, gens):
        return torch.full_like(x, float("nan"))


class ExplodingAttack(Attack):
    budget_param = "eps"

    def __init__(self, eps: float = 0.01):
        super().__init__()
        self.eps = eps

    def perturb(self, metric, x, ref):
        raise RuntimeError("attack blew up")


def _nan_on_second(x):
    """Mean intensity, NaN for images darker than 0.45 (some bundled images, not all)."""
    m = x.mean(dim=(1, 2, 3))
    return torch.where(m < 0.45, torch.full_like(m, float("nan")), m)


@pytest.fixture(scope="module", autouse=True)
def _doubles():
    """The failing methods, registered for this module's tests only."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(DEFENSES.registered("exploding-test", Exploding))
        stack.enter_context(DEFENSES.registered("nan-purifier-test", NaNPurifier))
        stack.enter_context(ATTACKS.registered("exploding-attack-test", ExplodingAttack))
        stack.enter_context(METRICS.registered("nan-metric-test", lambda: ig.wrap_metric(
            _nan_on_second, score_range=(0.0, 1.0), name="nan-metric-test")))
        yield


def test_a_raising_and_a_nan_purifier_lose_only_their_cells(tmp_path):
    Exploding.fail = True
    kw = dict(metrics=["iqg-cnn"], attacks=["fgsm:eps=2/255"], dataset=DATA, limit=3, eot_k=2,
              out=tmp_path, report=False)
    res = ig.benchmark(defenses=["exploding-test", "jpeg", "nan-purifier-test"], **kw)
    assert res.computed == 3 and res.errors == 6
    assert set(res.rows.defense) == {"jpeg:quality=50"}
    assert set(res.summary.defense) == {"jpeg:quality=50"}           # never averaged into a score
    err = res.failures.set_index("defense").error
    assert err.loc["exploding-test"].str.contains("RuntimeError: boom in purify").all()
    assert err.loc["nan-purifier-test"].str.contains("NaN|non-finite").all()      # the metric refuses a NaN image
    with Store(tmp_path / "iqaguard.db", readonly=True) as st:
        assert len(st.errors()) == 6 and len(st.rows()) == 3
    again = ig.benchmark(defenses=["exploding-test", "jpeg", "nan-purifier-test"], **kw)
    assert again.computed == 0 and again.reused == 3 and again.errors == 6      # kept failed, not retried
    Exploding.fail = False
    fixed = ig.benchmark(defenses=["exploding-test", "jpeg", "nan-purifier-test"], retry_failed=True, **kw)
    assert fixed.computed == 3 and fixed.errors == 3                             # nan-purifier fails again
    assert set(fixed.rows.defense) == {"jpeg:quality=50", "exploding-test"}


def test_a_raising_attack_and_a_nan_metric_lose_only_their_cells(tmp_path):
    res = ig.benchmark(metrics=["nan-metric-test"], attacks=["exploding-attack-test", "fgsm:eps=2/255"],
                       defenses=["jpeg"], dataset=DATA, limit=6, out=tmp_path, report=False)
    assert not res.rows.empty and set(res.rows.attack.str.split(":").str[0]) == {"fgsm"}
    errors = res.failures
    nan_imgs = set(errors[errors.error.str.contains("non-finite clean score")].image)
    k = len(nan_imgs)                      # images the metric gives NaN: both attacks' cells fail
    assert 0 < k < 6 and (errors.image.isin(nan_imgs)).sum() == 2 * k
    assert errors.error.str.contains("attack blew up").sum() == 6 - k
    assert len(res.rows) == 6 - k and not set(res.rows.image) & nan_imgs
    assert res.rows[["clear", "attacked", "defended_clear", "defended_attacked"]].notna().all().all()


def test_cli_names_the_failing_defense_and_runs_the_rest(tmp_path):
    """NIQE cannot score the 64-px images resize:scale=0.25 gives: those cells fail, jpeg's run."""
    r = subprocess.run([sys.executable, "-m", "iqaguard.cli", "run", "-m", "niqe", "-a", "fgsm:eps=2/255",
                        "-d", "resize:scale=0.25", "-d", "jpeg", "--limit", "2", "--no-adaptive",
                        "--out", str(tmp_path), "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "2 computed" in r.stdout and "2 failed" in r.stdout
    assert "failed: 2 cell(s) niqe × fgsm:eps=0.00784313725490196 × resize:scale=0.25: InputError: niqe needs" in r.stdout
    assert "--retry-failed" in r.stdout


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_scores_are_never_done(tmp_path, bad):
    class Bad(Purifier):
        def __init__(self):
            pass

        def transform(self, x, gens):
            return x

    name, m = f"identity-{bad}-test", f"const-{bad}-test"
    const = lambda: ig.wrap_metric(lambda x: torch.full((x.shape[0],), float(bad)),  # noqa: E731
                                   score_range=(0.0, 1.0), name=m)
    with DEFENSES.registered(name, Bad), METRICS.registered(m, const):
        res = ig.benchmark(metrics=[m], attacks=["fgsm:eps=2/255"], defenses=[name], dataset=DATA, limit=2,
                           out=tmp_path, report=False)
    assert res.computed == 0 and res.errors == 2 and res.rows.empty
    assert res.failures.error.str.contains("non-finite clean score").all()
