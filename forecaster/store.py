"""The database: schema, engine settings, views.

SQLAlchemy Core only, so any URL works; SQLite gets WAL, a busy timeout and
`BEGIN IMMEDIATE` so that two writers queue instead of failing with
"database is locked" halfway through a transaction.
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event

from .errors import StoreError, first_line

SCHEMA_VERSION = 2
DEFAULT_URL = "sqlite:///forecaster.db"
BUSY_TIMEOUT_MS = 60_000
PAGE_SIZE = 16384

metadata = sa.MetaData()

schema_info = sa.Table(
    "schema_info", metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

prices = sa.Table(
    "prices", metadata,
    sa.Column("ticker", sa.String, primary_key=True),
    # ISO "YYYY-MM-DD" text: sorts and compares as a date on every backend.
    sa.Column("date", sa.String(10), primary_key=True),
    sa.Column("open", sa.Float, nullable=False),
    sa.Column("high", sa.Float, nullable=False),
    sa.Column("low", sa.Float, nullable=False),
    sa.Column("close", sa.Float, nullable=False),
    sa.Column("volume", sa.Float),
    # Clustered on (ticker, date): one B-tree, appends land together, and a
    # ticker's last N rows are one short range scan. No index on date alone:
    # inserting ticker by ticker would scatter writes all over it.
    sqlite_with_rowid=False,
)

# The distinct trading dates present in `prices`, kept in the same
# transaction, so "which dates exist" never scans millions of price rows.
price_dates = sa.Table(
    "price_dates", metadata,
    sa.Column("date", sa.String(10), primary_key=True),
    sa.Column("n_rows", sa.Integer, nullable=False),
)

# One row per ticker, kept in step with `prices` inside the same transaction,
# so the nightly run finds fresh and stale tickers without scanning history.
tickers = sa.Table(
    "tickers", metadata,
    sa.Column("ticker", sa.String, primary_key=True),
    sa.Column("first_date", sa.String(10), nullable=False),
    sa.Column("last_date", sa.String(10), nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
)

rejected_rows = sa.Table(
    "rejected_rows", metadata,
    sa.Column("rejection_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String, nullable=False),
    sa.Column("line", sa.Integer),  # NULL when the whole file was unreadable
    sa.Column("ticker", sa.String),
    sa.Column("raw", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("rejected_at", sa.String, nullable=False),
)

# What was ingested from where: lets an unchanged file be skipped from its
# size and mtime alone, and an appended file be read from its old end.
source_files = sa.Table(
    "source_files", metadata,
    sa.Column("path", sa.String, primary_key=True),
    sa.Column("ticker", sa.String, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("tail_sha256", sa.String(64), nullable=False),
    sa.Column("rows_added", sa.Integer, nullable=False),
    sa.Column("rows_rejected", sa.Integer, nullable=False),
    sa.Column("ingested_at", sa.String, nullable=False),
)

models = sa.Table(
    "models", metadata,
    sa.Column("model_id", sa.String(64), primary_key=True),  # sha256 of the ONNX file
    sa.Column("path", sa.String, nullable=False),
    sa.Column("created_at", sa.String, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),  # JSON
)

runs = sa.Table(
    "runs", metadata,
    sa.Column("run_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.String, nullable=False),
    sa.Column("finished_at", sa.String),
    sa.Column("status", sa.String(16), nullable=False),  # running | succeeded | failed
    sa.Column("as_of", sa.String(10)),
    sa.Column("model_id", sa.String(64)),
    sa.Column("device", sa.String(16)),
    sa.Column("n_predictions", sa.Integer),
    sa.Column("message", sa.Text),
    sa.Column("host", sa.String),
    sa.Column("pid", sa.Integer),
    sa.Column("shard", sa.String(16)),  # "K/N" when only shard K of N tickers was scored
    sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="ck_runs_status"),
)

predictions = sa.Table(
    "predictions", metadata,
    sa.Column("prediction_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("model_id", sa.String(64), sa.ForeignKey("models.model_id"), nullable=False),
    sa.Column("ticker", sa.String, nullable=False),
    sa.Column("as_of", sa.String(10), nullable=False),
    sa.Column("target_date", sa.String(10), nullable=False),
    sa.Column("predicted_close", sa.Float, nullable=False),
    sa.Column("last_close", sa.Float, nullable=False),
    # e.g. "out_of_range": the window moved further than anything seen in training.
    sa.Column("flags", sa.String),
    sa.UniqueConstraint("model_id", "ticker", "as_of", name="uq_predictions_model_ticker_asof"),
    sa.Index("ix_predictions_ticker_asof", "ticker", "as_of"),
)

# Trading sessions of an exchange calendar, copied from exchange_calendars
# once per range (by `source`, its version: a new one may know new holidays).
# A nightly run then reads its next trading day here instead of importing
# the library and building the calendar (about 0.4 s a night).
calendar_sessions = sa.Table(
    "calendar_sessions", metadata,
    sa.Column("calendar", sa.String(16), primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("date", sa.String(10), primary_key=True),
)

# The days each (calendar, source) covers: every session in [first_day, last_day] is stored.
calendar_coverage = sa.Table(
    "calendar_coverage", metadata,
    sa.Column("calendar", sa.String(16), primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("first_day", sa.String(10), nullable=False),
    sa.Column("last_day", sa.String(10), nullable=False),
)

VIEWS = {
    "latest_predictions": """
        SELECT ticker, as_of, target_date, predicted_close, last_close, model_id, run_id, flags
        FROM (
            SELECT p.*, ROW_NUMBER() OVER (
                PARTITION BY p.ticker ORDER BY p.as_of DESC, p.run_id DESC) AS rn
            FROM predictions p
        ) AS ranked
        WHERE rn = 1
    """,
    # Each prediction with the next close stored after its as_of (NULL while
    # that day has not arrived). error = predicted - actual; naive_error is
    # the same for "tomorrow's close = today's close".
    "prediction_outcomes": """
        SELECT p.ticker, p.as_of, p.target_date, p.predicted_close, p.last_close,
               nx.date AS actual_date, nx.close AS actual_close,
               p.predicted_close - nx.close AS error,
               p.last_close - nx.close AS naive_error,
               p.model_id, p.run_id, p.flags
        FROM predictions p
        LEFT JOIN prices nx
          ON nx.ticker = p.ticker
         AND nx.date = (SELECT MIN(q.date) FROM prices q
                        WHERE q.ticker = p.ticker AND q.date > p.as_of)
    """,
}


def _configure_sqlite(engine: sa.Engine, read_only: bool) -> None:
    """WAL + busy timeout + foreign keys on every connection; writers take the
    write lock at BEGIN so two writers queue instead of deadlocking."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        if read_only:
            cur.execute("PRAGMA query_only = ON")  # belt and braces beside mode=ro
            # mode=ro does not reach ATTACH, which would create any file it names.
            dbapi_conn.set_authorizer(_no_attach)
        elif cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            # Only a new, empty database takes this (before WAL writes its header).
            # 16 KiB pages inserted 1.1-1.3x faster than 4 KiB ones here: fewer page splits.
            cur.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            _enter_wal(cur)
        if not read_only:
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Readers stay DEFERRED so they never wait on a writer (WAL snapshot).
        immediate = conn.get_execution_options().get("immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _no_attach(action, *_args) -> int:
    return sqlite3.SQLITE_DENY if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH) else sqlite3.SQLITE_OK


def _enter_wal(cur) -> None:
    """Switch a new database to WAL. SQLite answers "database is locked" at
    once, without its busy handler, when another connection is switching the
    same new file (two processes starting together): retry for a while."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One atomic write: commits on success, rolls back on any exception.

    On SQLite it takes the write lock at BEGIN, so concurrent writers wait
    (up to the busy timeout) instead of failing mid-transaction.
    """
    try:
        with _immediate_transaction(engine) as conn:
            yield conn
    except (sa.exc.SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as exc:
        # A full disk, a read-only file, a vanished folder: one plain line.
        # (The driver's own errors come from bulk_insert, which uses it directly.)
        raise StoreError(f"database write failed: {first_line(exc)}") from exc


WRITER_LOCK_KEY = 0x666F7265  # "fore": PostgreSQL advisory lock shared by all writers


@contextmanager
def _immediate_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    with engine.connect() as conn:
        conn.execution_options(immediate=True)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                # The same rule as SQLite's single writer: writers queue here,
                # so a run's read-then-insert never races another writer.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITER_LOCK_KEY})
            yield conn


def connect(url: str = DEFAULT_URL, *, read_only: bool = False) -> sa.Engine:
    """An engine for `url` with the schema in place (created when missing).

    Opening reads the schema version without taking the write lock, so a
    reader never queues behind a writer; only a new database is locked while
    its schema is created. `read_only`: the database must exist, and nothing
    can write through this engine (SQLite mode=ro, PostgreSQL read-only
    transactions). Raises StoreError with a one-line reason when the
    database cannot be opened or was written by an incompatible version.
    """
    try:
        engine = _create_engine(url, read_only)
    except StoreError:
        raise
    except Exception as exc:  # bad URL, missing driver
        raise StoreError(f"cannot open database {url!r}: {exc}") from None
    try:
        with engine.connect() as conn:
            version = _version(conn)
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(f"database schema version is {version}, this forecaster expects "
                             f"{SCHEMA_VERSION} (a newer forecaster wrote it)")
        if version != SCHEMA_VERSION and read_only:
            raise StoreError(f"database {url!r} holds no forecaster data (no schema)" if version is None else
                             f"database {url!r} has schema version {version}: open it once with a writing "
                             f"command (e.g. forecaster ingest) to upgrade it to {SCHEMA_VERSION}")
        if version != SCHEMA_VERSION:
            with _immediate_transaction(engine) as conn:
                _ensure_schema(conn)  # another process may have done it meanwhile
    except StoreError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"cannot open database {url!r}: {first_line(exc)}") from None
    return engine


def _create_engine(url: str, read_only: bool) -> sa.Engine:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if read_only and parsed.database not in (None, "", ":memory:"):
            # The URI form opens the file read-only: no write, no ATTACH creating files.
            path = Path(parsed.database).resolve()
            if not path.exists():
                raise StoreError(f"cannot open database {url!r}: no such file")
            parsed = parsed.set(database=f"file:{quote(str(path))}?mode=ro", query={"uri": "true"})
        engine = sa.create_engine(parsed)
        _configure_sqlite(engine, read_only)
        return engine
    if read_only and parsed.get_backend_name() == "postgresql":
        return sa.create_engine(parsed, connect_args={"options": "-c default_transaction_read_only=on"})
    return sa.create_engine(parsed)


def _version(conn: sa.Connection) -> int | None:
    """The schema version, or None for a database without our schema."""
    if not sa.inspect(conn).has_table("schema_info"):
        return None
    return conn.execute(sa.select(schema_info.c.version)).scalar()


def _ensure_schema(conn: sa.Connection) -> None:
    """Create the schema, or upgrade an older one step by step, in one transaction."""
    version = _version(conn)
    if version is None:
        metadata.create_all(conn)
        for name, sql in VIEWS.items():
            conn.exec_driver_sql(f"CREATE VIEW {name} AS {sql}")
        conn.execute(schema_info.insert().values(version=SCHEMA_VERSION))
        return
    for step in range(version, SCHEMA_VERSION):
        MIGRATIONS[step](conn)
    conn.execute(schema_info.update().values(version=SCHEMA_VERSION))


def _add_missing_tables(conn: sa.Connection) -> None:
    metadata.create_all(conn)  # checkfirst: only the tables that are not there yet


# MIGRATIONS[v] upgrades a database from version v to v + 1. Never edit one
# that has shipped: databases out there were upgraded by it.
MIGRATIONS = {
    1: _add_missing_tables,  # 2: calendar_sessions, calendar_coverage
}


ROWS_PER_INSERT = 100  # rows per SQLite INSERT statement; 700 parameters, under any build's limit


def bulk_insert(conn: sa.Connection, table: sa.Table, records: np.ndarray) -> None:
    """Insert rows given as a 2-D object array in the table's column order.

    On SQLite this goes straight to the driver, ROWS_PER_INSERT rows per
    statement: the driver's per-statement cost is larger than SQLite's own
    per-row cost, so one-row statements ran at about half the speed.
    """
    if not len(records):
        return
    names = [c.name for c in table.columns]
    columns = ", ".join(names)
    cursor = conn.connection.dbapi_connection.cursor()  # the driver's own: no per-row SQLAlchemy work
    if conn.dialect.name == "sqlite":
        def insert(rows: int) -> str:
            one = f"({', '.join('?' * len(names))})"
            return f"INSERT INTO {table.name} ({columns}) VALUES {', '.join([one] * rows)}"
        whole = len(records) - len(records) % ROWS_PER_INSERT
        if whole:
            cursor.executemany(insert(ROWS_PER_INSERT),
                               records[:whole].reshape(-1, ROWS_PER_INSERT * len(names)).tolist())
        if whole < len(records):
            cursor.execute(insert(len(records) - whole), records[whole:].ravel().tolist())
    elif conn.dialect.name == "postgresql":
        # COPY streams rows in one command: the fastest bulk load PostgreSQL has.
        with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
            for record in records.tolist():
                copy.write_row(record)
    else:
        conn.execute(table.insert(), [dict(zip(names, r)) for r in records.tolist()])


def upsert(conn: sa.Connection, table: sa.Table, rows: list[dict], keys: list[str],
           update: dict | None = None) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, on SQLite and PostgreSQL alike.

    `update` maps column -> a function of the statement's `excluded` row
    (default: take the new value for every non-key column)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table)
    setters = ({c: fn(stmt.excluded) for c, fn in update.items()} if update else
               {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys})
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_=setters)
    if conn.dialect.name == "sqlite":
        # Compiled once and run by the driver: SQLAlchemy's per-row parameter
        # work was most of the cost for the thousands of rows of a nightly ingest.
        compiled = stmt.compile(dialect=conn.dialect, column_keys=list(rows[0]))
        conn.connection.dbapi_connection.cursor().executemany(
            str(compiled), [tuple(row[k] for k in compiled.positiontup) for row in rows])
        return
    conn.execute(stmt, rows)
