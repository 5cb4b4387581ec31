"""SQLite store (WAL): runs with provenance, cells with status, per-image rows, attack cache.

The driver is the only writer. A cell's row and its ``done`` status are written in one
transaction, so a crash loses at most the cells in flight and never leaves a half-written row;
a rerun skips cells already done.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .._version import __version__
from ..errors import InputError
from ..paths import output_file, readable_file
from .rows import ROW_COLUMNS

SCHEMA_VERSION = 2
APPLICATION_ID = 0x49514731        # "IQG1": SQLite's application_id of an iqaguard store

_TEXT = {"cell", "run_id", "metric", "attack", "defense", "dataset", "image", "truth_kind", "group",
         "adaptive_wrapper", "family"}

# What each schema version added (additive migrations only: nothing is dropped or rewritten).
MIGRATIONS: dict[int, str] = {
    2: "application id; methods table (each method's metadata); run_cells (the cells of each run, so a "
       "report needs the store only); row columns family, RGB quality (q_ssim_rgb_*, q_psnr_rgb_*), "
       "certificates (cert_*), ℓ2 norms and costs. Rows written by version 1 keep their meaning: their "
       "metric specs are canonical (every parameter spelled out), and they have no RGB quality columns, "
       "so their similarity scores are empty rather than recomputed on another formula.",
}


def _sql_type(col: str) -> str:
    return "TEXT" if col in _TEXT else "REAL"


def _inspect(path: Path) -> tuple[int, int | None, int]:
    """(application_id, iqaguard schema version or None, number of schema objects) of an
    existing file, read-only."""
    uri = f"file:{path.resolve().as_posix()}?mode=ro"
    db = sqlite3.connect(uri, uri=True)
    try:
        app = db.execute("PRAGMA application_id").fetchone()[0]
        objects = db.execute("SELECT type, name FROM sqlite_master").fetchall()
        version = None
        if ("table", "meta") in objects:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row is not None and str(row[0]).isdigit() else None
        return app, version, len(objects)
    finally:
        db.close()


class Store:
    """One SQLite file. ``readonly=True`` opens it without writing anything (reports): older
    schema versions are read as they are; ``readonly=False`` upgrades them in place."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        label = str(self.path)
        # directory, symlink loop, permission denied, read-only: named before SQLite sees the file
        if readonly or os.path.lexists(self.path):
            readable_file(self.path, "store")
        if not readonly:
            output_file(self.path, "store")
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if readonly and not exists:
            raise InputError(f"store {label!r} is empty (0 bytes), not an iqaguard store")
        try:
            self.version = self._recognise(label) if exists else SCHEMA_VERSION
            if readonly:
                self.db = sqlite3.connect(f"file:{self.path.resolve().as_posix()}?mode=ro", uri=True,
                                          timeout=60, isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self._create()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"store {label!r} is not a usable iqaguard SQLite file: {exc}") from None

    def _recognise(self, label: str) -> int:
        """The schema version of an existing iqaguard store; InputError (file untouched) otherwise."""
        try:
            app, version, objects = _inspect(self.path)
        except sqlite3.DatabaseError as exc:
            raise InputError(f"store {label!r} is not an SQLite database ({exc})") from None
        if objects == 0 and app in (0, APPLICATION_ID):
            # No schema at all: a run killed between SQLite writing the header (journal_mode=WAL)
            # and the creating transaction's commit. It holds nothing, so it is created anew.
            if self.readonly:
                raise InputError(f"store {label!r} holds no tables yet (a run was stopped while creating "
                                 f"it); run again to create it")
            return SCHEMA_VERSION
        ours = app == APPLICATION_ID or (app == 0 and version == 1)
        if not ours or version is None:
            raise InputError(f"store {label!r} is an SQLite database that iqaguard did not create; "
                             f"it is left untouched (use another --store or --out)")
        if version > SCHEMA_VERSION:
            raise InputError(f"store {label!r} has schema version {version}, written by a newer iqaguard; "
                             f"this iqaguard ({__version__}) reads versions up to {SCHEMA_VERSION}")
        return version

    def _create(self) -> None:
        with self._transaction():
            self._create_tables()
            for col in ROW_COLUMNS:   # additive migration: columns added since the table was made
                if col not in self._columns("rows"):
                    self.db.execute(f'ALTER TABLE rows ADD COLUMN "{col}" {_sql_type(col)}')
            found = int(self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
            for v in range(found + 1, SCHEMA_VERSION + 1):
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"migrated_to_{v}", MIGRATIONS[v]))
            self.db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
            self.db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        self.version = SCHEMA_VERSION

    def _columns(self, table: str) -> set[str]:
        return {r[1] for r in self.db.execute(f'PRAGMA table_info("{table}")')}

    def _tables(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def _create_tables(self) -> None:
        cols = ", ".join(f'"{c}" {_sql_type(c)}' for c in ROW_COLUMNS if c != "cell")
        for stmt in f"""
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
            INSERT OR IGNORE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');
            CREATE TABLE IF NOT EXISTS runs (
                run_id TEXT PRIMARY KEY, started REAL, finished REAL, status TEXT,
                provenance TEXT, spec TEXT);
            CREATE TABLE IF NOT EXISTS cells (
                key TEXT PRIMARY KEY, run_id TEXT, metric TEXT, attack TEXT, defense TEXT,
                dataset TEXT, image TEXT, status TEXT, error TEXT, updated REAL);
            CREATE TABLE IF NOT EXISTS rows (cell TEXT PRIMARY KEY REFERENCES cells(key), {cols});
            CREATE TABLE IF NOT EXISTS adversarial (
                key TEXT PRIMARY KEY, metric TEXT, attack TEXT, dataset TEXT, image TEXT,
                path TEXT, attacked REAL, attack_seconds REAL, grad_calls REAL, queries REAL,
                linf REAL, run_id TEXT);
            CREATE INDEX IF NOT EXISTS rows_run ON rows(run_id);
            CREATE TABLE IF NOT EXISTS probes (
                key TEXT PRIMARY KEY, metric TEXT, defense TEXT, dataset TEXT, images REAL,
                grad_norm REAL, grad_finite REAL, adaptive_grad_norm REAL, wrapper TEXT,
                score_spread REAL, note TEXT, run_id TEXT);
            CREATE TABLE IF NOT EXISTS methods (
                spec TEXT, kind TEXT, name TEXT, short TEXT, family TEXT, threat TEXT,
                budget_param TEXT, budget_value REAL, white_box INTEGER, differentiable INTEGER,
                randomized INTEGER, paper TEXT, weights_licence TEXT, info TEXT,
                PRIMARY KEY (kind, spec));
            CREATE TABLE IF NOT EXISTS run_cells (
                run_id TEXT, cell TEXT, metric TEXT, attack TEXT, defense TEXT, image TEXT,
                PRIMARY KEY (run_id, cell));
        """.split(";"):
            if stmt.strip():
                self.db.execute(stmt)

    # -- runs ------------------------------------------------------------------------------
    def start_run(self, run_id: str, provenance: dict[str, Any], spec: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?)",
                        (run_id, time.time(), None, "running", json.dumps(provenance), json.dumps(spec)))

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        self.db.execute("UPDATE runs SET finished=?, status=? WHERE run_id=?", (time.time(), status, run_id))

    def runs(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM runs ORDER BY started", self.db)

    def last_run(self) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT run_id, provenance, spec FROM runs ORDER BY started DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return {"run_id": row[0], "provenance": json.loads(row[1]), "spec": json.loads(row[2])}

    def run(self, run_id: str | None = None) -> dict[str, Any] | None:
        """One run (the last one when ``run_id`` is None) with its provenance and spec."""
        q = "SELECT run_id, provenance, spec, status FROM runs "
        row = (self.db.execute(q + "WHERE run_id=?", (run_id,)).fetchone() if run_id is not None
               else self.db.execute(q + "ORDER BY started DESC LIMIT 1").fetchone())
        if row is None:
            return None
        return {"run_id": row[0], "provenance": json.loads(row[1]), "spec": json.loads(row[2]), "status": row[3]}

    # -- what a run covers, and the methods it used (so reports need nothing but the store) ---
    def write_run_cells(self, run_id: str, cells: Iterable[tuple[str, str, str, str, str]]) -> None:
        """(metric, attack, defense, image, key) of every cell in a run's plan."""
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO run_cells VALUES (?,?,?,?,?,?)",
                                [(run_id, k, m, a, d, img) for m, a, d, img, k in cells])

    def run_cells(self, run_id: str) -> pd.DataFrame | None:
        """The cells of a run in plan order; None for runs written before version 2."""
        if "run_cells" not in self._tables():
            return None
        df = pd.read_sql_query("SELECT cell, metric, attack, defense, image FROM run_cells WHERE run_id=? "
                               "ORDER BY rowid", self.db, params=[run_id])
        return df if len(df) else None

    METHOD_COLUMNS = ["spec", "kind", "name", "short", "family", "threat", "budget_param", "budget_value",
                      "white_box", "differentiable", "randomized", "paper", "weights_licence", "info"]

    def write_methods(self, records: list[dict[str, Any]]) -> None:
        cols = self.METHOD_COLUMNS
        with self._transaction():
            self.db.executemany(f"INSERT OR REPLACE INTO methods VALUES ({','.join('?' * len(cols))})",
                                [[_clean(r.get(c)) for c in cols] for r in records])

    def methods(self) -> pd.DataFrame:
        if "methods" not in self._tables():
            return pd.DataFrame(columns=self.METHOD_COLUMNS)
        return pd.read_sql_query("SELECT * FROM methods", self.db).reindex(columns=self.METHOD_COLUMNS)

    # -- cells -----------------------------------------------------------------------------
    def done_keys(self, keys: Iterable[str]) -> set[str]:
        return self._keys_with("done", keys)

    def failed_keys(self, keys: Iterable[str]) -> set[str]:
        return self._keys_with("error", keys)

    def _keys_with(self, status: str, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        found: set[str] = set()
        for i in range(0, len(keys), 900):
            chunk = keys[i:i + 900]
            q = f"SELECT key FROM cells WHERE status=? AND key IN ({','.join('?' * len(chunk))})"
            found.update(r[0] for r in self.db.execute(q, [status, *chunk]))
        return found

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        """Write finished cells and their rows atomically (one transaction)."""
        if not rows:
            return
        cols = ROW_COLUMNS
        now = time.time()
        row_sql = f"INSERT OR REPLACE INTO rows ({', '.join(chr(34) + c + chr(34) for c in cols)}) " \
                  f"VALUES ({','.join('?' * len(cols))})"
        cell_sql = "INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?)"
        with self._transaction():
            self.db.executemany(row_sql, [[_clean(r.get(c)) for c in cols] for r in rows])
            self.db.executemany(cell_sql, [
                (r["cell"], r["run_id"], r["metric"], r["attack"], r["defense"], r["dataset"], r["image"],
                 "done", None, now) for r in rows])

    def write_errors(self, cells: list[dict[str, Any]], error: str) -> None:
        now = time.time()
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?)", [
                (c["cell"], c["run_id"], c["metric"], c["attack"], c["defense"], c["dataset"], c["image"],
                 "error", error, now) for c in cells])

    def rows(self, keys: Iterable[str] | None = None, run_id: str | None = None) -> pd.DataFrame:
        if keys is not None:
            keys = list(keys)
            frames = []
            for i in range(0, len(keys), 900):
                chunk = keys[i:i + 900]
                frames.append(pd.read_sql_query(
                    f"SELECT * FROM rows WHERE cell IN ({','.join('?' * len(chunk))})", self.db, params=chunk))
            df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ROW_COLUMNS)
        elif run_id is not None:
            df = pd.read_sql_query("SELECT * FROM rows WHERE run_id=?", self.db, params=[run_id])
        else:
            df = pd.read_sql_query("SELECT * FROM rows", self.db)
        df = df.reindex(columns=ROW_COLUMNS)
        for col in ROW_COLUMNS:
            if col == "lower_better":
                df[col] = df[col].astype(bool)
            elif col not in _TEXT:
                df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        return df

    def errors(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM cells WHERE status='error'", self.db)
        return df if keys is None else df[df["key"].isin(set(keys))].reset_index(drop=True)

    # -- adversarial-image cache -------------------------------------------------------------
    def adversarial(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(keys)
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 900):
            chunk = keys[i:i + 900]
            cur = self.db.execute(
                f"SELECT * FROM adversarial WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            names = [d[0] for d in cur.description]
            for r in cur:
                rec = dict(zip(names, r))
                out[rec["key"]] = rec
        return out

    def adversarial_paths(self, image: str) -> dict[tuple[str, str], str]:
        """(metric, attack) -> saved transfer-attack PNG (relative to the store's folder) of one image."""
        cur = self.db.execute("SELECT metric, attack, path FROM adversarial WHERE image=?", (image,))
        return {(m, a): p for m, a, p in cur}

    def write_adversarial(self, records: list[dict[str, Any]]) -> None:
        cols = ["key", "metric", "attack", "dataset", "image", "path", "attacked", "attack_seconds",
                "grad_calls", "queries", "linf", "run_id"]
        with self._transaction():
            self.db.executemany(f"INSERT OR REPLACE INTO adversarial VALUES ({','.join('?' * len(cols))})",
                                [[_clean(r.get(c)) for c in cols] for r in records])

    # -- honesty probes (gradient norms, randomness of the defended score) ------------------
    _PROBE_COLS = ["key", "metric", "defense", "dataset", "images", "grad_norm", "grad_finite",
                   "adaptive_grad_norm", "wrapper", "score_spread", "note", "run_id"]

    def probes(self, keys: Iterable[str]) -> pd.DataFrame:
        keys = list(keys)
        frames = [pd.read_sql_query(f"SELECT * FROM probes WHERE key IN ({','.join('?' * len(keys[i:i + 900]))})",
                                    self.db, params=keys[i:i + 900]) for i in range(0, len(keys), 900)]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=self._PROBE_COLS)
        return df.reindex(columns=self._PROBE_COLS)

    def probes_for(self, metrics, defenses) -> pd.DataFrame:
        """Probes of these metrics × defenses (the latest per pair)."""
        m, d = list(metrics), list(defenses)
        if not m or not d:
            return pd.DataFrame(columns=self._PROBE_COLS)
        q = (f"SELECT * FROM probes WHERE metric IN ({','.join('?' * len(m))}) "
             f"AND defense IN ({','.join('?' * len(d))}) ORDER BY rowid")
        df = pd.read_sql_query(q, self.db, params=m + d).reindex(columns=self._PROBE_COLS)
        return df.drop_duplicates(["metric", "defense"], keep="last").reset_index(drop=True)

    def write_probes(self, records: list[dict[str, Any]]) -> None:
        cols = self._PROBE_COLS
        with self._transaction():
            self.db.executemany(f"INSERT OR REPLACE INTO probes VALUES ({','.join('?' * len(cols))})",
                                [[_clean(r.get(c)) for c in cols] for r in records])

    # -- plumbing ----------------------------------------------------------------------------
    def _transaction(self):
        db = self.db

        class _Tx:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, exc, tb):
                db.execute("COMMIT" if exc_type is None else "ROLLBACK")
                return False

        return _Tx()

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _clean(v: Any) -> Any:
    """SQLite-friendly value: numpy scalars to Python, NaN to NULL."""
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, bool):
        return int(v)
    return v
