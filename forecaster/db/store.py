"""The database engine: connection settings, transactions, read snapshots,
and the one error boundary (bulk.py holds the paths that go straight to the
driver, under the same boundary).

SQLite gets WAL, a busy timeout and `BEGIN IMMEDIATE` for writers, so two
writers queue instead of failing with "database is locked" halfway through a
transaction, while readers never wait. PostgreSQL writers queue on an
advisory lock. Every database error, read or write, through SQLAlchemy or
through the driver, reaches callers as DatabaseError (a StoreError) with a
one-line reason; other exceptions (bugs) pass through untouched.
"""

from __future__ import annotations

import math
import sqlite3
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event

from ..errors import DatabaseError, StoreError, first_line
from . import migrations, schema
from .config import DEFAULT_DB_URL

BUSY_TIMEOUT_MS = 60_000
# Database pages of a new SQLite file. A night appends one row per ticker, so
# it rewrites one leaf page per ticker: the WAL and its checkpoint carry
# tickers x PAGE_SIZE bytes (5,000 x 16 KiB = 82 MB). 8 KiB halves that for
# 3% on a first ingest (docs/performance.md: nightly ingest 0.68 s against
# 0.84 s with 16 KiB and 0.76 s with 4 KiB, which splits pages more often).
PAGE_SIZE = 8192
WRITER_LOCK_KEY = 0x666F7265  # "fore": PostgreSQL advisory lock shared by all writers
_GIVEN_URLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def connect(url: str = DEFAULT_DB_URL, *, read_only: bool = False) -> sa.Engine:
    """An engine for `url` with the schema in place (created or upgraded when needed).

    Opening reads the schema version without taking the write lock, so a
    reader never queues behind a writer; only a new or older database is
    locked while its schema is created or upgraded. `read_only`: the
    database must exist, and nothing can write through this engine (SQLite
    mode=ro, PostgreSQL read-only transactions). Raises StoreError with a
    one-line reason when the database cannot be opened or was written by an
    incompatible version.
    """
    try:
        engine = _create_engine(url, read_only)
    except StoreError:
        raise
    except Exception as exc:  # bad URL, missing driver
        raise StoreError(f"cannot open database {url!r}: {exc}") from None
    try:
        with engine.connect() as conn:
            version = migrations.version(conn)
        if version is not None and version > schema.SCHEMA_VERSION:
            raise StoreError(
                f"database schema version is {version}, this forecaster expects "
                f"{schema.SCHEMA_VERSION} (a newer forecaster wrote it)"
            )
        if version != schema.SCHEMA_VERSION and read_only:
            raise StoreError(
                f"database {url!r} holds no forecaster data (no schema)"
                if version is None
                else f"database {url!r} has schema version {version}: open it once with a writing "
                f"command (e.g. forecaster ingest) to upgrade it to {schema.SCHEMA_VERSION}"
            )
        if version != schema.SCHEMA_VERSION:
            with _immediate_transaction(engine) as conn:
                migrations.ensure_schema(conn)  # another process may have done it meanwhile
    except DatabaseError as exc:
        raise StoreError(f"cannot open database {url!r}: {exc.reason}") from exc
    _GIVEN_URLS[engine] = url
    return engine


def url_of(engine: sa.Engine) -> str:
    """The URL the database was opened with, as the user wrote it (password hidden)."""
    given = _GIVEN_URLS.get(engine)
    return (sa.engine.make_url(given) if given else engine.url).render_as_string(hide_password=True)


ANALYZE_MIN_ROWS = 1_000  # rows a command must add before it refreshes PostgreSQL's statistics itself


def refresh_statistics(engine: sa.Engine, tables: list[str], rows_added: int) -> None:
    """After a bulk write on PostgreSQL, ANALYZE the tables it wrote: until
    autovacuum gets to them, a fresh database's planner takes them for empty
    and the views' lookups turn into scans (a review measured `status` at 80 s
    on 700 predictions before ANALYZE, 2 s after). SQLite needs nothing."""
    if engine.dialect.name != "postgresql" or rows_added < ANALYZE_MIN_ROWS:
        return
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ANALYZE {', '.join(tables)}")


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One atomic write: commits on success, rolls back on any exception.

    On SQLite it takes the write lock at BEGIN, so concurrent writers wait
    (up to the busy timeout) instead of failing mid-transaction.
    """
    with _immediate_transaction(engine) as conn:
        yield conn


@contextmanager
def read_snapshot(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A read in which every statement sees the same committed state: one
    deferred transaction on SQLite (WAL keeps its snapshot from the first
    read), REPEATABLE READ on PostgreSQL (READ COMMITTED would let a writer's
    commit land between two statements). Never takes the write lock."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


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


# -- engines -------------------------------------------------------------


def _create_engine(url: str, read_only: bool) -> sa.Engine:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if read_only and parsed.database not in (None, "", ":memory:"):
            # The URI form opens the file read-only: no write, no new file.
            path = Path(parsed.database).resolve()
            if not path.exists():
                raise StoreError(f"cannot open database {url!r}: no such file")
            parsed = parsed.set(database=f"file:{quote(str(path))}?mode=ro", query={"uri": "true"})
        engine = sa.create_engine(parsed)
        _configure_sqlite(engine, read_only)
    elif read_only and parsed.get_backend_name() == "postgresql":
        engine = sa.create_engine(parsed, connect_args={"options": "-c default_transaction_read_only=on"})
    else:
        engine = sa.create_engine(parsed)
    _translate_errors(engine)
    return engine


def _translate_errors(engine: sa.Engine) -> None:
    """The one place where database errors become ours: every statement,
    commit and connection attempt of this engine that fails raises
    DatabaseError, with the driver's error kept as its cause."""

    @event.listens_for(engine, "handle_error")
    def _on_error(context):
        if isinstance(context.original_exception, engine.dialect.loaded_dbapi.Error):
            return DatabaseError(first_line(context.original_exception))
        return None  # not the database's error (a bug, an interrupt): leave it alone


@contextmanager
def driver_errors(conn: sa.Connection) -> Iterator[None]:
    """The same translation for the code below that uses the driver directly."""
    try:
        yield
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DatabaseError(first_line(exc)) from exc


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
            cur.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            _enter_wal(cur)
        if not read_only:
            cur.execute("PRAGMA synchronous = NORMAL")
        try:
            cur.execute("SELECT sqrt(4.0)")
        except sqlite3.OperationalError:  # SQLite built without its math functions: the views need sqrt
            dbapi_conn.create_function("sqrt", 1, _sqrt, deterministic=True)
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Readers stay DEFERRED so they never wait on a writer (WAL snapshot).
        immediate = conn.get_execution_options().get("immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqrt(x: float | None) -> float | None:
    return None if x is None or x < 0 else math.sqrt(x)


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
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
