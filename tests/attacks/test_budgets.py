"""Budget table (tables/attack_budgets.json) and the calibration command that writes it."""
import copy
import json
from importlib import resources

import numpy as np
import pytest

import iqaguard.attacks  # noqa: F401  (registers the built-in attacks)
from iqaguard.attacks import calibration
from iqaguard.attacks.budgets import LEVELS, RULES, budget_info, budget_params, validate_table
from iqaguard.cli import main
from iqaguard.errors import InputError
from iqaguard.registry import ATTACKS


pytestmark = pytest.mark.usefixtures("one_thread")


def shipped():
    return json.loads(resources.files("iqaguard.tables").joinpath("attack_budgets.json").read_text())


def test_shipped_table_is_valid_and_monotone():
    table = shipped()
    validate_table(table)
    for key, entry in table.items():
        if key.startswith("_"):
            continue
        info = budget_info(key)
        vals = [info["values"][lv] for lv in LEVELS]
        assert vals[0] < vals[1] < vals[2], (key, vals)
        cal = entry.get("calibration")
        # the searched quantity falls with the level (SSIM, or RGB SSIM for cadv). Not asserted
        # for rule linf: with keep-best, an attack that overshoots returns the input (fgsm at
        # 8/255 improves 2 of the 8 calibration images on the retrained iqg-cnn, so its median
        # SSIM there is the input's); the bound itself is checked below and measured ℓ∞ here
        if cal and entry.get("rule") in ("ssim", "ssim_rgb"):
            ssim = [cal[lv][entry["rule"]] for lv in LEVELS]
            assert ssim[0] >= ssim[1] - 1e-4 and ssim[1] >= ssim[2] - 1e-4, (key, ssim)
        if cal and entry.get("rule") == "linf" and key not in ("madc", "uap", "cnn-attack"):
            for lv, bound in zip(LEVELS, (2 / 255, 4 / 255, 8 / 255)):   # + float round-off of the box
                assert cal[lv]["linf_max"] <= bound + 1e-6, (key, lv, cal[lv]["linf_max"])


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_registered_attack_has_three_levels(name):
    for lv in LEVELS:
        params = budget_params(name, lv)
        assert budget_info(name)["param"] in params, (name, lv, params)


def test_linf_rule_is_2_4_8_over_255():
    table = shipped()
    linf = [k for k, e in table.items() if not k.startswith("_") and e.get("rule") == "linf"]
    assert {"fgsm", "ifgsm", "pgd", "square-attack"} <= set(linf)
    for k in linf:   # the attack's declared ℓ∞ budget (eps itself, or e.g. uap's 0.1·amplitude)
        if k == "madc":   # sign steps of lr: ℓ∞ ≤ steps·lr (the study's presets), RMSE bound apart
            budgets = [(lambda a: a.steps * a.lr)(ATTACKS.create(k, **budget_params(k, lv))) for lv in LEVELS]
        else:
            budgets = [ATTACKS.create(k, **budget_params(k, lv)).budget for lv in LEVELS]
        assert budgets == pytest.approx([2 / 255, 4 / 255, 8 / 255], rel=1e-6), k


def test_calibrated_entries_hit_their_targets():
    """Searched entries (rule ssim/ssim_rgb/psnr) record a target; the achieved median is close
    to it (grid/iteration limited: SSIM within 0.01, PSNR within 2 dB)."""
    for key, entry in shipped().items():
        if key.startswith("_") or entry.get("rule") not in ("ssim", "ssim_rgb", "psnr"):
            continue
        field, tol = entry["rule"], (2.0 if entry["rule"] == "psnr" else 0.01)
        for lv in LEVELS:
            cal = entry["calibration"][lv]
            assert abs(cal[field] - cal["target"][field]) <= tol, (key, lv, cal)


def test_validate_table_rejects_bad_tables():
    good = {"a": {"param": "eps", "rule": "linf", "low": {"eps": 1}, "medium": {"eps": 2}, "high": {"eps": 3}}}
    validate_table(good)
    bad = copy.deepcopy(good)
    del bad["a"]["high"]
    with pytest.raises(InputError, match="lacks level"):
        validate_table(bad)
    bad = copy.deepcopy(good)
    bad["a"]["medium"]["eps"] = 5
    with pytest.raises(InputError, match="increase"):
        validate_table(bad)
    bad = copy.deepcopy(good)
    bad["a"]["rule"] = "vibes"
    with pytest.raises(InputError, match="rule"):
        validate_table(bad)
    bad = copy.deepcopy(good)
    bad["a"]["rule"] = "ssim"
    bad["a"]["calibration"] = {"low": {"ssim": 0.9}, "medium": {"ssim": 0.95}, "high": {"ssim": 0.8}}
    with pytest.raises(InputError, match="ssim"):
        validate_table(bad)
    with pytest.raises(InputError):
        validate_table([1, 2])
    assert set(RULES) == {"linf", "ssim", "psnr", "ssim_rgb", "fixed"}


def test_fixed_target_rules():
    """cadv aims at the study's RGB SSIM categories and the sparse attacks at its PSNR levels
    (not at ifgsm's medians): a positional argument once shifted into ``per_step`` silently
    turned both into reference targets."""
    assert calibration.rule_for("cadv").targets == "ssim-rgb-fixed"
    assert calibration.rule_for("patch-rs").targets == "psnr-fixed"
    assert not calibration.rule_for("cadv").per_step and calibration.rule_for("madc").per_step
    with pytest.raises(TypeError):
        calibration.Rule("lr", "ssim", 1e-4, 0.1, "log", "psnr-fixed")   # keyword-only now


def test_search_finds_closest_grid_point():
    """Bracketing search on a known monotone function: the index whose value is nearest."""
    grid = np.geomspace(1e-4, 1e-1, 2049)
    calls = []

    def f(i):
        calls.append(i)
        return float(np.log(grid[i]))           # increasing in i
    known = {}
    for target in (np.log(3e-4), np.log(2e-3), np.log(5e-2)):
        i, _ = calibration._search(f, len(grid), target, known, tol=1e-3, max_iter=30)
        assert abs(np.log(grid[i]) - target) <= 2e-3
    assert len(calls) == len(set(calls)) and len(calls) < 40        # cached, no re-evaluation
    # a target out of reach returns the grid end
    i, _ = calibration._search(f, len(grid), np.log(10.0), known, tol=1e-3, max_iter=5)
    assert i == len(grid) - 1


def test_calibrate_command_end_to_end(tmp_path):
    """2 images, 64 px, one ℓ∞ attack (no search) and one SSIM-matched attack (searched)."""
    out = tmp_path / "t.json"
    code = main(["calibrate-budgets", "--limit", "2", "--size", "64", "--attacks", "fgsm,korhonen-et-al",
                 "--fit", "0", "--max-iter", "4", "--out", str(out)])
    assert code == 0
    table = json.loads(out.read_text())
    validate_table(table)
    src = table["_source"]
    assert src["metric"] == "iqg-cnn" and src["n_images"] == 2 and src["size"] == 64
    assert "calibrate-budgets" in src["command"] and src["version"]
    assert table["fgsm"]["rule"] == "linf" and table["fgsm"]["medium"] == {"eps": 4 / 255}
    assert table["fgsm"]["calibration"]["medium"]["linf_max"] <= 4 / 255 + 1e-6
    k = table["korhonen-et-al"]
    assert k["rule"] == "ssim" and k["param"] == "lr"
    ref = src["reference"]
    for lv in LEVELS:
        assert k["calibration"][lv]["target"]["ssim"] == pytest.approx(ref[lv]["ssim"])
    # the middle level lies between the others, and near its target (4 search steps)
    assert k["low"]["lr"] < k["medium"]["lr"] < k["high"]["lr"]
    assert abs(k["calibration"]["medium"]["ssim"] - ref["medium"]["ssim"]) < 0.01


@pytest.mark.parametrize("argv, message", [
    (["--limit", "0"], "limit"),
    (["--size", "4"], "size"),
    (["--attacks", "no-such-attack"], "unknown attack"),
    (["--metric", "no-such-metric"], "no-such-metric"),
])
def test_calibrate_command_bad_input_exit_2(tmp_path, capsys, argv, message):
    code = main(["calibrate-budgets", "--out", str(tmp_path / "x.json"), *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_calibrate_budgets_api_errors():
    with pytest.raises(InputError, match="queries"):
        calibration.calibrate_budgets(queries=0)
    with pytest.raises(InputError, match="has .* items"):
        calibration.calibrate_budgets(data="bundled:levels=2,contents=astronaut", limit=50, size=32,
                                      attacks=["fgsm"])
