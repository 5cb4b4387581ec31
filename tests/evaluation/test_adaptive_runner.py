"""The adaptive column in the grid: both columns stored, wrappers recorded, cached, flagged."""
import numpy as np
import pandas as pd
import pytest
import torch

import iqaguard as ig
from iqaguard import InputError
from iqaguard.attacks.trainable import TrainableAttack
from iqaguard.evaluation import flags as fl
from iqaguard.evaluation.plan import make_plan, train_split
from iqaguard.evaluation.store import Store
from iqaguard.registry import ATTACKS, DEFENSES, canonical

DATA = "bundled:size=64"
GRID = dict(metrics=["iqg-cnn"], attacks=["fgsm:eps=2/255", "fgsm:eps=4/255", "square-attack:n_queries=8"],
            defenses=["no-defense", "jpeg", "color-quantization", "random-noise:sigma=0.02", "gaussian-blur"],
            dataset=DATA, limit=3, seed=1, adaptive=True, eot_k=2)


def _c(reg, spec):
    return canonical(reg.create(spec))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("adaptive")
    return ig.benchmark(**GRID, out=out), out


def test_both_columns_and_wrappers(run):
    res, out = run
    assert res.errors == 0 and res.computed == 3 * 5 * 3
    rows = res.rows
    wr = {(_c(ATTACKS, "fgsm:eps=4/255"), d): w for d, w in [
        (_c(DEFENSES, "jpeg"), "bpda"), (_c(DEFENSES, "color-quantization"), "bpda"),
        (_c(DEFENSES, "random-noise:sigma=0.02"), "eot2"), (_c(DEFENSES, "gaussian-blur"), "none")]}
    wr[(_c(ATTACKS, "square-attack:n_queries=8"), _c(DEFENSES, "jpeg"))] = "query"
    for (a, d), w in wr.items():
        sel = rows[(rows.attack == a) & (rows.defense == d)]
        assert len(sel) == 3 and (sel.adaptive_wrapper == w).all(), (a, d, sel.adaptive_wrapper.tolist())
        assert sel.defended_attacked_adaptive.notna().all()
    nd = rows[rows.defense == _c(DEFENSES, "no-defense")]
    # the identity: the transfer attack already attacked exactly this metric
    assert (nd.defended_attacked_adaptive == nd.defended_attacked).all() and (nd.adaptive_wrapper == "direct").all()
    # adaptive adversarial images are cached under their own keys (3 attacks × 4 defenses × 3 images)
    assert len(list((out / "adversarial").glob("*.png"))) == 3 * 3 + 3 * 4 * 3
    # BPDA moves the score through color-quantization, whose own gradient is zero (one FGSM step is
    # too weak to beat the transfer attack reliably: that comparison is tests/test_adaptive.py's)
    cq = res.summary[(res.summary.defense == _c(DEFENSES, "color-quantization"))
                     & (res.summary.attack == _c(ATTACKS, "fgsm:eps=4/255"))].iloc[0]
    assert cq.defended_gain_adaptive > 0.02 and np.isfinite(cq.defended_gain_paired)
    for f in ("flags.csv", "worst_case.csv", "summary.csv", "index.html"):
        assert (out / f).exists()


def test_worst_case_includes_adaptive(run):
    res, _ = run
    rows, worst = res.rows, res.worst
    d = _c(DEFENSES, "color-quantization")
    sel = rows[rows.defense == d]
    r = sel.range_hi - sel.range_lo
    dev = np.fmax((sel.clear - sel.defended_attacked).abs() / r, (sel.clear - sel.defended_attacked_adaptive).abs() / r)
    expect = dev.groupby(sel.image).max().mean()
    got = worst[worst.defense == d].iloc[0]
    assert got.robust_abs_gain_worst == pytest.approx(expect, rel=1e-9)
    assert got.robust_abs_gain_worst >= got.robust_abs_gain_worst_nonadaptive
    assert got.adaptive_cells == 3 and got.unreliable_cells == 0


def test_flags_and_reliability(run):
    res, out = run
    flags = pd.read_csv(out / "flags.csv")
    assert list(flags.columns) == fl.FLAG_COLUMNS
    got = set(zip(flags.defense, flags.flag))
    assert (_c(DEFENSES, "jpeg"), "zero-gradient") in got                 # Pillow JPEG: no gradient at all
    assert (_c(DEFENSES, "color-quantization"), "zero-gradient") in got   # rounding: zero gradient
    assert (_c(DEFENSES, "random-noise:sigma=0.02"), "randomized-score") in got
    assert not any(f == "zero-gradient" for d, f in got if d == _c(DEFENSES, "gaussian-blur"))
    # black-box attacks are never flagged for zero gradients (they do not use any)
    sq = _c(ATTACKS, "square-attack:n_queries=8")
    assert not ((flags.attack == sq) & (flags.flag == "zero-gradient")).any()
    s = res.summary
    jp = s[s.defense == _c(DEFENSES, "jpeg")]
    assert set(jp.reliability) <= {"adaptive-checked", "reliable"}
    assert (s[s.defense == _c(DEFENSES, "no-defense")].reliability == "reliable").all()
    assert set(s.reliability) <= {"adaptive-checked", "reliable"}      # every cell has its adaptive value
    html = (out / "index.html").read_text()
    assert "zero-gradient" in html and "adaptive-checked" in html and "Honesty flags" in html


def test_without_adaptive_nothing_is_reliable(tmp_path):
    """--no-adaptive: flagged cells are unreliable, the others transfer-only; never reliable."""
    res = ig.benchmark(metrics=["iqg-cnn"], attacks=["fgsm:eps=2/255"],
                       defenses=["jpeg", "random-noise", "gaussian-blur"], dataset=DATA, limit=2, out=tmp_path,
                       report=True, adaptive=False)
    rel = dict(zip(res.summary.defense, res.summary.reliability))
    assert rel[_c(DEFENSES, "jpeg")] == rel[_c(DEFENSES, "random-noise")] == "unreliable"
    assert rel[_c(DEFENSES, "gaussian-blur")] == "transfer-only"
    assert set(res.flags.flag) == {"zero-gradient", "randomized-score"}
    assert "transfer-only" in (tmp_path / "index.html").read_text()


def test_rerun_recomputes_nothing_and_crash_is_safe(run, tmp_path, monkeypatch):
    res, out = run
    again = ig.benchmark(**GRID, out=out)
    assert again.computed == 0 and again.reused == len(res.rows)
    pd.testing.assert_frame_equal(again.rows.drop(columns=["run_id"]), res.rows.drop(columns=["run_id"]))
    # interrupted inside an adaptive attack: finished cells survive, the rest are computed once
    from iqaguard.adaptive import AdaptiveMetric

    calls = {"n": 0}
    original = AdaptiveMetric.score

    def flaky(self, x, ref):
        calls["n"] += 1
        # 2 probe calls, then per (image, defense) one FGSM gradient + 3 scorings of the attack's
        # keep-best check (attacks/base.py); a task is one image (batch_size 1) with both defenses,
        # written whole: calls 3–10 are the first task, call 12 is inside the second
        if calls["n"] == 12:
            raise KeyboardInterrupt("simulated crash")
        return original(self, x, ref)

    grid = dict(GRID, attacks=["fgsm:eps=2/255"], defenses=["jpeg", "color-quantization"], limit=2)
    monkeypatch.setattr(AdaptiveMetric, "score", flaky)
    with pytest.raises(KeyboardInterrupt):
        ig.benchmark(**grid, out=tmp_path, report=False, batch_size=1)
    with Store(tmp_path / "iqaguard.db") as st:
        partial = st.rows()
        assert len(partial) == 2                  # the first task's two cells, whole
        assert partial.defended_attacked_adaptive.notna().all()
    monkeypatch.setattr(AdaptiveMetric, "score", original)
    done = ig.benchmark(**grid, out=tmp_path, report=False, batch_size=1)
    assert done.reused == len(partial) and done.computed == 4 - len(partial)
    fresh = ig.benchmark(**grid, out=tmp_path / "fresh", report=False, batch_size=1)
    cols = ["defended_attacked", "defended_attacked_adaptive"]
    a = done.rows.set_index(["defense", "image"])[cols].sort_index()
    b = fresh.rows.set_index(["defense", "image"])[cols].sort_index()
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5)


def test_adaptive_limit_and_validation(tmp_path):
    res = ig.benchmark(metrics=["iqg-cnn"], attacks=["fgsm:eps=2/255"], defenses=["no-defense", "color-quantization"],
                       dataset=DATA, limit=3, adaptive=["color-quantization"], adaptive_limit=1, out=tmp_path,
                       report=False)
    cq = res.rows[res.rows.defense == _c(DEFENSES, "color-quantization")]
    assert cq.defended_attacked_adaptive.notna().sum() == 1
    with pytest.raises(InputError, match="not among"):
        make_plan(["iqg-cnn"], ["fgsm"], ["jpeg"], DATA, 2, adaptive=["median-blur"])
    with pytest.raises(InputError, match="wrapper"):
        make_plan(["iqg-cnn"], ["fgsm"], ["jpeg"], DATA, 2, adaptive=True, wrapper="x")
    with pytest.raises(InputError, match="not differentiable"):
        make_plan(["iqg-cnn"], ["fgsm"], ["jpeg"], DATA, 2, adaptive=True, wrapper="eot")
    plan, _ = make_plan(["iqg-cnn"], ["fgsm"], ["no-defense", "jpeg"], DATA, 2, adaptive=True)
    assert plan.adaptive == [_c(DEFENSES, "jpeg")]      # never the identity


# ------------------------------------------------------------------------------ trainable attacks
class _FakeUAP(TrainableAttack):
    """A per-channel universal offset, eps·tanh(p): tiny, but a real fit through the metric."""

    def __init__(self, eps: float = 4 / 255, epochs: int = 1, lr: float = 0.5, batch: int = 4, seed: int = 0,
                 direction: str = "better", target: float | None = None):
        super().__init__(epochs=epochs, lr=lr, batch=batch, seed=seed, direction=direction, target=target)
        self.eps = eps
        self.p = torch.zeros(1, 3, 1, 1)
        self.fit_calls = 0

    def state_dict_template(self):
        return {"p": torch.zeros(1, 3, 1, 1)}

    def state_dict(self):
        return {"p": self.p}

    def _load(self, state):
        self.p = state["p"]

    def _init_state(self, images):
        _FakeUAP.fits.append(images.shape[0])
        self.p = torch.zeros(1, 3, 1, 1, requires_grad=True)

    def _parameters(self):
        return [self.p]

    def _train_delta(self, x):
        return self.eps * torch.tanh(self.p)

    def _apply(self, x):
        return (x + self.eps * torch.tanh(self.p)).clamp(0, 1)

    fits: list = []


@pytest.fixture
def fake_uap():
    with ATTACKS.registered("fake-uap-test", _FakeUAP):
        yield


def test_trainable_attack_fitted_on_a_disjoint_split(tmp_path, fake_uap):
    _FakeUAP.fits.clear()
    plan, data = make_plan(["iqg-cnn"], ["fake-uap-test"], ["color-quantization"], DATA, 3, train_images=4)
    evaluated = set(plan.image_ids)
    assert len(plan.train_items) == 4 and not evaluated & {it.id for it in plan.train_items}
    res = ig.benchmark(metrics=["iqg-cnn"], attacks=["fake-uap-test"], defenses=["color-quantization"],
                       dataset=DATA, limit=3, train_images=4, adaptive=True, out=tmp_path, report=False)
    assert res.errors == 0
    assert _FakeUAP.fits == [4, 4]             # once on the metric, once through the BPDA wrapper
    assert res.rows.defended_attacked_adaptive.notna().all() and (res.rows.adaptive_wrapper == "bpda").all()
    assert len(list((tmp_path / "trainable").rglob("*.safetensors"))) == 2
    assert (res.rows.attacked != res.rows.clear).all()
    again = ig.benchmark(metrics=["iqg-cnn"], attacks=["fake-uap-test"], defenses=["color-quantization"],
                         dataset=DATA, limit=3, train_images=4, adaptive=True, out=tmp_path, report=False)
    assert again.computed == 0 and _FakeUAP.fits == [4, 4]
    n = len(ig.create_dataset(DATA))
    with pytest.raises(InputError, match="disjoint"):
        make_plan(["iqg-cnn"], ["fake-uap-test"], ["jpeg"], DATA, n)


def test_train_split_is_even_and_disjoint():
    ds = ig.create_dataset(DATA)
    ids = [it.id for it in ds.items[:5]]
    split = train_split(ds, ids, 10)
    assert len(split) == 10 and not set(ids) & {it.id for it in split}
    rest = [it.id for it in ds.items[5:]]
    pos = [rest.index(it.id) for it in split]
    assert pos == sorted(pos) and pos[-1] > len(rest) // 2      # spread over the whole rest
