"""SQLite store (WAL): runs with provenance, cells with status, per-image rows, attack cache.

The driver is the only writer. A cell's row and its ``done`` status are written in one
transaction, so a crash loses at most the cells in flight and never leaves a half-written row;
a rerun skips cells already done.
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..errors import InputError
from .rows import ROW_COLUMNS

SCHEMA_VERSION = 1

_TEXT = {"cell", "run_id", "metric", "attack", "defense", "dataset", "image", "truth_kind", "group",
         "adaptive_wrapper"}


def _sql_type(col: str) -> str:
    return "TEXT" if col in _TEXT else "REAL"


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._create()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"store {str(self.path)!r} is not a usable iqaguard SQLite file: {exc}") from None

    def _create(self) -> None:
        cols = ", ".join(f'"{c}" {_sql_type(c)}' for c in ROW_COLUMNS if c != "cell")
        self.db.executescript(f"""
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
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
        """)
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        found = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        if int(found) != SCHEMA_VERSION:
            raise InputError(f"store {str(self.path)!r} has schema version {found}, this iqaguard needs {SCHEMA_VERSION}")

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

    # -- cells -----------------------------------------------------------------------------
    def done_keys(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        done: set[str] = set()
        for i in range(0, len(keys), 900):
            chunk = keys[i:i + 900]
            q = f"SELECT key FROM cells WHERE status='done' AND key IN ({','.join('?' * len(chunk))})"
            done.update(r[0] for r in self.db.execute(q, chunk))
        return done

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

    def errors(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM cells WHERE status='error'", self.db)

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
