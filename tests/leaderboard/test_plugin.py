"""The example plugin (examples/iqaguard-bilateral): pip install → submit → verify → leaderboard build.

Installed with ``pip install --target`` into a temporary folder (no network, no build isolation, the
shared venv untouched); the CLI runs in a subprocess whose PYTHONPATH has that folder, so the defense
is found only through its entry point."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "iqaguard-bilateral"
TINY = Path(__file__).with_name("tiny_suite.json")

pytestmark = pytest.mark.slow


def _cli(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "iqaguard.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def test_plugin_install_submit_verify_build(tmp_path):
    site = tmp_path / "site-packages"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--quiet", "--target", str(site), str(PLUGIN)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src")])}
    listed = _cli(["list", "defenses", "bilateral*"], env, tmp_path)
    assert listed.returncode == 0 and listed.stdout.split()[0] == "bilateral-blur", listed.stderr

    sub = _cli(["submit", "bilateral-blur", "--suite", str(TINY), "--out", "entries", "--work", "work",
                "--no-progress"], env, tmp_path)
    assert sub.returncode == 0, sub.stderr
    entry = tmp_path / "entries" / "tiny" / "iqg-cnn" / "bilateral-blur.json"
    data = json.loads(entry.read_text())
    assert data["defense"]["paper"] == "Bilateral Filtering for Gray and Color Images"    # from the plugin class
    assert data["defense"]["spec"] == "bilateral-blur:kernel_size=5,sigma_color=0.1,sigma_space=1.5"

    ok = _cli(["verify", str(entry), "--sample", "1"], env, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK" in ok.stdout and "adversarial PNGs identical: 2/2" in ok.stdout

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / entry.with_suffix("").name).with_suffix(".evidence.zip").write_bytes(
        entry.with_name("bilateral-blur.evidence.zip").read_bytes())
    old = data["attacks"][0]["scores"]["robust_abs_gain"]["value"]
    data["attacks"][0]["scores"]["robust_abs_gain"]["value"] = old * 2
    (bad / "bilateral-blur.json").write_text(json.dumps(data))
    fail = _cli(["verify", str(bad / "bilateral-blur.json"), "--sample", "0"], env, tmp_path)
    assert fail.returncode == 1
    short = data["attacks"][0]["short"]
    assert f"DISAGREE attacks[{short}].scores.robust_abs_gain.value: entry {old * 2!r}, recomputed {old!r}" in fail.stdout

    built = _cli(["leaderboard", "build", "--entries", "entries", "--out", "board"], env, tmp_path)
    assert built.returncode == 0, built.stderr
    html = (tmp_path / "board" / "index.html").read_text()
    assert "bilateral-blur" in html and (tmp_path / "board" / "defense-tiny-bilateral-blur.html").is_file()
