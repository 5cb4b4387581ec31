"""Convert the published BRISQUE SVR (libsvm text model + feature ranges) to tables/brisque_svr.npz.

Source: the ``brisque`` PyPI package (Apache-2.0, https://github.com/rehanguha/brisque), files
``brisque/models/svm.txt`` (libsvm epsilon-SVR, RBF, the LIVE BRISQUE ``allmodel``) and
``brisque/models/normalize.pickle`` (per-feature min/max used to scale to [-1, 1]). Only the data
files are read — the package's code is never imported; the pickle is read by a restricted
unpickler that accepts nothing but dicts, lists and numbers.

    python scripts/convert_brisque_model.py [--src DIR] [--out src/iqaguard/tables/brisque_svr.npz]

DIR defaults to the ``brisque/models`` folder of an installed package (e.g. in .venv-peers).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import pickle
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SVM_SHA256 = "19526fb799c4c7992ccc109fcfecddb25976ba024b194cd3ee275d27e8909c8d"
RANGE_SHA256 = "a91753fe7088efe0b40e4d091315201fdb067966fc6785cf465e1eab060acda9"


class _DataOnly(pickle.Unpickler):
    def find_class(self, module, name):  # no classes at all: plain containers only
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def parse_libsvm(text: str, n_features: int = 36) -> dict[str, np.ndarray]:
    """Header (svm_type, kernel_type, gamma, rho, …) and the SV block ``coef idx:val …``."""
    header, rest = text.split("\nSV\n", 1)
    head = dict(line.split(" ", 1) for line in header.strip().splitlines())
    if head["svm_type"] != "epsilon_svr" or head["kernel_type"] != "rbf":
        raise ValueError(f"expected an epsilon_svr with rbf kernel, got {head}")
    rows = [line.split() for line in rest.strip().splitlines()]
    coef = np.array([float(r[0]) for r in rows])
    sv = np.zeros((len(rows), n_features))
    for i, r in enumerate(rows):
        for item in r[1:]:
            k, v = item.split(":")
            sv[i, int(k) - 1] = float(v)          # libsvm is sparse: absent entries are 0
    if len(rows) != int(head["total_sv"]):
        raise ValueError("total_sv does not match the number of SV lines")
    return {"sv": sv, "coef": coef, "rho": np.float64(head["rho"]), "gamma": np.float64(head["gamma"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=None)
    ap.add_argument("--out", default=str(ROOT / "src/iqaguard/tables/brisque_svr.npz"))
    a = ap.parse_args(argv)
    src = Path(a.src) if a.src else Path(next(iter(
        glob.glob(str(ROOT / ".venv-peers/lib/python3*/site-packages/brisque/models"))), ""))
    svm_bytes = (src / "svm.txt").read_bytes()
    rng_bytes = (src / "normalize.pickle").read_bytes()
    for what, b, want in (("svm.txt", svm_bytes, SVM_SHA256), ("normalize.pickle", rng_bytes, RANGE_SHA256)):
        got = hashlib.sha256(b).hexdigest()
        if got != want:
            print(f"warning: {what} sha256 {got} differs from the converted release {want}", file=sys.stderr)
    import io
    ranges = _DataOnly(io.BytesIO(rng_bytes)).load()
    out = parse_libsvm(svm_bytes.decode())
    out["feat_min"] = np.array(ranges["min_"], dtype=np.float64)
    out["feat_max"] = np.array(ranges["max_"], dtype=np.float64)
    out["svm_sha256"] = np.array(SVM_SHA256)
    np.savez_compressed(a.out, **out)
    print(f"wrote {a.out}: {out['sv'].shape[0]} SVs, rho={float(out['rho'])}, gamma={float(out['gamma'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
