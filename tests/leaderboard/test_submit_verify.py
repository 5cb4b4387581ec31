"""submit → verify on a tiny suite with one cheap defense (JPEG, BPDA adaptive column), then
tampering: a changed entry number and a changed per-image score are both caught, naming the cell."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from ..conftest import wait_for_rows
from iqaguard.cli import main
from iqaguard.leaderboard.bundle import read_bundle, write_bundle
from iqaguard.leaderboard.entries import entry_scores, load_entry, records_to_rows, write_json
from iqaguard.leaderboard.verify import verify

TINY = Path(__file__).with_name("tiny_suite.json")   # iqg-cnn × ifgsm × 4 bundled images, batches of 2


@pytest.fixture(scope="module")
def submitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb")
    code = main(["submit", "jpeg", "--suite", str(TINY), "--out", str(root / "entries"), "--work", str(root / "work"),
                 "--no-progress"])
    assert code == 0
    return root / "entries" / "tiny" / "iqg-cnn" / "jpeg.json"


def test_submit_writes_valid_entry_and_bundle(submitted):
    e = load_entry(submitted)
    assert e["defense"]["spec"] == "jpeg:quality=50" and e["defense"]["family"] == "purification"
    assert e["defense"]["link"] == "https://arxiv.org/abs/1608.00853"
    assert e["provenance"]["images"] == 4 and e["provenance"]["command"][:3] == ["iqaguard", "submit", "jpeg"]
    assert len(e["attacks"]) == 1 and e["attacks"][0]["adaptive_wrapper"] == "bpda"
    fid = e["overall"]["fidelity"]
    assert fid["lo"] <= fid["value"] <= fid["hi"]
    b = read_bundle(submitted.with_name("jpeg.evidence.zip"))
    assert len(b.rows) == 4 and {h["kind"] for h in b.manifest["adversarial"]} == {"transfer", "adaptive"}
    assert len(b.manifest["adversarial"]) == 8 and set(b.pngs) == {"strip/clean.png", "strip/a0_attacked.png",
                                                                  "strip/a0_defended.png"}


def test_entry_on_other_input_images_is_checked_but_not_recomputed(submitted, tmp_path, capsys):
    """When this machine builds other input images than the entry's (another dataset hash: the
    bundled distortions run CPU-specific float kernels; seen on an AVX2-only CPU), recomputed cells
    could not match: the entry is still checked against its bundle, and the report says why its
    cells were not recomputed instead of listing disagreements that follow from the inputs alone."""
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(submitted.with_name("jpeg.evidence.zip"), other)
    data = json.loads(submitted.read_text())
    assert data["provenance"]["cpu"]                # recorded at submit: the inputs depend on it
    data["provenance"]["dataset_hash"] = "0" * 64
    data["provenance"]["cpu"] = "Other CPU; DEFAULT"
    write_json(other / "jpeg.json", data)
    rep = verify(other / "jpeg.json", sample=1, seed=0, work=tmp_path / "v")
    assert rep.ok and rep.checked_numbers > 150
    assert not rep.cells and rep.compared == 0 and "dataset hash" in rep.not_recomputed
    assert "entry's Other CPU; DEFAULT" in rep.not_recomputed
    assert main(["verify", str(other), "--entries", "1", "--sample", "1"]) == 0
    out = capsys.readouterr().out
    assert "NOT RECOMPUTED" in out and "dataset hash" in out and "OK:" in out
    # the entry's own inputs: recomputed as before
    assert verify(submitted, sample=1, seed=0, work=tmp_path / "v2").not_recomputed == ""


def test_verify_agrees_and_tampering_is_named(submitted, tmp_path, capsys):
    rep = verify(submitted, sample=1, seed=0, work=tmp_path / "v")
    assert rep.ok, rep.problems
    assert rep.checked_numbers > 150 and rep.compared == 5
    assert rep.images_compared == 2 and rep.images_identical == 2     # same batch, same seed: same PNG bytes
    (attack, image), = rep.cells

    # 1. one number of the entry changed: named with both values (the sample is not needed for this)
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(submitted.with_name("jpeg.evidence.zip"), bad)
    data = json.loads(submitted.read_text())
    old = data["overall"]["fidelity"]["value"]
    data["overall"]["fidelity"]["value"] = round(old - 0.05, 6)
    write_json(bad / "jpeg.json", data)
    assert main(["verify", str(bad / "jpeg.json"), "--sample", "0"]) == 1
    out = capsys.readouterr().out
    assert f"DISAGREE overall.fidelity.value: entry {round(old - 0.05, 6)!r}, recomputed {old!r}" in out
    assert "FAILED" in out

    # 2. a per-image score changed in the bundle with the entry made consistent with it: only the
    #    recomputation from scratch can tell, and it names the cell and both values
    b = read_bundle(submitted.with_name("jpeg.evidence.zip"))
    rows = [dict(r) for r in b.rows]
    hit = next(r for r in rows if r["attack"] == attack and r["image"] == image)
    hit["defended_attacked"] += 1.0
    forged = bad / "forged"
    bpath = write_bundle(forged / "jpeg.evidence.zip", b.manifest, rows, b.pngs)
    e = load_entry(submitted)
    nums = entry_scores(records_to_rows(rows), pd.DataFrame.from_records(b.manifest["probes"]),
                        pd.DataFrame.from_records(b.manifest["attacks"]), 0,
                        {a["spec"]: a["budget"] for a in e["attacks"]}, {a["spec"]: a["short"] for a in e["attacks"]})
    e.update(nums)
    e["evidence"] = {"bundle": bpath.name, "sha256": hashlib.sha256(bpath.read_bytes()).hexdigest(),
                     "bytes": bpath.stat().st_size}
    write_json(forged / "jpeg.json", e)
    rep = verify(forged / "jpeg.json", sample=1, seed=0, work=tmp_path / "v")   # cached: same batch, no rerun cost
    assert not rep.ok and len(rep.problems) == 1
    msg = rep.problems[0]
    assert msg.startswith(f"cell {attack} × {image}: defended_attacked: bundle {hit['defended_attacked']!r}, recomputed ")


def test_submit_skips_metrics_the_defense_cannot_protect(capsys):
    """Adversarial training needs a metric with weights: a suite's NIQE gets no entry (said why),
    the learned metric does; a purifier protects every metric; none left is a one-line error."""
    from iqaguard import InputError
    from iqaguard.leaderboard.submit import applicable_metrics
    from iqaguard.registry import DEFENSES

    assert applicable_metrics(DEFENSES.create("at-pgd"), ["niqe", "iqg-cnn", "psnr"]) == ["iqg-cnn"]
    err = capsys.readouterr().err
    assert "no entry for niqe: " in err and "has no trainable parameters" in err and "no entry for psnr" in err
    assert applicable_metrics(DEFENSES.create("jpeg"), ["niqe", "iqg-cnn"]) == ["niqe", "iqg-cnn"]
    assert applicable_metrics(DEFENSES.create("ms"), ["niqe", "psnr"]) == ["niqe", "psnr"]
    with pytest.raises(InputError, match="protects none of the suite's metrics"):
        applicable_metrics(DEFENSES.create("nt"), ["niqe", "brisque"])


def test_verify_a_folder_recomputes_in_a_sample_of_entries(submitted, tmp_path, capsys):
    """`make verify-entries`: every entry of a folder is checked against its bundle, cells are
    recomputed only in the K entries the seed picks, and one tampered entry fails the whole check."""
    board = tmp_path / "board"
    for name in ("a", "b"):
        (board / name).mkdir(parents=True)
        shutil.copy(submitted, board / name)
        shutil.copy(submitted.with_name("jpeg.evidence.zip"), board / name)
    assert main(["verify", str(board), "--entries", "1", "--sample", "1", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "verifying 2 entries; cells recomputed in 1 (seed 3)" in out
    assert out.count("recomputed 1 cells") == 1 and "OK: 2/2 entries verified" in out

    data = json.loads((board / "b" / "jpeg.json").read_text())
    data["overall"]["fidelity"]["value"] = round(data["overall"]["fidelity"]["value"] - 0.05, 6)
    write_json(board / "b" / "jpeg.json", data)
    assert main(["verify", str(board), "--entries", "0"]) == 1
    out = capsys.readouterr().out
    assert f"FAILED: {board / 'b' / 'jpeg.json'}" in out and "FAILED: 1/2 entries verified" in out


@pytest.mark.parametrize("args, fragment", [(["nowhere"], "no such entry or folder: 'nowhere'"),
                                            (["{empty}"], "no entry JSON under"),
                                            (["{entry}", "--entries", "-1"], "--entries must be a non-negative")])
def test_verify_refuses_bad_entry_arguments_in_one_line(args, fragment, submitted, tmp_path):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{empty}", str(tmp_path / "empty")).replace("{entry}", str(submitted)) for a in args]
    r = subprocess.run([sys.executable, "-m", "iqaguard.cli", "verify", *args], capture_output=True, text=True)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and fragment in lines[0], r.stderr


def _numbers(entry: Path) -> dict:
    """An entry's results: everything but timings (seconds measured on this machine) and provenance."""
    e = json.loads(entry.read_text())
    for a in e["attacks"]:
        for t in ("mean_time", "fit_seconds"):
            a["scores"].pop(t, None)
    return {k: e[k] for k in ("overall", "attacks", "flags", "suite", "metric", "defense")}


def test_a_killed_submission_in_a_shared_folder_resumes_to_the_fresh_entry(submitted, tmp_path):
    """median-blur is submitted into the folder jpeg used (same suite: jpeg's transfer attacks are
    reused), SIGKILLed once its first batch is stored, and run again: it resumes, and its entry is
    exactly the one a fresh folder gives."""
    import signal

    work, out = submitted.parents[3] / "work", tmp_path / "shared"
    cmd = [sys.executable, "-m", "iqaguard.cli", "submit", "median-blur", "--suite", str(TINY), "--out", str(out),
           "--work", str(work), "--no-progress"]
    # the fresh entry below is computed in this process: the subprocesses use its thread count,
    # whatever OMP_NUM_THREADS the suite was started with (other counts reorder float sums)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    stored = wait_for_rows(p, work / "iqaguard.db", "WHERE defense LIKE 'median-blur%'", n=2)
    assert p.poll() is None, "the submission finished before the kill: nothing to resume"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "tiny").exists()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert f"reusing the work folder {work}" in r.stderr
    assert json.loads((work / "submission.json").read_text())["defenses"] == ["jpeg:quality=50", "median-blur:kernel_size=3"]

    assert main(["submit", "median-blur", "--suite", str(TINY), "--out", str(tmp_path / "fresh"), "--no-progress"]) == 0
    name = "tiny/iqg-cnn/median-blur"
    assert _numbers(out / f"{name}.json") == _numbers(tmp_path / "fresh" / f"{name}.json")
    reused = [load_entry(p / f"{name}.json")["provenance"]["reused_cells"] for p in (out, tmp_path / "fresh")]
    assert reused[0] >= stored >= 2 and reused[1] == 0
    assert read_bundle(out / f"{name}.evidence.zip").manifest["adversarial"] == \
        read_bundle(tmp_path / "fresh" / f"{name}.evidence.zip").manifest["adversarial"]   # same PNG hashes


def test_submit_refuses_a_work_folder_of_another_suite(submitted, tmp_path):
    """The fixture's work folder holds runs of the tiny suite: a suite with another seed may not use
    it, and a non-empty folder that holds no submission is refused too, one line each."""
    other = tmp_path / "tiny_seed1.json"
    other.write_text(TINY.read_text().replace('"seed": 0', '"seed": 1'))
    work = submitted.parents[3] / "work"
    for suite, folder, fragment in ((other, work, "holds submissions on another suite (suite tiny"),
                                    (TINY, Path(__file__).parent, "holds no submission")):
        r = subprocess.run([sys.executable, "-m", "iqaguard.cli", "submit", "median-blur", "--suite", str(suite),
                            "--out", str(tmp_path / "e"), "--work", str(folder)], capture_output=True, text=True)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and fragment in lines[0], r.stderr


def test_verify_recomputes_at_the_entry_thread_count(submitted, tmp_path, monkeypatch):
    """Another torch thread count reorders float sums and can change an adversarial PNG's bytes (seen
    on ms_ssim × pgd: 0/1 identical at 2 threads, 1/1 at the entry's 1), so the entry records its
    count and verify recomputes at it, then restores the caller's."""
    import torch

    e = load_entry(submitted)
    assert e["provenance"]["threads"] == torch.get_num_threads()
    data = json.loads(submitted.read_text())
    data["provenance"]["threads"] = 3
    entry = tmp_path / "jpeg.json"
    write_json(entry, data)
    shutil.copy(submitted.with_name("jpeg.evidence.zip"), tmp_path)
    seen, real = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    before = torch.get_num_threads()
    assert verify(entry, sample=1, seed=1, work=tmp_path / "v").ok
    assert seen == [3, before] and torch.get_num_threads() == before


def test_submit_skips_metrics_that_cannot_score_the_defense_output(tmp_path, capsys):
    """`resize` halves 192² images to 96²: NIQE needs ≥ 96×192 px, so every NIQE cell is refused
    with one input error and NIQE gets no entry (said why); iqg-cnn gets its entry. Any other
    failure still writes nothing."""
    from iqaguard import InputError
    from iqaguard.leaderboard.submit import metrics_with_results

    suite = json.loads(TINY.read_text())
    suite.update(name="tiny-resize", metrics=["niqe", "iqg-cnn"], dataset="bundled:size=192", limit=2,
                 attacks=[{"spec": "fgsm:eps=2/255", "budget": "medium"}])
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    out = tmp_path / "entries"
    assert main(["submit", "resize", "--suite", str(path), "--out", str(out), "--no-progress"]) == 0
    assert "no entry for niqe: niqe needs at least two 96×96 patches" in capsys.readouterr().err
    assert sorted(p.parent.name for p in out.rglob("resize.json")) == ["iqg-cnn"]

    mixed = pd.DataFrame({"metric": ["niqe:channel=yiq,patch_size=96,quantize=true"] * 2, "image": ["a", "b"],
                          "error": ["InputError: too small", "RuntimeError: boom"]})
    with pytest.raises(InputError, match="2 cells of niqe failed"):
        metrics_with_results(pd.DataFrame({"metric": []}), mixed, ["niqe", "iqg-cnn"], tmp_path)
    with pytest.raises(InputError, match="could score this defense's output"):
        metrics_with_results(pd.DataFrame({"metric": []}), mixed.iloc[:1], ["niqe"], tmp_path)


def test_submit_of_some_metrics_gives_their_entries_as_the_whole_suite_does(submitted, tmp_path, capsys):
    """``--metrics`` runs a subset of the suite's metrics (to split a costly defense into jobs): the
    entry of iqg-cnn from a two-metric suite run with ``--metrics iqg-cnn`` has the numbers of the
    one-metric suite's entry; the other metric gets none; a metric outside the suite is refused."""
    data = json.loads(TINY.read_text())
    data["metrics"] = ["iqg-cnn", "psnr"]
    two = tmp_path / "two.json"
    two.write_text(json.dumps(data))
    out = tmp_path / "entries"
    assert main(["submit", "jpeg", "--suite", str(two), "--out", str(out), "--metrics", "iqg-cnn",
                 "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "tiny").iterdir()) == ["iqg-cnn"]
    got, want = _numbers(out / "tiny" / "iqg-cnn" / "jpeg.json"), _numbers(submitted)
    got.pop("suite"), want.pop("suite")                  # the suites differ in their metric list (and hash)
    assert got == want
    assert load_entry(out / "tiny" / "iqg-cnn" / "jpeg.json")["provenance"]["command"][-2:] == ["--metrics", "iqg-cnn"]
    assert main(["submit", "jpeg", "--suite", str(two), "--metrics", "niqe", "--no-progress"]) == 2
    assert "metric 'niqe' is not in suite tiny (its metrics: iqg-cnn, psnr)" in capsys.readouterr().err
