import sqlite3

import pandas as pd
import pytest

from iqaguard import InputError
from iqaguard.evaluation.rows import ROW_COLUMNS
from iqaguard.evaluation.store import Store


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
