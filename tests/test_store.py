import pytest
import sqlalchemy as sa

from forecaster import store
from forecaster.errors import StoreError


def test_sqlite_settings(engine):
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == store.BUSY_TIMEOUT_MS


def test_schema_is_created_once_and_versioned(any_db_url):
    store.connect(any_db_url).dispose()
    engine = store.connect(any_db_url)  # second open must not recreate anything
    with engine.connect() as conn:
        assert conn.execute(sa.select(store.schema_info.c.version)).scalar_one() == store.SCHEMA_VERSION
        names = set(sa.inspect(conn).get_view_names())
    assert names == {"latest_predictions", "prediction_outcomes"}


def test_a_database_from_another_version_is_refused(any_engine, any_db_url):
    with store.write_transaction(any_engine) as conn:
        conn.execute(store.schema_info.update().values(version=999))
    with pytest.raises(StoreError, match="schema version is 999, this forecaster expects 1"):
        store.connect(any_db_url)


def test_a_failed_write_transaction_leaves_nothing(any_engine):
    with pytest.raises(RuntimeError):
        with store.write_transaction(any_engine) as conn:
            conn.execute(store.prices.insert().values(ticker="x", date="2017-01-03", open=1, high=1,
                                                      low=1, close=1))
            raise RuntimeError("crash mid-transaction")
    with any_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM prices").scalar() == 0


def test_unopenable_database_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="cannot open database"):
        store.connect(f"sqlite:///{tmp_path}/missing/dir/x.db")
