"""Speed of every built-in metric against its peers (pyiqa, piq, lpips, DISTS_pytorch), values checked.

What is measured. For each metric, on the same seeded inputs (crops of scikit-image photos, the
distorted copy = + N(0, 0.05²) noise, clipped and rounded to 8-bit levels; float32), in one run:
  * ``forward``: one call under ``torch.no_grad()``;
  * ``forward+backward``: ``score.sum().backward()`` w.r.t. the distorted input only (every
    network's parameters are frozen on both sides; pyiqa metrics are made with ``as_loss=True``).
Each row times ours and one peer alternately — one warm-up call each, then ``repeat`` rounds of
(ours, peer) — and reports the median of each side; ``speedup`` = peer_ms / ours_ms.

Arrangement. Both sides run in the *same* child process of the peer venv (torch 2.14.1 there):
ours is imported from this clone's ``src`` (PYTHONPATH, derived from this file's location), so both
use one torch build, one thread pool (``torch.set_num_threads(--threads)``, OMP/MKL likewise) and
one allocator state, and alternating within a process cancels drift from the other jobs sharing
the machine better than separate processes could. One child per metric keeps a failing peer local.
The peer venv is ``$IQAGUARD_PEER_PYTHON`` or ``<clone>/.venv-peers/bin/python`` (``make peers``).

Values. Before timing, each row compares our score with the peer's on the same inputs, for the
variant of ours that is defined like the peer's (``ours`` column); ``max_abs_diff`` is the largest
per-image difference. Tolerances are the calibration tests' (float32 vs float64 filtering,
summation order), source in brackets:
  psnr vs pyiqa ``psnr`` (our default) and piq ``psnr`` (``psnr:channel=rgb,mse_floor=1e-10``,
    piq adds no ε): 1e-4 dB [tests/peers/test_calibration_core.py];
  ssim / ms_ssim default vs pyiqa ``ssim`` / ``ms_ssim``: 2e-5; ``channel=y`` vs piq on the same
    rgb2ycbcr luma (piq's ``downsample=False``): 1e-5 [test_calibration_core.py];
  niqe vs pyiqa ``niqe`` given our shipped pristine model (its own file is a download): 1e-3
    [test_calibration_core.py; these noisy crops have no flat areas, see test_pyiqa_defaults.py];
  lpips / dists vs pyiqa, piq, ``lpips`` 0.1.4 and ``DISTS_pytorch`` 0.1, all on the same seeded
    random torchvision backbones (the ImageNet checkpoints are downloads): lpips 1e-5 absolute and
    1e-4 relative (random backbones give small distances), dists 1e-6 absolute
    [tests/peers/test_lpips_dists_peers.py]. piq's DISTS first resizes images whose short side
    exceeds 256 px; the dists inputs here are smaller, so it is the same definition.
  brisque: not compared. pyiqa's and piq's SVR (``brisque_svm_weights``, the MATLAB release's
    model) is a download, so they are timed with our SVR (LIVE's ``allmodel``, 770 SVs) loaded in
    their formats; their hard-coded ranges and ρ belong to the other model, so the scores differ
    by design (the features are compared in tests/peers/test_brisque_peers.py).
  iqg-cnn / iqg-resnet have no peer: the row compares the metric with the bare ``nn.Module``
    forward/backward of its network (the floor; the difference is input validation).

Offline. Everything runs without network: pyiqa's psnr/ssim/ms_ssim need no files; niqe, lpips,
dists and brisque get local files through their ``pretrained_model_path`` (our pristine model;
the heads shipped in the ``lpips`` wheel; ``DISTS_pytorch``'s ``weights.pt``; our SVR); piq's
``LPIPS``/``DISTS``/``brisque`` get the same heads / SVR by replacing ``torch.hub.load_state_dict_from_url``
/ ``load_url`` in the child; torchvision's ``alexnet``/``vgg16`` are replaced by fresh copies of
the seeded random networks, whose ``features`` ours loads through ``backbone_weights``.
A peer that fails anyway is reported in its row (``error``), never replaced by something else.

Load. On a machine shared with other jobs, multi-threaded timings are dominated by each op's
wait for its second thread to be scheduled (measured here at load 4-5 on 2 cores: every op
≥ 4-8 ms, 2-thread times 5-60× the 1-thread ones), which rewards fewer, larger ops rather than less
work; ``--threads 1`` then measures the work itself. ``setup`` records threads and wall time.

Targets (issue 15): forward+backward ≥ 10× pyiqa's; no slower than piq's and than the reference
packages (≥ 1.0) for both passes; forward ≥ 1.0 against pyiqa. iqg rows have no target.

Run: ``python benchmarks/bench_metrics.py [--threads 2] [--repeat N] [--metrics ssim,lpips]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = ROOT / "src"

# metric -> (N, C, H, W, repeats): sized so the whole script fits ~10 min on 2 cores (measured 15 min
# with 5 rounds for the classic metrics while the machine ran at load 4-5, hence 3 rounds there)
CASES = {
    "psnr": (4, 3, 384, 512, 7),
    "ssim": (2, 3, 384, 512, 3),
    "ssim-large": (2, 3, 512, 768, 3),
    "ms_ssim": (2, 3, 384, 512, 3),
    "niqe": (2, 3, 384, 512, 3),
    "brisque": (2, 3, 384, 512, 3),
    "lpips": (2, 3, 256, 384, 5),
    "lpips-vgg": (1, 3, 128, 192, 3),
    "dists": (1, 3, 128, 192, 3),
    "iqg-cnn": (4, 3, 384, 512, 5),
    "iqg-resnet": (4, 3, 384, 512, 5),
}
TARGET_PYIQA_FB = 10.0


def peer_python() -> Path:
    return Path(os.environ.get("IQAGUARD_PEER_PYTHON", ROOT / ".venv-peers" / "bin" / "python"))


def _target(peer: str, pass_: str) -> float | None:
    if peer.startswith("bare"):
        return None
    if peer == "pyiqa" and pass_ == "forward+backward":
        return TARGET_PYIQA_FB
    return 1.0


# ----------------------------------------------------------------------------------------------
# child side (runs in the peer venv)
# ----------------------------------------------------------------------------------------------

def _inputs(n, c, h, w, seed=0):
    """n distorted/reference pairs: crops of astronaut, coffee and rocket (then mirrored), noise σ=0.05, 8-bit."""
    import numpy as np
    import torch
    from skimage import data, transform
    srcs = [data.astronaut(), data.coffee(), data.rocket()]
    crops = []
    for i in range(n):
        img = srcs[i % 3]
        if img.shape[0] < h or img.shape[1] < w:
            s = max(h / img.shape[0], w / img.shape[1])
            img = (transform.rescale(img, s, channel_axis=2, anti_aliasing=True) * 255).round().astype(np.uint8)
        if (i // 3) % 2:
            img = img[:, ::-1]
        t, l = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        crops.append(img[t:t + h, l:l + w, :c])
    ref = torch.from_numpy(np.stack(crops).copy()).permute(0, 3, 1, 2).float().div(255).contiguous()
    g = torch.Generator().manual_seed(seed)
    x = ((ref + 0.05 * torch.randn(ref.shape, generator=g)).clamp(0, 1) * 255).round() / 255
    return x.contiguous(), ref


def _randomize(model, seed):
    """Seeded random conv weights and biases (the test's recipe: ImageNet weights are a download)."""
    import torch
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            torch.nn.init.normal_(m.bias, std=0.05)
    return model.eval()


def _backbones(tmp: Path) -> dict:
    """Save seeded random AlexNet / VGG-16 features once; torchvision's constructors then return copies."""
    import torch
    import torchvision
    paths = {"alex": tmp / "alexnet-owt-7be5be79.pth", "vgg": tmp / "vgg16-397923af.pth"}
    if not paths["alex"].exists():
        torch.save(_randomize(torchvision.models.alexnet(weights=None), 0).state_dict(), paths["alex"])
        vgg = _randomize(torchvision.models.vgg16(weights=None), 1)
        torch.save({k: v for k, v in vgg.state_dict().items() if k.startswith("features.")}, paths["vgg"])
    return paths


def _patch_offline(paths: dict, tmp: Path) -> None:
    """Point every download the peers would make at local files (see the module docstring)."""
    import numpy as np
    import torch
    import torchvision
    _load = torch.load
    builders = {"alex": torchvision.models.alexnet, "vgg": torchvision.models.vgg16}

    def fresh(net):
        def make(*a, **k):
            m = builders[net](weights=None)
            state = _load(str(paths[net]), map_location="cpu")
            (m if net == "alex" else m.features).load_state_dict(
                state if net == "alex" else {k[9:]: v for k, v in state.items()})
            return m.eval()
        return make

    torchvision.models.alexnet = fresh("alex")
    torchvision.models.vgg16 = fresh("vgg")
    import piq.perceptual
    piq.perceptual.vgg16 = torchvision.models.vgg16
    import DISTS_pytorch.DISTS_pt as dp
    dp.models = torchvision.models
    # DISTS_pytorch's weights.pt was saved from CUDA and is loaded without map_location
    torch.load = lambda *a, **k: _load(*a, **{"map_location": "cpu", **k})

    import lpips
    lp_dir = Path(lpips.__file__).parent / "weights" / "v0.1"
    dists_pt = Path(dp.__file__).parent / "weights.pt"

    def hub(url, *a, **k):
        if url.endswith("lpips_weights.pt"):
            s = _load(str(lp_dir / "vgg.pth"), map_location="cpu")
            return [s[f"lin{i}.model.1.weight"] for i in range(5)]
        if url.endswith("dists_weights.pt"):
            return _load(str(dists_pt), map_location="cpu")
        raise RuntimeError(f"offline: refusing to download {url}")
    torch.hub.load_state_dict_from_url = hub
    piq.perceptual.torch.hub.load_state_dict_from_url = hub

    from iqaguard.metrics.brisque import svr_model
    sv = svr_model()
    svr = (torch.from_numpy(sv["coef"]).float(), torch.from_numpy(sv["sv"]).float())
    torch.save(svr, tmp / "brisque_svr.pth")
    import piq.brisque  # noqa: F401  (the package rebinds the name piq.brisque to the function)
    sys.modules["piq.brisque"].load_url = lambda *a, **k: (svr[0].clone(), svr[1].clone())

    import scipy.io
    from iqaguard.metrics.niqe import pristine_params
    p = pristine_params()
    scipy.io.savemat(tmp / "niqe.mat", {"mu_prisparam": p["mu_pris_param"], "cov_prisparam": p["cov_pris_param"]})
    np.save(tmp / "lpips_dir.npy", np.array(str(lp_dir)))
    np.save(tmp / "dists_pt.npy", np.array(str(dists_pt)))


def _rows_for(case: str, tmp: Path, paths: dict):
    """[(peer label, ours spec, ours params, peer factory, tolerance or None, note)] for one metric."""
    import numpy as np
    import torch
    import piq
    import pyiqa
    from iqaguard.images import rgb_to_y
    lp_dir = Path(str(np.load(tmp / "lpips_dir.npy")))
    dists_pt = str(np.load(tmp / "dists_pt.npy"))

    def pyiqa_m(name, **kw):
        """(forward, forward+backward) callables: pyiqa's plain metric, and its ``as_loss=True``
        twin (the one whose gradient flows; it returns the batch mean, same work)."""
        def make():
            fns = []
            for as_loss in (False, True):
                m = pyiqa.create_metric(name, as_loss=as_loss, device="cpu", **kw).requires_grad_(False)
                fns.append((lambda m: lambda x, r: m(x, r) if m.metric_mode == "FR" else m(x))(m))
            return tuple(fns)
        return make

    def fn(f):
        return lambda: f

    y = lambda t: rgb_to_y(t)   # noqa: E731  the rgb2ycbcr luma our channel='y' reads
    alex, vgg = {"backbone_weights": str(paths["alex"])}, {"backbone_weights": str(paths["vgg"])}
    if case == "psnr":
        return [("pyiqa", "psnr", {}, pyiqa_m("psnr"), 1e-4, ""),
                ("piq", "psnr:channel=rgb,mse_floor=1e-10", {},
                 fn(lambda x, r: piq.psnr(x, r, data_range=1.0, reduction="none")), 1e-4, "")]
    if case in ("ssim", "ssim-large"):
        rows = [("piq", "ssim:channel=y", {}, fn(lambda x, r: piq.ssim(
            y(x), y(r), data_range=1.0, downsample=False, reduction="none")), 1e-5, "piq on the rgb2ycbcr luma")]
        return rows if case == "ssim-large" else [("pyiqa", "ssim", {}, pyiqa_m("ssim"), 2e-5, "")] + rows
    if case == "ms_ssim":
        return [("pyiqa", "ms_ssim", {}, pyiqa_m("ms_ssim"), 2e-5, ""),
                ("piq", "ms_ssim:channel=y", {}, fn(lambda x, r: piq.multi_scale_ssim(
                    y(x), y(r), data_range=1.0, reduction="none")), 1e-5, "piq on the rgb2ycbcr luma")]
    if case == "niqe":
        return [("pyiqa", "niqe", {}, pyiqa_m("niqe", pretrained_model_path=str(tmp / "niqe.mat")), 1e-3,
                 "pyiqa given our pristine model")]
    if case == "brisque":
        note = "peer given our SVR (its own is a download): values differ by design"
        return [("pyiqa", "brisque", {}, pyiqa_m("brisque", pretrained_model_path=str(tmp / "brisque_svr.pth")),
                 None, note),
                ("piq", "brisque", {}, fn(lambda x, r: piq.brisque(x, data_range=1.0, reduction="none")), None, note)]
    if case in ("lpips", "lpips-vgg"):
        import lpips
        net = "alex" if case == "lpips" else "vgg"

        def package():
            m = lpips.LPIPS(net=net, version="0.1", verbose=False).requires_grad_(False)
            return lambda x, r: m(x, r, normalize=True).reshape(-1)
        rows = [("pyiqa", "lpips", {"net": net, **(alex if net == "alex" else vgg)},
                 pyiqa_m("lpips" if net == "alex" else "lpips-vgg", pretrained_model_path=str(lp_dir / f"{net}.pth")),
                 1e-5, "random backbone"),
                ("lpips", "lpips", {"net": net, **(alex if net == "alex" else vgg)}, package, 1e-5, "random backbone")]
        if net == "vgg":
            def piq_lpips():
                m = piq.LPIPS(reduction="none").requires_grad_(False)
                return lambda x, r: m(x, r)
            rows.insert(1, ("piq", "lpips", {"net": "vgg", **vgg}, piq_lpips, 1e-5, "random backbone"))
        return rows
    if case == "dists":
        import DISTS_pytorch.DISTS_pt as dp

        def package():
            m = dp.DISTS().requires_grad_(False)
            return lambda x, r: m(x, r, require_grad=True, batch_average=False).reshape(-1)

        def piq_dists():
            m = piq.DISTS(reduction="none").requires_grad_(False)
            return lambda x, r: m(x, r)
        return [("pyiqa", "dists", vgg, pyiqa_m("dists", pretrained_model_path=dists_pt), 1e-6, "random backbone"),
                ("piq", "dists", vgg, piq_dists, 1e-6,
                 "random backbone; piq resizes a short side > 256 px first (not at this size)"),
                ("DISTS_pytorch", "dists", vgg, package, 1e-6, "random backbone")]
    if case in ("iqg-cnn", "iqg-resnet"):
        import iqaguard as ig

        def bare():
            net = ig.create_metric(case).net
            return lambda x, r: net(x)
        return [("bare nn.Module", case, {}, bare, 1e-6, "the network alone (floor)")]
    raise ValueError(case)


def _median(v):
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])


def _time_pair(f_ours, f_peer, repeats):
    """Alternate ours/peer after one warm-up each; medians in ms."""
    f_ours(), f_peer()
    t = ([], [])
    for _ in range(repeats):
        for i, f in enumerate((f_ours, f_peer)):
            s = time.perf_counter()
            f()
            t[i].append(time.perf_counter() - s)
    return _median(t[0]) * 1e3, _median(t[1]) * 1e3


def child(spec: dict) -> list[dict]:
    import torch
    torch.set_num_threads(spec["threads"])
    import iqaguard as ig
    tmp = Path(spec["tmp"])
    paths = _backbones(tmp)
    _patch_offline(paths, tmp)
    case = spec["case"]
    n, c, h, w, repeats = spec["shape"]
    x, ref = _inputs(n, c, h, w)
    rows = []
    for peer, ours_spec, params, make_peer, tol, note in _rows_for(case, tmp, paths):
        base = {"metric": case, "peer": peer, "ours": ours_spec + "".join(
            f",{k}=…" if k == "backbone_weights" else f",{k}={v}" for k, v in params.items()),
            "shape": [n, c, h, w], "repeats": repeats, "tolerance": tol, "note": note}
        ours = ig.create_metric(ours_spec, **params)
        f_ours = (lambda a, b: ours(a, b)) if ours.mode == "FR" else (lambda a, b: ours(a))
        try:
            f_peer = make_peer()
            f_peer, f_peer_fb = f_peer if isinstance(f_peer, tuple) else (f_peer, f_peer)
            with torch.no_grad():
                vo, vp = f_ours(x, ref).double(), f_peer(x, ref).double().reshape(-1)
        except Exception as exc:   # a peer that cannot run offline: say so in its row
            for p in ("forward", "forward+backward"):
                rows.append({**base, "pass": p, "ours_ms": None, "peer_ms": None, "speedup": None,
                             "max_abs_diff": None, "values_equal": None,
                             "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
            continue
        diff = float((vo - vp).abs().max())
        rel = float(((vo - vp).abs() / vp.abs().clamp_min(1e-30)).max())
        equal = None if tol is None else bool(diff <= tol)
        if case.startswith("lpips") and equal is not None:   # small distances: also 1e-4 relative (the test's)
            equal = equal and rel <= 1e-4
        values = {"max_abs_diff": diff, "max_rel_diff": rel, "values_equal": equal,
                  "ours_values": [round(v, 6) for v in vo.tolist()], "peer_values": [round(v, 6) for v in vp.tolist()]}

        def fwd(f):
            def run():
                with torch.no_grad():
                    f(x, ref)
            return run

        xg = x.clone().requires_grad_(True)

        def fb(f):
            def run():
                xg.grad = None
                f(xg, ref).sum().backward()
            return run

        for p, wrap, fp in (("forward", fwd, f_peer), ("forward+backward", fb, f_peer_fb)):
            to, tp = _time_pair(wrap(f_ours), wrap(fp), repeats)
            rows.append({**base, "pass": p, "ours_ms": round(to, 2), "peer_ms": round(tp, 2),
                         "speedup": round(tp / to, 3), **values})
    return rows


def child_info() -> dict:
    import importlib.metadata as md
    import torch
    import iqaguard
    info = {"torch": torch.__version__, "python": sys.version.split()[0], "iqaguard_from": str(Path(iqaguard.__file__).parent)}
    for pkg in ("torchvision", "pyiqa", "piq", "lpips", "DISTS_pytorch"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = None
    return info


# ----------------------------------------------------------------------------------------------
# parent side
# ----------------------------------------------------------------------------------------------

def _run_child(python: Path, payload: dict, tmp: Path, timeout: int = 900):
    spec_file = tmp / f"spec_{payload.get('case', 'info')}.json"
    out_file = spec_file.with_suffix(".out.json")
    spec_file.write_text(json.dumps(payload))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    threads = str(payload["threads"])
    env.update(PYTHONPATH=str(SRC), OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    r = subprocess.run([str(python), str(Path(__file__).resolve()), "--child", str(spec_file), str(out_file)],
                       capture_output=True, text=True, timeout=timeout, env=env, cwd=str(tmp))
    if r.returncode != 0:
        raise RuntimeError(f"child for {payload.get('case')!r} failed:\n{r.stderr[-3000:]}")
    return json.loads(out_file.read_text())


def _fmt(v, spec="{:.1f}"):
    return "—" if v is None else spec.format(v)


def print_table(result: dict) -> None:
    s = result["setup"]
    print(f"torch {s.get('torch')} (peer venv), {s['threads']} threads, float32; median of alternated rounds")
    print(f"{'metric':11s} {'shape':12s} {'peer':14s} {'pass':16s} {'ours ms':>9s} {'peer ms':>9s} "
          f"{'ratio':>7s} {'target':>6s} {'met':>4s} {'max|Δ|':>9s} {'tol':>7s} eq")
    for r in result["rows"]:
        shape = "x".join(map(str, r["shape"]))
        met = {True: "yes", False: "NO", None: "—"}[r.get("target_met")]
        eq = {True: "yes", False: "NO", None: "—"}[r.get("values_equal")]
        print(f"{r['metric']:11s} {shape:12s} {r['peer']:14s} {r['pass']:16s} {_fmt(r['ours_ms']):>9s} "
              f"{_fmt(r['peer_ms']):>9s} {_fmt(r['speedup'], '{:.2f}'):>7s} {r['target'] or '—':>6s} {met:>4s} "
              f"{_fmt(r['max_abs_diff'], '{:.1e}'):>9s} {_fmt(r['tolerance'], '{:.0e}'):>7s} {eq}"
              + (f"  ERROR {r['error']}" if r.get("error") else ""))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=None, help="timing rounds per row (default: per metric)")
    ap.add_argument("--metrics", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    ap.add_argument("--json", default="", help="also write the result to this file")
    args = ap.parse_args(argv)
    cases = [c.strip() for c in args.metrics.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown metrics {unknown}; valid: {', '.join(CASES)}")
    python = peer_python()
    setup = {"threads": args.threads, "dtype": "float32", "peer_python": str(python),
             "shapes": {c: list(CASES[c][:4]) for c in cases},
             "repeats": {c: args.repeat or CASES[c][4] for c in cases},
             "timing": "one warm-up each, then alternated (ours, peer) rounds; median",
             "inputs": "skimage astronaut/coffee/rocket centre crops; distorted = +N(0,0.05²), clipped, 8-bit"}
    result = {"name": "metrics", "setup": setup, "rows": []}
    if not python.exists():
        result["error"] = f"peer venv not found at {python} (run `make peers` or set IQAGUARD_PEER_PYTHON)"
        print(result["error"])
        return result
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_metrics_") as d:
        tmp = Path(d)
        setup.update(_run_child(python, {"case": "info", "threads": args.threads, "tmp": d}, tmp))
        for case in cases:
            n, c, h, w, rep = CASES[case]
            payload = {"case": case, "threads": args.threads, "tmp": d, "shape": [n, c, h, w, args.repeat or rep]}
            t = time.perf_counter()
            try:
                rows = _run_child(python, payload, tmp)
            except Exception as exc:
                rows = [{"metric": case, "peer": "?", "pass": "?", "shape": [n, c, h, w], "ours_ms": None,
                         "peer_ms": None, "speedup": None, "max_abs_diff": None, "tolerance": None,
                         "values_equal": None, "error": str(exc).splitlines()[-1][:300]}]
            for r in rows:
                tgt = _target(r["peer"], r["pass"])
                r["target"] = None if tgt is None else f">={tgt:g}"
                r["target_met"] = None if tgt is None or r["speedup"] is None else bool(r["speedup"] >= tgt)
            result["rows"] += rows
            print(f"  [{case}: {time.perf_counter() - t:.0f} s]", file=sys.stderr, flush=True)
    setup["wall_s"] = round(time.perf_counter() - t0, 1)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        payload = json.loads(Path(sys.argv[2]).read_text())
        out = child_info() if payload["case"] == "info" else child(payload)
        Path(sys.argv[3]).write_text(json.dumps(out))
    else:
        main()
