import numpy as np
import pytest
import sqlalchemy as sa

from forecaster.db import bulk, schema, store
from forecaster.errors import StoreError


def test_sqlite_settings(engine):
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == store.BUSY_TIMEOUT_MS
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == store.PAGE_SIZE  # set before WAL fixed it


def test_schema_is_created_once_and_versioned(any_db_url):
    store.connect(any_db_url).dispose()
    engine = store.connect(any_db_url)  # second open must not recreate anything
    with engine.connect() as conn:
        assert conn.execute(sa.select(schema.schema_info.c.version)).scalar_one() == schema.SCHEMA_VERSION
        names = set(sa.inspect(conn).get_view_names())
    assert names == {"latest_predictions", "prediction_outcomes", "model_scoreboard"}


def test_a_database_from_another_version_is_refused(any_engine, any_db_url):
    with store.write_transaction(any_engine) as conn:
        conn.execute(schema.schema_info.update().values(version=999))
    with pytest.raises(
        StoreError,
        match=f"schema version is 999, this forecaster expects {schema.SCHEMA_VERSION} .a newer forecaster wrote it.",
    ):
        store.connect(any_db_url)


def test_a_failed_write_transaction_leaves_nothing(any_engine):
    with pytest.raises(RuntimeError), store.write_transaction(any_engine) as conn:
        conn.execute(schema.prices.insert().values(ticker="x", date="2017-01-03", open=1, high=1, low=1, close=1))
        raise RuntimeError("crash mid-transaction")
    with any_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM prices").scalar() == 0


def test_unopenable_database_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="cannot open database"):
        store.connect(f"sqlite:///{tmp_path}/missing/dir/x.db")


def test_readers_open_and_read_while_a_writer_holds_the_lock(any_db_url, monkeypatch):
    # Opening the store and reading must not queue behind a writer (WAL allows
    # it): with a 1 s busy timeout, a reader that took the write lock would fail.
    from conftest import reader_url

    from forecaster.db.query import run_query

    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 1000)
    writer = store.connect(any_db_url)
    with store.write_transaction(writer) as conn:
        conn.execute(schema.prices.insert().values(ticker="x", date="2017-01-03", open=1, high=1, low=1, close=1))
        reader = store.connect(reader_url(any_db_url))  # an analyst's role on PostgreSQL
        assert run_query(reader, "SELECT COUNT(*) FROM prices")[1] == [(0,)]  # the committed snapshot
        read_only = store.connect(reader_url(any_db_url), read_only=True)
        assert run_query(read_only, "SELECT COUNT(*) FROM prices")[1] == [(0,)]
    assert run_query(reader, "SELECT COUNT(*) FROM prices")[1] == [(1,)]


@pytest.mark.slow
def test_processes_opening_a_new_database_together_all_succeed(tmp_path):
    # SQLite refuses a switch to WAL at once ("database is locked", without its
    # busy wait) when two connections both read the new file's header first and
    # then both want it exclusively. That window is microseconds wide, so many
    # real processes open new files at the same instant, round after round.
    import subprocess
    import sys
    import time

    script = (
        "import sys, time\nfrom forecaster.db import store\nt = float(sys.argv[1])\n"
        "while time.time() < t: pass\nstore.connect(sys.argv[2]).dispose()\n"
    )
    failures = []
    for round_ in range(ROUNDS):
        url = f"sqlite:///{tmp_path / f'new{round_}.db'}"
        start = time.time() + 1.5  # the interpreters start first, then open together
        procs = [
            subprocess.Popen([sys.executable, "-c", script, str(start), url], stderr=subprocess.PIPE, text=True)
            for _ in range(PROCESSES)
        ]
        failures += [p.stderr.read().strip().splitlines()[-1] for p in procs if p.wait() != 0]
    assert failures == []
    with store.connect(url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM schema_info").scalar() == 1


ROUNDS, PROCESSES = 5, 8  # with the old code this failed in 5 of 6 tries


def test_a_version_1_database_is_upgraded_in_place_keeping_its_data(any_db_url):
    # Version 1 had no calendar tables and no interval columns: rebuild one, with a price row in it.
    engine = store.connect(any_db_url)
    with store.write_transaction(engine) as conn:
        conn.execute(schema.prices.insert().values(ticker="x", date="2017-01-03", open=1, high=1, low=1, close=1))
        for table in (schema.calendar_sessions, schema.calendar_coverage):
            table.drop(conn)
        for view in ("model_scoreboard", "prediction_outcomes", "latest_predictions"):
            conn.exec_driver_sql(f"DROP VIEW {view}")
        for column in schema.INTERVAL_COLUMNS:
            conn.exec_driver_sql(f"ALTER TABLE predictions DROP COLUMN {column}")
        schema.promotions.drop(conn)
        conn.exec_driver_sql("DROP INDEX uq_models_one_champion")
        for column in ("status", "promoted_at"):
            conn.exec_driver_sql(f"ALTER TABLE models DROP COLUMN {column}")
        conn.exec_driver_sql("ALTER TABLE runs DROP COLUMN shadow_of")
        schema.price_flags.drop(conn)
        conn.exec_driver_sql("ALTER TABLE tickers DROP COLUMN judged_through")
        conn.execute(schema.schema_info.update().values(version=1))
    engine.dispose()
    with pytest.raises(StoreError, match="has schema version 1: open it once with a writing command"):
        store.connect(any_db_url, read_only=True)
    engine = store.connect(any_db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(schema.schema_info.c.version)).scalar_one() == schema.SCHEMA_VERSION
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.prices)).scalar() == 1
        assert sa.inspect(conn).has_table("calendar_sessions")
        assert {"lo80", "in95"} <= {c["name"] for c in sa.inspect(conn).get_columns("prediction_outcomes")}
        assert sa.inspect(conn).has_table("promotions") and "model_scoreboard" in sa.inspect(conn).get_view_names()
        assert "shadow_of" in {c["name"] for c in sa.inspect(conn).get_columns("runs")}
        assert {"status", "promoted_at"} <= {c["name"] for c in sa.inspect(conn).get_columns("models")}
        assert sa.inspect(conn).has_table("price_flags")
        assert "judged_through" in {c["name"] for c in sa.inspect(conn).get_columns("tickers")}


def test_every_database_error_reads_and_writes_becomes_one_database_error(any_engine):
    from forecaster.errors import DatabaseError

    with pytest.raises(DatabaseError, match="^database error: .*no_such_table") as read, any_engine.connect() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    assert read.value.__cause__ is not None  # the driver's own error is kept as the cause
    with pytest.raises(DatabaseError, match="^database error: "), store.write_transaction(any_engine) as conn:
        conn.execute(schema.prices.insert().values(ticker="x", date="2017-01-03", open=1, high=1, low=1, close=1))
        conn.execute(schema.prices.insert().values(ticker="x", date="2017-01-03", open=1, high=1, low=1, close=1))
    twice = np.array([["x", "2017-01-04", 1.0, 1.0, 1.0, 1.0, None]] * 2, dtype=object)
    with pytest.raises(DatabaseError, match="^database error: "), store.write_transaction(any_engine) as conn:
        bulk.bulk_insert(conn, schema.prices, twice)  # through the driver itself
    with any_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM prices").scalar() == 0


def test_a_bug_is_not_dressed_up_as_a_database_error(engine):
    with pytest.raises(ZeroDivisionError), store.write_transaction(engine) as conn:
        conn.execute(schema.prices.insert().values(ticker="x", date="2017-01-03", open=1, high=1, low=1, close=1))
        raise ZeroDivisionError("a bug")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM prices").scalar() == 0  # rolled back all the same
