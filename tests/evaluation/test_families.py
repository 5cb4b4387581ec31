"""One engine for all three defense families (issue: engine): a purifier, a toy trained defense
and a toy smoothed defense run in one grid, through the CLI and through ``ig.benchmark``, with no
family-specific code in the worker's loop; reports are rebuilt from the store alone."""
import copy
import inspect
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import iqaguard as ig
from iqaguard import InputError
from iqaguard.attacks.base import AttackStats
from iqaguard.defenses.base import Defense
from iqaguard.evaluation.families.certified import MIN_EOT_K, Certified
from iqaguard.metrics.base import Metric
from iqaguard.registry import ATTACKS, DATASETS, DEFENSES, METRICS, canonical

DATA = "bundled:size=64"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store-v1" / "iqaguard.db"


class ToyTrained(Defense):
    """Fine-tunes a copy of the metric for a few steps toward its own clean scores under noise
    (enough to change the weights: the test is about the engine, not about robustness)."""

    family, trainable, randomized, differentiable = "training", True, False, True

    def __init__(self, steps: int = 2):
        self.steps = steps
        self._state = None

    def training_spec(self):
        return f"toy-trained-test:steps={self.steps}"

    def fit(self, metric, images, ref=None):
        t0 = time.perf_counter()
        tuned = copy.deepcopy(metric).train()
        params = [p.requires_grad_(True) for p in tuned.parameters() if p.is_floating_point()]
        if not params:
            raise InputError("metric has no trainable parameters")
        opt = torch.optim.SGD(params, lr=1e-3)
        with torch.no_grad():
            target = metric(images)
        for _ in range(self.steps):
            opt.zero_grad()
            loss = (tuned((images + 0.01 * torch.randn_like(images)).clamp(0, 1)).sub(target) ** 2).mean() + 1e-3
            loss.backward()
            opt.step()
        self._state = {k: v.detach().clone() for k, v in tuned.state_dict().items()}
        del tuned
        self.fit_stats = AttackStats(grad_calls=self.steps, seconds=time.perf_counter() - t0)
        return self

    def state_dict(self):
        return self._state

    def load_state_dict(self, state):
        self._state = dict(state)

    def protect(self, metric):
        if self._state is None:
            raise InputError("toy-trained-test is not fitted")
        tuned = copy.deepcopy(metric)
        tuned.load_state_dict(self._state)
        return tuned.eval()


@dataclass
class Cert:
    score: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    abstained: torch.Tensor


class ToySmoothed(Metric):
    def __init__(self, metric, sigma, n):
        super().__init__()
        self.base, self.sigma, self.n = metric, sigma, n
        self.mode, self.lower_better, self.name = metric.mode, metric.lower_better, metric.name
        self.params, self._score_range, self.differentiable = dict(metric.params), metric.score_range, True
        self.seeds, self.forwards, self._calls = None, 0, 0

    def _noise(self, x, k):
        out = []
        for i in range(x.shape[0]):
            g = None
            if self.seeds is not None:
                g = torch.Generator().manual_seed(int(self.seeds[i]) + self._calls)
            out.append(torch.randn((k, *x.shape[1:]), generator=g))
        self._calls += 1
        return torch.stack(out, 1).to(x)       # (k, N, C, H, W)

    def noisy(self, x, ref=None, k=1):
        z = self._noise(x, k)
        y = (x.unsqueeze(0) + self.sigma * z).clamp(0, 1).flatten(0, 1)
        self.forwards += y.shape[0]
        return self.base(y).reshape(k, x.shape[0]).mean(0)

    def score(self, x, ref):
        self._calls = 0
        with torch.no_grad():
            return self.noisy(x, ref, self.n)

    def certify(self, x, eps, alpha=0.001, ref=None):
        s = self.score(x, ref)
        w = torch.full_like(s, 10.0 * eps)
        return Cert(s, s - w, s + w, torch.zeros_like(s, dtype=torch.bool))


class ToySmoothing(Defense):
    family, randomized, differentiable = "certified", True, True

    def __init__(self, sigma: float = 0.05, n: int = 4):
        self.sigma, self.n = sigma, n

    def protect(self, metric):
        return ToySmoothed(metric, self.sigma, self.n)


class Alien(Defense):
    family = "telepathy"

    def __init__(self):
        pass


@pytest.fixture(scope="module", autouse=True)
def toys():
    """The toy defenses, registered for this module's tests only."""
    with DEFENSES.registered("toy-trained-test", ToyTrained), \
            DEFENSES.registered("toy-smoothing-test", ToySmoothing), DEFENSES.registered("alien-family-test", Alien):
        yield


GRID = dict(metrics=["iqg-cnn"], attacks=["fgsm:eps=4/255"],
            defenses=["jpeg", "toy-trained-test", "toy-smoothing-test"], dataset=DATA, limit=3, eot_k=2,
            train_images=4)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("families")
    return ig.benchmark(**GRID, out=out), out


@pytest.mark.parametrize("asked, used", [(2, MIN_EOT_K), (MIN_EOT_K, MIN_EOT_K), (40, 40)])
def test_certified_adaptive_attack_takes_at_least_min_eot_draws(asked, used):
    """A run's smaller ``eot_k`` (the quick suite's 4) would leave the attack through a denoiser
    weaker than the transfer attack; a larger one is kept. The draws are in the cell key's wrapper."""
    plan = type("P", (), {"eot_k": asked})()
    smoothed = ToySmoothing().protect(ig.create_metric("iqg-cnn"))
    target = Certified().adaptive_target(None, None, smoothed, plan)
    assert target.k == used and target.wrapper == Certified().wrapper(None, plan) == f"eot{used}"


def test_one_grid_holds_all_three_families(grid):
    res, out = grid
    assert res.errors == 0 and res.computed == 9
    rows = res.rows.set_index("defense")
    fam = dict(zip(res.rows.defense, res.rows.family))
    assert set(fam.values()) == {"purification", "training", "certified"}
    assert res.rows.defended_attacked_adaptive.notna().all()          # every defended cell has its adaptive value
    tr = res.rows[res.rows.family == "training"]
    assert (tr.defended_clear != tr.clear).all()                       # the fine-tuned copy scores
    assert tr.q_ssim_rgb_c_dc.isna().all() and tr.fit_seconds.notna().all()   # image untouched: no quality columns
    assert set(tr.adaptive_wrapper) == {"none"}                        # direct white-box on the tuned metric
    ce = res.rows[res.rows.family == "certified"]
    assert ce.cert_lo.notna().all() and (ce.cert_lo <= ce.defended_clear).all() and (ce.cert_eps == 0.25).all()
    # the run asked for 2 noise draws; the certified family's adaptive attack takes at least 16
    assert set(ce.adaptive_wrapper) == {f"eot{MIN_EOT_K}"} and (ce.defense_forwards >= 4).all()
    pu = res.rows[res.rows.family == "purification"]
    assert pu.q_ssim_rgb_c_dc.notna().all() and set(pu.adaptive_wrapper) == {"bpda"}
    assert set(res.summary.reliability) <= {"reliable", "adaptive-checked"}
    html = (out / "index.html").read_text()
    assert "toy-smoothing-test" in html
    main_table = html[html.index('summary-table"'):]
    main_table = main_table[:main_table.index("</table>")]
    # the certificate's columns are main-table columns, shown when they hold a value: the abstain rate
    # here; violations are not checkable (the fgsm perturbation's ℓ2 norm exceeds cert_eps)
    assert "abstain rate" in main_table and "certificate violations" not in main_table
    assert res.summary.cert_violation.isna().all() and res.summary.cert_abstain_rate.notna().any()
    del rows


def test_rerun_trains_nothing(grid, monkeypatch):
    res, out = grid
    monkeypatch.setattr(ToyTrained, "fit", lambda *a, **k: pytest.fail("refit on rerun"))
    again = ig.benchmark(**GRID, out=out, report=False)
    assert again.computed == 0 and again.reused == 9


def test_same_grid_through_the_cli(tmp_path, grid, monkeypatch):
    from iqaguard.cli import main

    args = ["run", "-m", "iqg-cnn", "-a", "fgsm:eps=4/255", "-d", "jpeg", "-d", "toy-trained-test",
            "-d", "toy-smoothing-test", "--data", DATA, "--limit", "3", "--eot-k", "2", "--train-images", "4",
            "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    rows = pd.read_csv(tmp_path / "results.csv")
    assert len(rows) == 9 and rows.defended_attacked_adaptive.notna().all()
    assert (tmp_path / "index.html").exists()
    res, _ = grid     # the same cells through the API and the CLI: same numbers
    cols = ["clear", "attacked", "defended_clear", "defended_attacked", "defended_attacked_adaptive"]
    a = res.rows.set_index(["defense", "image"])[cols].sort_index()
    b = rows.set_index(["defense", "image"])[cols].sort_index()
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5)


def test_worker_loop_has_no_family_specific_code():
    from iqaguard.evaluation import runner, worker

    loop = inspect.getsource(worker.Worker._cell) + inspect.getsource(worker.Worker._group) \
        + inspect.getsource(runner._drive)
    for word in ("purify", "certify", "fit(", '"training"', '"certified"', '"purification"'):
        assert word not in loop, word


def test_unknown_family_is_refused_before_running(tmp_path):
    with pytest.raises(InputError, match="telepathy"):
        ig.benchmark(metrics=["iqg-cnn"], attacks=["fgsm"], defenses=["alien-family-test"], dataset=DATA,
                     limit=2, out=tmp_path)
    assert not (tmp_path / "iqaguard.db").exists()


def test_report_needs_only_the_store(grid, tmp_path, monkeypatch):
    """With every registry unusable (weights, data and methods gone), the report is rebuilt."""
    res, out = grid
    from iqaguard.report import report_from_store

    def gone(*a, **k):
        raise RuntimeError("weights unavailable")

    for reg in (METRICS, ATTACKS, DEFENSES, DATASETS):
        monkeypatch.setattr(reg, "create", gone)
    store = tmp_path / "copy" / "iqaguard.db"
    shutil.copytree(out, store.parent)
    store.chmod(0o444)
    before = store.read_bytes()
    rep = report_from_store(store, tmp_path / "rep")
    assert (tmp_path / "rep" / "index.html").exists()
    assert len(rep.rows) == 9 and set(rep.summary.defense) == set(res.summary.defense)
    assert store.read_bytes() == before
    pd.testing.assert_frame_equal(rep.summary.reset_index(drop=True), res.summary.reset_index(drop=True),
                                  check_dtype=False)


def test_report_from_a_store_of_the_landed_version(tmp_path):
    from iqaguard.cli import main

    p = tmp_path / "old" / "iqaguard.db"
    p.parent.mkdir()
    shutil.copy(FIXTURE, p)
    assert main(["report", "--store", str(p), "--out", str(tmp_path / "rep")]) == 0
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    assert len(summary) == 6 and summary.robust_abs_gain.notna().all()
    assert (tmp_path / "rep" / "index.html").exists()


def test_trained_defense_ahead_then_run_trains_nothing(tmp_path, monkeypatch):
    """`iqaguard train-defense` fits into the run's cache; the run (and its rerun) then load it."""
    from iqaguard.cli import main
    from iqaguard.defenses.training.base import TrainedDefense

    args = ["train-defense", "at-pgd", "-m", "iqg-cnn", "--data", DATA, "--limit", "2", "--train-images", "4",
            "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    assert len(list((tmp_path / "trainable").glob("at-pgd-*.safetensors"))) == 1
    monkeypatch.setattr(TrainedDefense, "fit", lambda *a, **k: pytest.fail("trained again"))
    res = ig.benchmark(metrics=["iqg-cnn"], attacks=["fgsm:eps=4/255"], defenses=["no-defense", "at-pgd"],
                       dataset=DATA, limit=2, train_images=4, out=tmp_path, report=False)
    at = res.rows[res.rows.family == "training"]
    assert res.errors == 0 and len(at) == 2 and at.defended_attacked_adaptive.notna().all()
    assert (at.adaptive_wrapper == "none").all() and at.fit_seconds.notna().all()
    assert (at.defended_clear != at.clear).any()          # the fine-tuned copy is what is scored
