"""End-to-end runs of the grid on a tiny slice of the bundled suite."""
import numpy as np
import pandas as pd
import pytest
import torch

import iqaguard as ig
from iqaguard import InputError
from iqaguard.evaluation.store import Store

DATA = "bundled:size=192"
# iqg-cnn: every attack step moves it (NIQE at pyiqa's default rounds luma, and the study's 1/255
# I-FGSM steps often make NIQE worse, so the attack keeps the input: tests/test_quick_suite.py)
GRID = dict(metrics=["iqg-cnn"], attacks=["ifgsm:steps=3"], defenses=["no-defense", "jpeg", "random-noise:sigma=0.05"],
            dataset=DATA, limit=4, seed=3)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return ig.benchmark(**GRID, out=out, report=False), out


def test_rows_and_outputs(first_run):
    res, out = first_run
    assert res.computed == 12 and res.reused == 0 and res.errors == 0
    assert len(res.rows) == 12
    for f in ("results.csv", "summary.csv", "iqaguard.db"):
        assert (out / f).exists()
    csv = pd.read_csv(out / "results.csv")
    for col in ("metric", "attack", "defense", "image", "clear", "attacked", "defended_clear", "defended_attacked"):
        assert col in csv.columns
    assert len(res.summary) == 3
    nd = res.rows[res.rows.defense == "no-defense"]
    # identity defense: defended scores equal undefended ones
    np.testing.assert_allclose(nd.defended_clear, nd.clear, rtol=1e-6)
    np.testing.assert_allclose(nd.defended_attacked, nd.attacked, rtol=1e-6)
    # the attack changed every score, within its ℓ∞ budget (the physics is checked on the quick suite)
    assert (nd.attacked != nd.clear).all()
    assert res.rows.linf_c_a.max() <= 10 / 255 + 1e-6
    # transfer images saved once per (metric, attack, image), reused by every defense; the adaptive
    # ones once per defense (no-defense reuses the transfer image: it is already the direct attack)
    with Store(out / "iqaguard.db", readonly=True) as st:
        adv = pd.read_sql_query("SELECT attack FROM adversarial", st.db)
    assert (adv.attack == res.rows.attack.iloc[0]).sum() == 4 and len(adv) == 4 + 2 * 4
    assert len(list((out / "adversarial").glob("*.png"))) == 12
    assert res.rows.defended_attacked_adaptive.notna().all()
    assert res.provenance["seed"] == 3 and res.provenance["torch"] == torch.__version__


def test_rerun_reuses_every_cell(first_run):
    res, out = first_run
    again = ig.benchmark(**GRID, out=out, report=False)
    assert again.computed == 0 and again.reused == 12
    pd.testing.assert_frame_equal(again.rows.drop(columns=["run_id"]), res.rows.drop(columns=["run_id"]))


def test_fresh_run_is_bit_identical(first_run, tmp_path):
    """Same seed, new store: every score identical, random defense included."""
    res, _ = first_run
    fresh = ig.benchmark(**GRID, out=tmp_path, report=False, batch_size=3)
    cols = ["clear", "attacked", "defended_clear", "defended_attacked"]
    a = res.rows.set_index(["defense", "image"])[cols].sort_index()
    b = fresh.rows.set_index(["defense", "image"])[cols].sort_index()
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5)


def test_random_defense_uses_same_draw_for_clean_and_attacked(tmp_path):
    """With a null attack (eps=0) the attacked image is the clean one, so the same draw must give
    the same defended score; a different run seed gives different draws."""
    grid = dict(GRID, attacks=["fgsm:eps=0.0"], defenses=["random-noise:sigma=0.05"])
    res = ig.benchmark(**grid, out=tmp_path / "a", report=False)
    np.testing.assert_array_equal(res.rows.defended_attacked.values, res.rows.defended_clear.values)
    assert (res.rows.defended_clear != res.rows.clear).all()
    other = ig.benchmark(**dict(grid, seed=4), out=tmp_path / "b", report=False)
    assert (other.rows.defended_clear.values != res.rows.defended_clear.values).all()


def test_crash_loses_only_cells_in_flight(tmp_path, monkeypatch):
    """Killed in the middle of the second task (one task = metric × attack × image batch with all its
    defenses): the first task's cells are stored whole, the rerun computes exactly the rest."""
    from iqaguard.defenses.base import Purifier
    from iqaguard.evaluation import worker

    calls = {"tasks": 0, "purify": 0}
    run, purify = worker.Worker.run, Purifier.purify

    def counting_run(self, task):
        calls["tasks"] += 1
        return run(self, task)

    def flaky(self, x, seeds=None):
        if calls["tasks"] == 2:
            calls["purify"] += 1
            if calls["purify"] == 3:
                raise KeyboardInterrupt("simulated crash")
        return purify(self, x, seeds)

    monkeypatch.setattr(worker.Worker, "run", counting_run)
    monkeypatch.setattr(Purifier, "purify", flaky)
    with pytest.raises(KeyboardInterrupt):
        ig.benchmark(**GRID, out=tmp_path, report=False, batch_size=2)
    with Store(tmp_path / "iqaguard.db") as st:
        partial = st.rows()
        assert len(partial) == 6                      # the first task: 2 images × 3 defenses
        assert partial[["clear", "defended_attacked", "defended_attacked_adaptive"]].notna().all().all()
    monkeypatch.setattr(Purifier, "purify", purify)
    done = ig.benchmark(**GRID, out=tmp_path, report=False, batch_size=2)
    assert done.reused == 6 and done.computed == 6


def test_fr_target(tmp_path):
    res = ig.benchmark(metrics=["psnr"], attacks=["fgsm:eps=2/255"], defenses=["no-defense", "gaussian-blur"],
                       dataset=DATA, limit=2, out=tmp_path, report=False)
    nd = res.rows[res.rows.defense == "no-defense"]
    # PSNR of the attacked image against the reference: the attack (toward better) cannot make it worse than... it
    # moves toward higher PSNR, so the attacked score is at least close to the clean one
    assert res.rows.q_psnr_c_a.isna().all()        # never the attacked metric as a quality measure
    assert nd.attacked.notna().all()


def test_bad_specs_fail_before_running(tmp_path):
    with pytest.raises(InputError, match="unknown attack"):
        ig.benchmark(metrics=["niqe"], attacks=["nope"], defenses=["jpeg"], dataset=DATA, out=tmp_path)
    with pytest.raises(InputError, match="no parameter"):
        ig.benchmark(metrics=["niqe"], attacks=["ifgsm"], defenses=["jpeg:qual=3"], dataset=DATA, out=tmp_path)
    assert not (tmp_path / "iqaguard.db").exists()
