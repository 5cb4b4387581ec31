"""Suites and entries as data: hashes, schema validation with file + field, bundles checked before use."""
from __future__ import annotations

import hashlib
import json
import zipfile

import pytest
import torch

from iqaguard import InputError
from iqaguard.cli import main
from iqaguard.evaluation.plan import QUICK
from iqaguard.leaderboard.bundle import read_bundle
from iqaguard.leaderboard.entries import load_entries, load_entry
from iqaguard.leaderboard.suites import canonical_json, load_suite
from iqaguard.registry import ATTACKS, METRICS, canonical

from .conftest import make_entry


def test_shipped_suites_are_valid_and_hashed():
    for name in ("quick", "standard"):
        s = load_suite(name)
        assert s.hash == hashlib.sha256(canonical_json(s.data).encode()).hexdigest()
        for m in s.data["metrics"]:
            METRICS.create(m)          # every method of a suite exists and its spec parses
        for a in s.attacks:
            ATTACKS.create(a)
    q = load_suite("quick").data      # the quick suite is `iqaguard run`'s default suite
    assert q["metrics"] == QUICK["metrics"] and [a["spec"] for a in q["attacks"]] == QUICK["attacks"]
    assert q["limit"] == QUICK["limit"] and q["adaptive"]["eot_k"] == QUICK["eot_k"]
    st = load_suite("standard").data
    assert len(st["attacks"]) == 19 and len({canonical(ATTACKS.create(a)) for a in load_suite("standard").attacks}) == 19


def test_suite_file_errors_name_the_field(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({**load_suite("quick").data, "limit": "many"}))
    with pytest.raises(InputError, match=r"s\.json: limit: 'many' is not of type 'integer'"):
        load_suite(p)


def test_invalid_entry_names_file_and_field(tmp_path, capsys):
    path = make_entry(tmp_path / "entries", "jpeg", 0.05)
    load_entry(path)                                   # valid as written
    data = json.loads(path.read_text())
    data["attacks"][1]["scores"]["bias"]["value"] = "0.1"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as e:
        load_entries(tmp_path / "entries")
    msg = str(e.value)
    assert str(path) in msg and "attacks[1].scores.bias.value" in msg and "\n" not in msg
    # the CLI: one line on stderr, exit code 2, no traceback
    assert main(["leaderboard", "build", "--entries", str(tmp_path / "entries"), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "attacks[1].scores.bias.value" in err and str(path) in err
    del data["provenance"]["dataset_hash"]
    data["attacks"][1]["scores"]["bias"]["value"] = 0.1
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"provenance: 'dataset_hash' is a required property"):
        load_entry(path)


def test_nan_is_not_a_number(tmp_path):
    path = make_entry(tmp_path, "jpeg", 0.05)
    path.write_text(path.read_text().replace('"value": 0.0', '"value": NaN', 1) if '"value": 0.0' in path.read_text()
                    else path.read_text().replace('"lo": null', '"lo": NaN', 1))
    with pytest.raises(InputError, match="not valid JSON"):
        load_entry(path)


def test_bundles_are_validated_before_use(tmp_path, monkeypatch):
    path = make_entry(tmp_path, "jpeg", 0.05)
    bundle = path.with_name("jpeg.evidence.zip")
    assert read_bundle(bundle).manifest["defense"] == "jpeg"
    bad = tmp_path / "bad.evidence.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"bad\.evidence\.zip'?: not a zip file"):
        read_bundle(bad)
    with zipfile.ZipFile(bad, "w") as z:            # a path outside the bundle
        z.writestr("../evil.py", "import os")
    with pytest.raises(InputError, match="unexpected member '../evil.py'"):
        read_bundle(bad)
    with zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as z:   # a zip bomb: 60 MB of zeros
        z.writestr("manifest.json", b"{}")
        z.writestr("rows.json", b"0" * 60_000_000)
    with pytest.raises(InputError, match="oversized"):
        read_bundle(bad)
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("manifest.json", b"{\"format\": 1}")
        z.writestr("rows.json", b"[]")
    with pytest.raises(InputError, match=r"manifest\.json: \(top level\): .* is a required property"):
        read_bundle(bad)
    import iqaguard.leaderboard.bundle as B

    monkeypatch.setattr(B, "MAX_BUNDLE_BYTES", 100)
    with pytest.raises(InputError, match="more than the 100 allowed"):
        read_bundle(bundle)


def test_needs_weights_defenses_never_show_test_model_numbers(tmp_path):
    from iqaguard.leaderboard.site import build
    from iqaguard.leaderboard.submit import check_real_weights, needs_weights
    from iqaguard.registry import DEFENSES, METRICS

    assert set(needs_weights()) == {"mprnet", "realesrgan", "diffpure", "disco", "ddrs", "densepure", "at-apgd-lpips-4"}
    for name, file in needs_weights().items():       # really not available here: creating (training) says which file
        with pytest.raises(InputError, match=file.replace(".", r"\.")):
            d = DEFENSES.create(name)
            d.fit(METRICS.create("iqg-cnn"), torch.rand(2, 3, 64, 64))   # at-apgd-lpips-4: its LPIPS-VGG labels

    class Small:  # what a test model looks like: another weights file
        name, params = "mprnet", {"weights": "/tmp/tiny_mprnet.pth", "n_feat": 80}
    with pytest.raises(InputError, match="published weights 'mprnet_denoise.pth'"):
        check_real_weights(Small())
    root = tmp_path / "entries"
    make_entry(root, "mprnet:n_feat=8,weights='/tmp/tiny.pth'", 0.05, name="mprnet")
    with pytest.raises(InputError, match="not the published model"):
        build(root, tmp_path / "site")


def test_plan_image_subset_keeps_keys_and_training_split():
    """verify re-runs sampled images with make_plan(images=...): same cell and adversarial keys, same
    training split (uap is trainable), and an unknown image is a one-line error."""
    from iqaguard.evaluation.plan import make_plan

    full, _ = make_plan(["niqe"], ["uap"], ["jpeg"], "bundled", limit=6, train_images=4)
    ids = full.image_ids
    sub, data = make_plan(["niqe"], ["uap"], ["jpeg"], "bundled", limit=6, train_images=4, images=[ids[4], ids[1]])
    assert sub.image_ids == [ids[1], ids[4]] and [it.id for it in data.items] == sub.image_ids   # dataset order
    assert [it.id for it in sub.train_items] == [it.id for it in full.train_items]
    for img in sub.image_ids:
        assert sub.cell_key(*full.metrics, *full.attacks, *full.defenses, img) == \
            full.cell_key(*full.metrics, *full.attacks, *full.defenses, img)
        assert sub.attack_key("niqe", full.attacks[0], img) == full.attack_key("niqe", full.attacks[0], img)
    with pytest.raises(InputError, match="image 'nope' is not among the 6 evaluated images"):
        make_plan(["niqe"], ["uap"], ["jpeg"], "bundled", limit=6, images=["nope"])


def test_infinite_values_survive_the_bundle(tmp_path):
    """An untouched image's PSNR is inf, and no-defense's quality is the lossless 3.5 only if that
    inf reaches the entry: JSON has no infinity, so rows carry "inf"/"-inf" (not null, which made
    no-defense's quality "not measured" on the board). Any other string in a number column is refused."""
    import iqaguard as ig
    from iqaguard.evaluation import scores
    from iqaguard.leaderboard.bundle import _check_rows
    from iqaguard.leaderboard.entries import records_to_rows, rows_to_records

    res = ig.benchmark(metrics=["iqg-cnn"], attacks=["fgsm:eps=2/255"], defenses=["no-defense"],
                       dataset="bundled:size=64", limit=2, out=tmp_path / "run", report=False)
    assert (res.rows.q_psnr_rgb_c_dc == float("inf")).all()
    records = json.loads(json.dumps(rows_to_records(res.rows), allow_nan=False))
    assert {r["q_psnr_rgb_c_dc"] for r in records} == {"inf"}
    _check_rows(records, "bundle")
    back = records_to_rows(records)
    assert (back.q_psnr_rgb_c_dc == float("inf")).all()
    two = scores.two_axis(scores.worst_case(back))
    assert two.quality.iloc[0] == 3.5 and two.quality_note.iloc[0] == "measured"
    records[0]["clear"] = "oops"
    with pytest.raises(InputError, match=r"rows\.json\[0\]\.clear must be a number"):
        _check_rows(records, "bundle")
