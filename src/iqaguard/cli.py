"""The ``iqaguard`` command: list, run, report, score.

Bad input (unknown method, malformed spec, unreadable image) is a one-line error and exit
code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import InputError

KINDS = ("metrics", "attacks", "defenses", "datasets")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iqaguard", description="Benchmark defenses against adversarial attacks on IQA metrics.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")

    ls = sub.add_parser("list", help="list registered methods")
    ls.add_argument("kind", nargs="?", choices=KINDS, help="which registry (default: all)")
    ls.add_argument("pattern", nargs="?", default=None, help="fnmatch filter, e.g. 'jpeg*'")

    run = sub.add_parser("run", help="run a benchmark (no flags: the quick suite on bundled data)")
    run.add_argument("--metric", "-m", action="append", metavar="SPEC", help="metric spec (repeatable)")
    run.add_argument("--attack", "-a", action="append", metavar="SPEC", help="attack spec, e.g. ifgsm:eps=4/255")
    run.add_argument("--defense", "-d", action="append", metavar="SPEC", help="defense spec, e.g. jpeg:quality=50")
    run.add_argument("--data", metavar="SPEC", help="dataset spec: bundled (default), folder:/path, …")
    run.add_argument("--limit", type=int, help="use the first N images of the dataset")
    run.add_argument("--store", metavar="FILE", help="SQLite store (default: OUT/iqaguard.db)")
    run.add_argument("--out", default="iqaguard-out", metavar="DIR", help="output folder (default: ./iqaguard-out)")
    run.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    run.add_argument("--device", default="cpu", help="torch device (default cpu)")
    run.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--adaptive", nargs="?", const="all", metavar="DEFENSES",
                     help="the adaptive column (on by default for every defense): every attack run against the "
                          "defended metric itself (direct, BPDA, EOT, or queries for black-box attacks); "
                          "optionally only for a comma-separated list of defense specs")
    run.add_argument("--no-adaptive", action="store_true",
                     help="transfer attacks only, for speed: cells are labelled transfer-only, never reliable")
    run.add_argument("--cert-eps", type=float, default=0.25, metavar="EPS",
                     help="ℓ2 radius certified defenses certify (default 0.25)")
    run.add_argument("--wrapper", default="auto", choices=["auto", "bpda", "eot", "bpda+eot", "none"],
                     help="adaptive wrapper for white-box attacks (default auto: BPDA if not differentiable, "
                          "EOT if randomized)")
    run.add_argument("--eot-k", type=int, default=None, metavar="K",
                     help="EOT draws per gradient (default 10; certified defenses at least 16)")
    run.add_argument("--adaptive-limit", type=int, default=None, metavar="N",
                     help="adaptive column on the first N images only (default: all)")
    run.add_argument("--train-images", type=int, default=32, metavar="N",
                     help="training images for trainable attacks, disjoint from the evaluated ones (default 32)")
    run.add_argument("--retry-failed", action="store_true",
                     help="recompute cells that failed in an earlier run (default: keep them failed)")
    run.add_argument("--workers", default=None, metavar="N",
                     help="run on a local Dask cluster of N worker processes (needs iqaguard[dask])")
    run.add_argument("--scheduler", default=None, metavar="ADDR",
                     help="run on an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (needs iqaguard[dask])")

    rep = sub.add_parser("report", help="rebuild the report from a store")
    rep.add_argument("--store", default="iqaguard-out/iqaguard.db", metavar="FILE")
    rep.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the store's folder)")
    rep.add_argument("--run", default=None, metavar="RUN_ID", help="which run of the store (default: the last)")
    rep.add_argument("--list-runs", action="store_true", help="list every run of the store and exit")

    td = sub.add_parser("train-defense", help="train a defense ahead of a run (cached; the run then trains nothing)")
    td.add_argument("defense", metavar="SPEC", help="trained defense spec, e.g. at-pgd")
    td.add_argument("--metric", "-m", required=True, metavar="SPEC", help="metric to fine-tune")
    td.add_argument("--data", default="bundled", metavar="SPEC", help="dataset spec (default bundled)")
    td.add_argument("--limit", type=int, required=True,
                    help="the run's --limit: training uses dataset images after the first LIMIT (disjoint)")
    td.add_argument("--train-images", type=int, default=32, metavar="N", help="training images (default 32)")
    td.add_argument("--out", default="iqaguard-out", metavar="DIR", help="the run's output folder (cache under DIR/trainable)")
    td.add_argument("--no-progress", action="store_true")
    ce = sub.add_parser("certify", help="certified score interval of images under a smoothed metric")
    ce.add_argument("images", nargs="+", metavar="IMAGE")
    ce.add_argument("--metric", "-m", required=True, metavar="SPEC")
    ce.add_argument("--defense", "-d", default="ms", metavar="SPEC", help="certified defense (default ms)")
    ce.add_argument("--eps", type=float, default=0.25, help="ℓ2 radius to certify (pixels in [0,1]; default 0.25)")
    ce.add_argument("--alpha", type=float, default=None, help="failure probability (default: the defense's, 0.001)")
    ce.add_argument("--seed", type=int, default=0)
    ce.add_argument("--ref", action="append", metavar="IMAGE", help="reference image per IMAGE (FR metrics)")
    sc = sub.add_parser("score", help="score one image with a metric")
    sc.add_argument("--metric", "-m", required=True, metavar="SPEC")
    sc.add_argument("image")
    sc.add_argument("--ref", metavar="IMAGE", help="reference image for full-reference metrics")
    sc.add_argument("--device", default="cpu")

    sm = sub.add_parser("submit", help="run a leaderboard suite for one defense; write its entries and evidence")
    sm.add_argument("defense", metavar="SPEC", help="defense spec (a registered name, plugins included)")
    sm.add_argument("--suite", default="quick", metavar="NAME|FILE", help="quick (default), standard, or a suite JSON")
    sm.add_argument("--out", default="leaderboard/entries", metavar="DIR", help="entries folder (default leaderboard/entries)")
    sm.add_argument("--work", default=None, metavar="DIR", help="folder for the run, kept: empty, or an interrupted submission of the same defense and suite "
                         "to resume (default: a new temporary one)")
    sm.add_argument("--metrics", default=None, metavar="M[,M...]",
                    help="only these of the suite's metrics (default all); splits a costly defense into jobs")
    sm.add_argument("--device", default="cpu")
    sm.add_argument("--no-progress", action="store_true")
    vf = sub.add_parser("verify", help="recompute an entry from its evidence bundle and a sample of its cells from scratch")
    vf.add_argument("entry", metavar="ENTRY", nargs="+",
                    help="entry JSON (its bundle is next to it), or a folder of entries (searched recursively)")
    vf.add_argument("--sample", type=int, default=4, metavar="N", help="cells (attack × image) recomputed (default 4; 0 = none)")
    vf.add_argument("--entries", type=int, default=None, metavar="K",
                    help="recompute cells in only K of the entries, picked with --seed; every entry is still "
                         "checked against its bundle (default: recompute in all)")
    vf.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    vf.add_argument("--tolerance", type=float, default=1e-3, metavar="T",
                    help="per-image score tolerance as a fraction of the metric's range (default 1e-3)")
    vf.add_argument("--device", default="cpu")
    lb = sub.add_parser("leaderboard", help="the leaderboard site")
    lbs = lb.add_subparsers(dest="lb_command")
    lbb = lbs.add_parser("build", help="render the static site from entries (no code from entries runs)")
    lbb.add_argument("--entries", default="leaderboard/entries", metavar="DIR")
    lbb.add_argument("--out", required=True, metavar="DIR")

    cb = sub.add_parser("calibrate-budgets", help="recompute the attacks' low/medium/high budgets and write the table")
    cb.add_argument("--metric", "-m", default="iqg-cnn", metavar="SPEC", help="metric attacked (default iqg-cnn)")
    cb.add_argument("--data", default="bundled:levels=2", metavar="SPEC", help="calibration images (default bundled:levels=2)")
    cb.add_argument("--limit", type=int, default=8, help="calibration images (default 8)")
    cb.add_argument("--size", type=int, default=128, help="images are resized to SIZE×SIZE (default 128)")
    cb.add_argument("--attacks", "-a", default=None, metavar="A,B", help="comma-separated attack keys (default: all)")
    cb.add_argument("--fit", type=int, default=4, help="further images to fit trainable attacks on (default 4)")
    cb.add_argument("--queries", type=int, default=300, help="query cap for measuring black-box attacks (default 300)")
    cb.add_argument("--max-iter", type=int, default=6, help="search steps per level (default 6)")
    cb.add_argument("--seed", type=int, default=0)
    cb.add_argument("--merge", action="store_true", help="write the shipped table with the calibrated entries replaced")
    cb.add_argument("--out", required=True, metavar="FILE", help="output JSON table")
    return p


def dataset_spec(text: str) -> str:
    """``koniq10k:/data/koniq`` is shorthand for ``koniq10k:root='/data/koniq'``."""
    name, sep, rest = text.partition(":")
    if sep and rest and "=" not in rest:
        return f"{name}:root={rest!r}"
    return text


def _cmd_list(args) -> int:
    import iqaguard as ig
    from .registry import ATTACKS, DATASETS, DEFENSES, METRICS

    regs = {"metrics": METRICS, "attacks": ATTACKS, "defenses": DEFENSES, "datasets": DATASETS}
    kinds = [args.kind] if args.kind else list(KINDS)
    for kind in kinds:
        reg = regs[kind]
        if not args.kind:
            print(f"{kind}:")
        for name in reg.names(args.pattern):
            try:
                defaults = reg.defaults(name)
            except Exception:
                defaults = {}
            shown = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
            print(f"{'  ' if not args.kind else ''}{name}" + (f"  ({shown})" if shown else ""))
    del ig
    return 0


def _cmd_run(args) -> int:
    from .paths import output_dir, output_file

    output_dir(args.out, "--out")               # before any work: nothing is created on error
    if args.store:
        output_file(args.store, "--store")
    data = dataset_spec(args.data) if args.data else None
    adaptive = None
    if args.no_adaptive:
        adaptive = False
    elif args.adaptive == "all":
        adaptive = True
    elif args.adaptive:
        adaptive = _split_specs(args.adaptive)
    workers = _workers(args.workers)
    import iqaguard as ig

    result = ig.benchmark(metrics=args.metric, attacks=args.attack, defenses=args.defense, dataset=data,
                          limit=args.limit, store=args.store, out=args.out, seed=args.seed,
                          device=args.device, batch_size=args.batch_size, progress=not args.no_progress,
                          adaptive=adaptive, wrapper=args.wrapper, eot_k=args.eot_k,
                          adaptive_limit=args.adaptive_limit, train_images=args.train_images,
                          cert_eps=args.cert_eps, retry_failed=args.retry_failed, workers=workers,
                          scheduler=args.scheduler)
    if adaptive is False:
        print("note: --no-adaptive: every defended cell is transfer-only (never labelled reliable)")
    print(f"cells: {result.computed} computed, {result.reused} reused, {result.errors} failed")
    _print_failures(result.failures)
    for name, path in result.files.items():
        print(f"{name:8s} {path}")
    if "report" in result.files:
        print(f"report: open {Path(result.files['report']).resolve()}")
    return 1 if result.errors else 0


def _print_failures(failures) -> None:
    """Failed cells grouped by method and error: how many, and why (never averaged into a score)."""
    if failures is None or failures.empty:
        return
    from .registry import ATTACKS, DEFENSES, METRICS, short_spec

    groups = failures.groupby(["metric", "attack", "defense", "error"], sort=False).size()
    for (m, a, d, err), n in groups.items():
        names = " × ".join(short_spec(r, s) for r, s in ((METRICS, m), (ATTACKS, a), (DEFENSES, d)))
        print(f"failed: {n} cell(s) {names}: {err}")
    print("failed cells are kept failed on a rerun; rerun with --retry-failed to compute them again")


def _workers(text: str | None) -> int | None:
    """``--workers`` as a positive integer (parsed here, so a bad value is a one-line error)."""
    if text is None:
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise InputError(f"--workers must be a positive integer, got {text!r}")
    return n


def _split_specs(text: str) -> list[str]:
    """``jpeg:quality=50,random-noise`` → specs: a comma starts a new spec unless a ``key=`` follows it."""
    import re

    return [p for p in re.split(r",(?![\w.-]+=)", text) if p]


def _cmd_report(args) -> int:
    from .paths import output_dir, readable_file
    from .report import report_from_store

    readable_file(args.store, "--store")
    if args.list_runs:
        return _list_runs(args.store)
    output_dir(args.out or Path(args.store).parent, "--out")   # default: the store's folder

    result = report_from_store(args.store, args.out, run_id=args.run)
    for name, path in result.files.items():
        print(f"{name:8s} {path}")
    return 0


def _list_runs(store) -> int:
    """Every run of a store, oldest first: id, start (UTC), status and grid size (read-only)."""
    import datetime
    import json

    from .evaluation.store import Store

    with Store(store, readonly=True) as st:
        runs = st.runs()
    for r in runs.itertuples():
        spec = json.loads(r.spec)
        started = datetime.datetime.fromtimestamp(r.started, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        grid = " × ".join(f"{len(spec.get(k, []))} {k}" for k in ("metrics", "attacks", "defenses"))
        print(f"{r.run_id}  {started} UTC  {r.status:11s}  {grid} × {spec.get('images', '?')} images")
    return 0


def _cmd_train_defense(args) -> int:
    from .defenses.training.command import train_defense_command
    from .paths import output_dir

    output_dir(args.out, "--out")

    r = train_defense_command(args.defense, args.metric, dataset_spec(args.data), args.limit, args.out,
                              args.train_images, progress=not args.no_progress)
    what = f"trained in {r['seconds']:.1f} s ({r['grad_calls']} gradient steps)" if r["trained"] else "already trained"
    print(f"{r['defense']} on {r['metric']}: {what} on {r['train_images']} images → {r['path']}")
    return 0


def _cmd_certify(args) -> int:
    from .defenses.certified.command import certify_command

    rows = certify_command(args.metric, args.defense, args.images, args.eps, args.alpha, args.seed, args.ref)
    print("image\tscore\tlo\thi\tabstained\teps\tforwards\tseconds")
    for r in rows:
        print(f"{r['image']}\t{r['score']:.6g}\t{r['lo']:.6g}\t{r['hi']:.6g}\t{r['abstained']}\t{r['eps']:g}"
              f"\t{r['forwards']}\t{r['seconds']:.2f}")
    return 0


def _cmd_score(args) -> int:
    import torch

    import iqaguard as ig
    from .images import load_image

    metric = ig.create_metric(args.metric).to(args.device).eval()
    if metric.mode == "NR" and args.ref:
        raise InputError(f"metric {args.metric!r} is no-reference and would ignore --ref; drop --ref "
                         f"or use a full-reference metric")
    x = load_image(args.image).to(args.device)
    with torch.no_grad():
        if metric.mode == "FR":
            if not args.ref:
                raise InputError(f"metric {args.metric!r} is full-reference: pass --ref IMAGE")
            ref = load_image(args.ref).to(args.device)
            if ref.shape != x.shape:
                raise InputError(f"--ref {args.ref!r} is {tuple(ref.shape[-2:])}, image is {tuple(x.shape[-2:])}")
            value = metric(x, ref)
        else:
            value = metric(x)
    direction = "lower is better" if metric.lower_better else "higher is better"
    print(f"{float(value[0]):.6g}\t{args.metric}\t{args.image}\t({direction})")
    return 0


def _cmd_calibrate_budgets(args) -> int:
    import json

    from .atomic import write_text
    from .attacks import calibration
    from .paths import output_file

    output_file(args.out, "--out")    # checked before the calibration, which takes minutes
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks else None
    table = calibration.calibrate_budgets(
        metric=args.metric, data=dataset_spec(args.data), limit=args.limit, size=args.size, attacks=attacks,
        fit=args.fit, queries=args.queries, seed=args.seed, max_iter=args.max_iter,
        log=lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.merge:
        from importlib import resources

        shipped = json.loads(resources.files("iqaguard.tables").joinpath("attack_budgets.json").read_text())
        table = calibration.merge_into(shipped, table)
    write_text(args.out, json.dumps(table, indent=1) + "\n")
    print(f"budget table: {args.out}")
    return 0


def _cmd_submit(args) -> int:
    from .leaderboard.submit import submit

    cmd = ["iqaguard", "submit", args.defense, "--suite", args.suite, "--out", args.out] \
        + (["--device", args.device] if args.device != "cpu" else []) \
        + (["--metrics", args.metrics] if args.metrics else [])
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    paths = submit(args.defense, args.suite, args.out, args.work, args.device, progress=not args.no_progress,
                   command=cmd, metrics=metrics)
    for p in paths:
        print(f"entry {p}")
    return 0


def _cmd_verify(args) -> int:
    from .leaderboard.verify import entry_files, pick_entries, verify

    files = entry_files(args.entry)
    deep = pick_entries(files, args.entries, args.seed)
    if len(files) > 1:
        print(f"verifying {len(files)} entries; cells recomputed in {len(deep)} (seed {args.seed})")
    failed = skipped = 0
    for f in files:
        rep = verify(f, sample=args.sample if f in deep else 0, seed=args.seed, tolerance=args.tolerance,
                     device=args.device, log=lambda m: print(m, file=sys.stderr, flush=True))
        for p in rep.problems:
            print(f"DISAGREE {p}")
        if rep.not_recomputed:
            print(f"NOT RECOMPUTED {f}: {rep.not_recomputed}")
            skipped += 1
        if rep.cells:
            print(f"recomputed {len(rep.cells)} cells ({rep.compared} scores, tolerance {args.tolerance:g}·R); "
                  f"adversarial PNGs identical: {rep.images_identical}/{rep.images_compared}")
        print(f"{'OK' if rep.ok else 'FAILED'}: {f}: {rep.checked_numbers} entry values checked against the bundle")
        failed += not rep.ok
    if len(files) > 1:
        print(f"{'OK' if not failed else 'FAILED'}: {len(files) - failed}/{len(files)} entries verified"
              + (f"; cells of {skipped} not recomputed: their input images differ on this machine" if skipped else ""))
    return 0 if not failed else 1


def _cmd_leaderboard(args) -> int:
    if args.lb_command != "build":
        raise InputError("usage: iqaguard leaderboard build [--entries DIR] --out DIR")
    from .leaderboard.site import build

    path = build(args.entries, args.out)
    print(f"leaderboard: open {path.resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        from ._version import __version__

        print(__version__)
        return 0
    commands = {"list": _cmd_list, "run": _cmd_run, "report": _cmd_report, "score": _cmd_score,
                "calibrate-budgets": _cmd_calibrate_budgets, "train-defense": _cmd_train_defense,
                "certify": _cmd_certify, "submit": _cmd_submit, "verify": _cmd_verify,
                "leaderboard": _cmd_leaderboard}
    if args.command is None:
        _parser().print_help()
        return 2
    try:
        return commands[args.command](args)
    except InputError as exc:
        print(f"iqaguard: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("iqaguard: interrupted (finished cells are saved; rerun to continue)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
