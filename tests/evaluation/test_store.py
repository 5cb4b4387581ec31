import sqlite3

import pandas as pd
import pytest

from iqaguard import InputError
from iqaguard.evaluation.rows import ROW_COLUMNS
from iqaguard.evaluation.store import APPLICATION_ID, SCHEMA_VERSION, Store


def _row(i, **kw):
    r = {c: None for c in ROW_COLUMNS}
    r.update(cell=f"k{i}", run_id="r", metric="niqe", attack="ifgsm", defense="jpeg", dataset="bundled",
             image=f"img{i}", clear=1.0 + i, attacked=2.0, defended_clear=1.5, defended_attacked=float("nan"),
             lower_better=True, q_psnr_c_da=float("inf"))
    r.update(kw)
    return r


def test_rows_round_trip_and_done_keys(tmp_path):
    with Store(tmp_path / "s.db") as st:
        st.start_run("r", {"seed": 0}, {"metrics": ["niqe"]})
        st.write_rows([_row(0), _row(1)])
        assert st.done_keys(["k0", "k1", "k2"]) == {"k0", "k1"}
        df = st.rows(keys=["k0", "k1"])
        assert list(df.columns) == ROW_COLUMNS
        assert df["clear"].tolist() == [1.0, 2.0]
        assert pd.isna(df["defended_attacked"]).all()          # NaN stored as NULL
        assert df["q_psnr_c_da"].tolist() == [float("inf")] * 2
        assert df["lower_better"].dtype == bool and df["lower_better"].all()
        st.finish_run("r")
        assert st.last_run()["provenance"] == {"seed": 0}


def test_failed_write_leaves_nothing(tmp_path):
    """A crash inside a write (here: a row without its key) rolls back the whole transaction."""
    with Store(tmp_path / "s.db") as st:
        bad = _row(1)
        del bad["cell"]
        with pytest.raises(KeyError):
            st.write_rows([_row(0), bad])
        assert st.done_keys(["k0", "k1"]) == set()
        assert len(st.rows()) == 0


def test_errors_are_recorded_not_done(tmp_path):
    with Store(tmp_path / "s.db") as st:
        st.write_errors([{k: _row(0)[k] for k in ("cell", "run_id", "metric", "attack", "defense", "dataset", "image")}],
                        "RuntimeError: boom")
        assert st.done_keys(["k0"]) == set()
        assert st.errors()["error"].tolist() == ["RuntimeError: boom"]


def test_not_a_store(tmp_path):
    p = tmp_path / "x.db"
    p.write_text("hello, not sqlite" * 100)
    with pytest.raises(InputError, match="x.db"):
        Store(p)


def test_schema_version_checked(tmp_path):
    p = tmp_path / "s.db"
    Store(p).close()
    db = sqlite3.connect(p)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(InputError, match="schema version 99"):
        Store(p)


# -- schema versions, foreign files (docs/design.md "Store") -------------------------------------
FIXTURE = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "store-v1" / "iqaguard.db"


def _digest(p):
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_store_from_landed_version_opens_and_is_upgraded(tmp_path):
    """A store written by iqaguard 0.1.0 (schema 1, committed fixture) opens, is upgraded additively,
    and keeps every row."""
    import shutil

    from iqaguard.evaluation.store import APPLICATION_ID, SCHEMA_VERSION

    p = tmp_path / "v1.db"
    shutil.copy(FIXTURE, p)
    with Store(p, readonly=True) as st:          # read-only: nothing written
        assert st.version == 1 and len(st.rows()) == 24
    assert _digest(p) == _digest(FIXTURE)
    with Store(p) as st:
        assert st.version == SCHEMA_VERSION
        rows = st.rows()
        assert len(rows) == 24 and rows["clear"].notna().all() and rows["q_ssim_rgb_c_dc"].isna().all()
        assert "migrated_to_2" in dict(st.db.execute("SELECT key, value FROM meta").fetchall())
        assert st.db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    with Store(p) as st:                          # reopening an upgraded store is a no-op
        assert len(st.rows()) == 24


def test_a_store_killed_before_its_schema_was_committed_is_created_anew(tmp_path):
    """SQLite writes the file's header when WAL mode is set, before the creating transaction
    commits; a SIGKILL in between left a 4 KB file with no tables, which the next run refused as
    foreign (seen in CI's crash-safety test). A file with no schema at all holds nothing to lose."""
    p = tmp_path / "iqaguard.db"
    db = sqlite3.connect(p, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    assert p.stat().st_size > 0
    with pytest.raises(InputError, match="no tables yet"):
        Store(p, readonly=True)
    with Store(p) as st:
        assert st.version == SCHEMA_VERSION and len(st.rows()) == 0
    assert sqlite3.connect(p).execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_foreign_sqlite_file_is_refused_and_untouched(tmp_path):
    p = tmp_path / "iqaguard.db"
    db = sqlite3.connect(p)
    db.execute("CREATE TABLE cells (key TEXT, value TEXT)")
    db.execute("INSERT INTO cells VALUES ('a', 'b')")
    db.commit()
    db.close()
    before = _digest(p)
    with pytest.raises(InputError, match="did not create.*untouched"):
        Store(p)
    with pytest.raises(InputError, match="did not create"):
        Store(p, readonly=True)
    assert _digest(p) == before
    tables = [r[0] for r in sqlite3.connect(p).execute("SELECT name FROM sqlite_master")]
    assert tables == ["cells"]


def test_future_schema_version_is_refused_naming_both(tmp_path):
    from iqaguard.evaluation.store import SCHEMA_VERSION

    p = tmp_path / "s.db"
    with Store(p) as st:
        st.db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 5),))
    before = _digest(p)
    with pytest.raises(InputError, match=f"schema version {SCHEMA_VERSION + 5}.*up to {SCHEMA_VERSION}"):
        Store(p)
    assert _digest(p) == before


def test_text_file_and_directory_are_refused(tmp_path):
    p = tmp_path / "notes.db"
    p.write_text("not a database\n" * 50)
    before = _digest(p)
    with pytest.raises(InputError, match="notes.db"):
        Store(p)
    assert _digest(p) == before
    with pytest.raises(InputError, match="directory"):
        Store(tmp_path)
