import subprocess
import sys
import textwrap

import pytest

import iqaguard as ig
from iqaguard import InputError
from iqaguard.registry import DEFENSES, Registry, canonical


def test_lists_are_sorted_and_filtered():
    names = ig.list_defenses()
    assert names == sorted(names) and "jpeg" in names
    assert ig.list_defenses("*blur") == [n for n in names if n.endswith("blur")]
    assert set(ig.list_metrics()) >= {"psnr", "ssim", "ms_ssim", "niqe"}
    assert set(ig.list_attacks()) >= {"fgsm", "ifgsm", "mifgsm", "pgd"}
    assert "bundled" in ig.list_datasets()


def test_unknown_name_suggests():
    with pytest.raises(InputError, match="unknown defense 'jpg'.*jpeg"):
        ig.create_defense("jpg")


def test_unknown_parameter_lists_parameters():
    with pytest.raises(InputError, match="no parameter 'qualty'.*quality"):
        ig.create_defense("jpeg", qualty=3)


@pytest.mark.parametrize("kind", ["metric", "attack", "defense"])
def test_params_round_trip_for_every_method(kind):
    create = getattr(ig, f"create_{kind}")
    for name in getattr(ig, f"list_{kind}s")():
        try:
            obj = create(name)
        except InputError as exc:  # methods whose published weights are not on this machine
            assert "weights file" in str(exc), str(exc)
            continue
        again = create(name, **obj.params)
        assert again.params == obj.params
        assert canonical(again) == canonical(obj)
        spec_again = create(canonical(obj))
        assert spec_again.params == obj.params


def test_spec_and_keywords_merge():
    d = ig.create_defense("jpeg:quality=30")
    assert d.params["quality"] == 30
    assert ig.create_defense("jpeg:quality=30", quality=70).params["quality"] == 70


def test_register_twice_is_an_error():
    reg = Registry("thing", "iqaguard.test-nothing")
    reg.register("a", lambda: None)
    with pytest.raises(ValueError):
        reg.register("a", lambda: 1)



def test_registered_lasts_for_the_block_only():
    reg = Registry("thing", "iqaguard.test-nothing")
    factory = lambda: 42          # noqa: E731
    with reg.registered("temp", factory):
        assert reg.names() == ["temp"] and reg.factory("temp") is factory
    assert reg.names() == []
    with pytest.raises(ValueError), reg.registered("x", factory), reg.registered("x", lambda: 1):
        pass                      # a clash still raises, and the first is removed on the way out
    assert reg.names() == []
    reg.register("kept", factory)
    reg.unregister("kept")
    assert reg.names() == []
    with pytest.raises(KeyError):
        reg.unregister("kept")


PLUGIN = '''
import torch
from iqaguard.defenses.base import Purifier


class Invert(Purifier):
    """A test plugin: 1 - x."""

    def __init__(self, amount: float = 1.0):
        self.amount = amount

    def transform(self, x, gens):
        return (1 - x) * self.amount + x * (1 - self.amount)
'''


def test_entry_point_plugin_is_discovered(tmp_path):
    """A third-party package installed into a temp dir registers a defense by entry point."""
    src = tmp_path / "src"
    (src / "iqaguard_invert").mkdir(parents=True)
    (src / "iqaguard_invert" / "__init__.py").write_text(PLUGIN)
    (src / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "iqaguard-invert"
        version = "0.0.1"
        [project.entry-points."iqaguard.defenses"]
        invert = "iqaguard_invert:Invert"
        [tool.setuptools]
        packages = ["iqaguard_invert"]
    """))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(src)], check=True)
    code = ("import iqaguard as ig, torch; print(ig.list_defenses('inv*')); "
            "d = ig.create_defense('invert:amount=1.0'); x = torch.zeros(1,3,8,8); "
            "print(float(d.purify(x).mean()))")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "['invert']" in out.stdout
    assert out.stdout.strip().endswith("1.0")
    cli = subprocess.run([sys.executable, "-m", "iqaguard.cli", "list", "defenses"], capture_output=True,
                         text=True, env=env, check=True)
    assert "invert" in cli.stdout.split()
