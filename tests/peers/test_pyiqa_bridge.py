"""The pyiqa bridge (``create_metric("pyiqa:NAME")``), run inside the peer venv where pyiqa is installed.

Only metrics that need no downloaded weights: psnr, ssim, fsim (pure formulas in pyiqa) and niqe,
whose parameter file is a download — it is given our shipped pristine model (converted to .mat)
through the bridge's ``options``. The bridge must return exactly pyiqa's own forward values (it
calls the same network), with gradients, the declared mode/direction and a numeric score range.
"""
import json

import numpy as np
import torch
from skimage import data

from iqaguard.images import to_tensor

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]

SCRIPT = f"""
import sys
sys.path.insert(0, {str(ROOT / 'src')!r})
import json, scipy.io, torch, pyiqa
import iqaguard as ig
from iqaguard.errors import InputError
from iqaguard.metrics.niqe import pristine_params
p = pristine_params()
scipy.io.savemat("niqe.mat", {{"mu_prisparam": p["mu_pris_param"], "cov_prisparam": p["cov_pris_param"]}})
x, y = torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["y"])
names = ig.list_metrics()
outputs["n_pyiqa_listed"] = sum(n.startswith("pyiqa:") for n in names)
outputs["n_pyiqa"] = len(pyiqa.list_models())
outputs["listed_psnr"] = "pyiqa:psnr" in names and "brisque" in names
for name, opts in [("psnr", ""), ("ssim", ""), ("fsim", ""), ("niqe", json.dumps({{"pretrained_model_path": "niqe.mat"}}))]:
    m = ig.create_metric("pyiqa:" + name, options=opts)
    again = ig.create_metric(m.name, **m.params)
    yy = y.clone().requires_grad_(True)
    s = m(yy, x) if m.mode == "FR" else m(yy)
    (g,) = torch.autograd.grad(s.sum(), yy)
    ref = pyiqa.create_metric(name, **json.loads(opts or "{{}}"))
    r = ref(y, x) if m.mode == "FR" else ref(y)
    outputs[name + "_ours"] = s.detach()
    outputs[name + "_pyiqa"] = r.flatten()
    outputs[name + "_grad_ok"] = bool(torch.isfinite(g).all() and (g.flatten(1).abs().sum(1) > 0).all())
    outputs[name + "_meta"] = json.dumps([m.mode, m.lower_better, list(m.score_range), m.params, again.params == m.params])
try:
    ig.create_metric("pyiqa:no-such-metric")
    outputs["unknown_error"] = ""
except InputError as e:
    outputs["unknown_error"] = str(e)
try:
    ig.create_metric("pyiqa:maniqa")          # needs weights that are not in the cache: no download
    outputs["weights_error"] = ""
except InputError as e:
    outputs["weights_error"] = str(e)
"""


def test_bridge_in_peer_venv(peer):
    crops = [data.astronaut()[100:292, 100:292], data.coffee()[100:292, 200:392]]
    x = torch.cat([to_tensor(c) for c in crops])
    g = torch.Generator().manual_seed(1)
    y = ((x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1) * 255).round() / 255
    out = peer.run(SCRIPT, {"x": x.numpy(), "y": y.numpy()})

    assert int(out["n_pyiqa_listed"]) == int(out["n_pyiqa"]) > 50      # every pyiqa metric is listed
    assert bool(out["listed_psnr"])
    expected = {  # mode, lower_better, score range (study/iqaguard table, else pyiqa's model card)
        "psnr": ("FR", False, [10.0, 50.0]), "ssim": ("FR", False, [0.0, 1.0]),
        "fsim": ("FR", False, [0.0, 1.0]), "niqe": ("NR", True, [1.41408, 28.7371]),
    }
    for name, (mode, lower, rng) in expected.items():
        m_mode, m_lower, m_range, params, roundtrip = json.loads(str(out[name + "_meta"]))
        assert (m_mode, m_lower) == (mode, lower), name
        assert np.allclose(m_range, rng), (name, m_range)
        assert roundtrip and set(params) == {"device", "options", "score_range"}
        assert bool(out[name + "_grad_ok"]), name
        # same network, same input: identical up to float32 rounding
        np.testing.assert_allclose(out[name + "_ours"], out[name + "_pyiqa"], rtol=1e-6, atol=1e-6)
    assert "no metric 'no-such-metric'" in str(out["unknown_error"])
    assert "could not build 'maniqa'" in str(out["weights_error"])


def test_score_range_table_maps_study_names_and_card_text():
    from iqaguard.metrics.pyiqa_bridge import score_range_for

    assert score_range_for("clipiqa", "0, 1") == (0.0, 1.0)               # study 'clip-iqa'
    assert score_range_for("paq2piq", "~0, ~100") == (58.3804, 84.1711)   # study bounds win
    assert score_range_for("hyperiqa", "~0, ~1") == (0.0, 1.0)            # study scale differs: card
    assert score_range_for("topiq_nr", "~0, ~1") == (0.0, 1.0)
    assert score_range_for("nrqm", "~0, ~10") == (0.0, 10.0)
    import pytest
    from iqaguard.errors import InputError
    with pytest.raises(InputError, match="score_range"):
        score_range_for("pi", "~0, ~")
