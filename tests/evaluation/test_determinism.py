"""Per-image results never depend on batching, and the cell key covers the weights (issue:
reliability, "Determinism").

The worker computes one image at a time and every random draw derives from (seed, cell, image), so
batch sizes 1, 3 and 8 give bit-identical rows on CPU for a grid with a randomized defense
(random-noise, EOT adaptive column), a deterministic one with BPDA (jpeg), a random-start attack
(pgd) and a trainable attack (a per-channel universal offset fitted through the metric).
"""
import pandas as pd
import pytest
import torch

import iqaguard as ig
from iqaguard.attacks.trainable import TrainableAttack
from iqaguard.metrics.base import Metric
from iqaguard.registry import ATTACKS, METRICS

DATA = "bundled:size=64"
TIMING = {"run_id", "defense_seconds", "attack_seconds", "fit_seconds"}   # not results


class OffsetUAP(TrainableAttack):
    """eps·tanh(p) per channel: tiny, but a real seeded fit through the metric."""

    def __init__(self, eps: float = 4 / 255, epochs: int = 1, lr: float = 0.5, batch: int = 4, seed: int = 0,
                 direction: str = "better", target: float | None = None):
        super().__init__(epochs=epochs, lr=lr, batch=batch, seed=seed, direction=direction, target=target)
        self.eps = eps
        self.p = torch.zeros(1, 3, 1, 1)

    def state_dict_template(self):
        return {"p": torch.zeros(1, 3, 1, 1)}

    def state_dict(self):
        return {"p": self.p}

    def _load(self, state):
        self.p = state["p"]

    def _init_state(self, images):
        self.p = 0.1 * torch.randn(1, 3, 1, 1)     # random init: the fit's seed matters
        self.p.requires_grad_(True)

    def _parameters(self):
        return [self.p]

    def _train_delta(self, x):
        return self.eps * torch.tanh(self.p)

    def _apply(self, x):
        return (x + self.eps * torch.tanh(self.p)).clamp(0, 1)


@pytest.fixture(scope="module", autouse=True)
def _doubles():
    """This module's test methods, registered for its tests only."""
    with ATTACKS.registered("offset-uap-test", OffsetUAP), METRICS.registered("scaled-mean-test", ScaledMean):
        yield


def _rows(res):
    cols = [c for c in res.rows.columns if c not in TIMING]
    return res.rows[cols].sort_values(["attack", "defense", "image"]).reset_index(drop=True)


def test_batch_size_never_changes_a_row(tmp_path):
    grid = dict(metrics=["iqg-cnn"], attacks=["pgd:eps=4/255,steps=3", "offset-uap-test"],
                defenses=["no-defense", "jpeg", "random-noise"], dataset=DATA, limit=8, eot_k=2,
                train_images=4, report=False)
    rows = {}
    for bs in (1, 3, 8):
        res = ig.benchmark(**grid, batch_size=bs, out=tmp_path / f"bs{bs}")
        assert res.errors == 0 and res.computed == 48
        rows[bs] = _rows(res)
    assert rows[1].defended_attacked_adaptive.notna().all()
    assert (rows[1].adaptive_wrapper.dropna().str.startswith("eot")).any()
    pd.testing.assert_frame_equal(rows[1], rows[3], check_exact=True)
    pd.testing.assert_frame_equal(rows[1], rows[8], check_exact=True)


def test_a_certified_cell_does_not_depend_on_the_cells_computed_before_it(tmp_path):
    """The EOT draws of a smoothed metric's adaptive attack restart for every cell: a cell computed
    alone (as `iqaguard verify` recomputes a sample) equals the same cell computed after others by
    the same smoothed metric, at any batch size. (The draws used to follow a per-object call count.)"""
    grid = dict(metrics=["iqg-cnn"], defenses=["ms:n=32"], dataset=DATA, limit=3, eot_k=2, report=False)
    a, b = "pgd:norm=l2,eps=0.2,steps=2", "pgd:norm=l2,eps=0.1,steps=2"
    full = ig.benchmark(**grid, attacks=[a, b], batch_size=3, out=tmp_path / "full")
    alone = ig.benchmark(**grid, attacks=[b], batch_size=1, out=tmp_path / "alone")
    assert full.errors == 0 and alone.errors == 0 and alone.computed == 3
    rows = _rows(full)
    rows = rows[rows.attack == alone.rows.attack.iloc[0]].reset_index(drop=True)
    assert rows.defended_attacked_adaptive.notna().all()
    pd.testing.assert_frame_equal(rows, _rows(alone), check_exact=True)


class ScaledMean(Metric):
    """A metric with one weight: registered again with another weight, it must not reuse cells."""
    mode, lower_better, score_range, differentiable = "NR", False, (0.0, 1.0), True
    weight = 1.0

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(ScaledMean.weight), requires_grad=False)

    def forward(self, x, ref=None):
        return self.w * x.mean(dim=(1, 2, 3))


def test_other_weights_under_the_same_name_get_new_cells(tmp_path):
    kw = dict(metrics=["scaled-mean-test"], attacks=["fgsm:eps=2/255"], defenses=["jpeg"], dataset=DATA,
              limit=2, out=tmp_path, report=False)
    ScaledMean.weight = 1.0
    first = ig.benchmark(**kw)
    assert first.computed == 2
    ScaledMean.weight = 0.5
    second = ig.benchmark(**kw)
    assert second.computed == 2 and second.reused == 0
    assert (second.rows.clear.to_numpy() * 2 == first.rows.clear.to_numpy()).all()
    ScaledMean.weight = 1.0
    assert ig.benchmark(**kw).reused == 2


def test_a_replaced_image_file_gets_new_cells(tmp_path):
    """The key has the content of the item's files: an image replaced under the same name is
    computed again, the untouched one is reused."""
    import numpy as np
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(d / name)
    kw = dict(metrics=["iqg-cnn"], attacks=["fgsm:eps=2/255"], defenses=["jpeg"], dataset=f"folder:root='{d}'",
              adaptive=False, out=tmp_path / "out", report=False)
    assert ig.benchmark(**kw).computed == 2
    assert ig.benchmark(**kw).reused == 2
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(d / "b.png")
    again = ig.benchmark(**kw)
    assert again.computed == 1 and again.reused == 1
