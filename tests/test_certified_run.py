"""All six certified defenses through ``iqaguard run`` on CPU (issue: certified, "the 6 methods run
on CPU through iqaguard run").

``ddrs``/``densepure`` load the small diffusion model the project trains
(``scripts/train_tiny_diffusion.py`` → ``tests/fixtures/diffusion-tiny.safetensors``, 0.78 M
parameters) through their ``weights`` parameter: the real code path, not the published 256×256
checkpoint. The sample counts are lowered (n0 4, n 8 instead of 100 / 1000; densepure 2 votes instead of 5; PGD 3 steps instead of 10) only to keep this
CLI test within CI's budget; the defaults are what ``tests/evaluation/test_certified_soundness.py``
(rs, ms) and ``tests/defenses/test_certified.py`` run. With n = 8 the certificates at eps 0.25
abstain (the order statistics / Clopper–Pearson bound need more samples), which this test accepts.
"""
from pathlib import Path

import pandas as pd

from .conftest import cli

TINY = Path(__file__).parent / "fixtures" / "diffusion-tiny.safetensors"
SMALL = "n=8"
DEFENSES = [f"rs:n0=4,{SMALL}", f"drs:n0=4,{SMALL}", f"ms:{SMALL}", f"dms:{SMALL}",
            f"ddrs:weights={TINY},n0=4,{SMALL}", f"densepure:weights={TINY},n0=4,{SMALL},votes=2"]


def test_six_certified_defenses_run(tmp_path):
    out = tmp_path / "out"
    args = ["run", "-m", "iqg-cnn", "-a", "pgd:norm=l2,eps=0.2,steps=3", "--data", "bundled:size=64", "--limit", "1",
            "--eot-k", "2", "--out", str(out), "--no-progress"]
    for d in DEFENSES:
        args += ["-d", d]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    rows = pd.read_csv(out / "results.csv")
    rows = rows[rows.family == "certified"]
    assert sorted(rows.defense.str.split(":").str[0]) == sorted(d.split(":")[0] for d in DEFENSES)
    assert (rows.cert_eps == 0.25).all() and rows.defended_clear.notna().all()
    assert rows.defended_attacked_adaptive.notna().all() and rows.adaptive_wrapper.notna().all()
    # forwards per defended score: the mean of the certificate ((n0 +) n) and an attacked image's score (n)
    per = rows.set_index(rows.defense.str.split(":").str[0]).defense_forwards
    assert per["ms"] >= 8 and per["rs"] >= 10 and per["densepure"] >= 2 * per["ddrs"] - 1   # votes=2
    summary = pd.read_csv(out / "summary.csv")
    # n = 8 cannot certify eps 0.25: every image abstains, so the violation count has no images
    assert "cert_violation" in summary.columns and (summary.cert_abstain_rate == 1).all()
    assert (out / "index.html").exists()
