"""The bulk paths that go straight to the driver: SQLAlchemy's per-row work
costs as much as the database's own for the thousands of rows a night
writes and the millions a first ingest or a training reads. Errors still
reach callers as DatabaseError (store.driver_errors).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import sqlalchemy as sa

from .store import driver_errors

ROWS_PER_INSERT = 100  # rows per SQLite INSERT statement; 700 parameters, under any build's limit


def bulk_insert(conn: sa.Connection, table: sa.Table, records: np.ndarray, names: Sequence[str] = ()) -> None:
    """Insert rows given as a 2-D object array, columns in the order of
    `names` (default: all the table's columns in its order).

    On SQLite this goes straight to the driver, ROWS_PER_INSERT rows per
    statement: the driver's per-statement cost is larger than SQLite's own
    per-row cost, so one-row statements ran at about half the speed.
    """
    if not len(records):
        return
    names = list(names) or [c.name for c in table.columns]
    columns = ", ".join(names)
    cursor = conn.connection.dbapi_connection.cursor()  # the driver's own: no per-row SQLAlchemy work
    with driver_errors(conn):
        if conn.dialect.name == "sqlite":

            def insert(rows: int) -> str:
                one = f"({', '.join('?' * len(names))})"
                return f"INSERT INTO {table.name} ({columns}) VALUES {', '.join([one] * rows)}"

            whole = len(records) - len(records) % ROWS_PER_INSERT
            if whole:
                cursor.executemany(
                    insert(ROWS_PER_INSERT), records[:whole].reshape(-1, ROWS_PER_INSERT * len(names)).tolist()
                )
            if whole < len(records):
                cursor.execute(insert(len(records) - whole), records[whole:].ravel().tolist())
        elif conn.dialect.name == "postgresql":
            # COPY streams rows in one command: the fastest bulk load PostgreSQL has.
            with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                for record in records.tolist():
                    copy.write_row(record)
        else:
            conn.execute(table.insert(), [dict(zip(names, r, strict=True)) for r in records.tolist()])


def upsert(conn: sa.Connection, table: sa.Table, rows: list[dict], keys: list[str], update: dict | None = None) -> None:
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
    setters = (
        {c: fn(stmt.excluded) for c, fn in update.items()}
        if update
        else {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    )
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_=setters)
    if conn.dialect.name == "sqlite":
        # Compiled once and run by the driver: SQLAlchemy's per-row parameter
        # work was most of the cost for the thousands of rows of a nightly ingest.
        compiled = stmt.compile(dialect=conn.dialect, column_keys=list(rows[0]))
        with driver_errors(conn):
            conn.connection.dbapi_connection.cursor().executemany(
                str(compiled), [tuple(row[k] for k in compiled.positiontup) for row in rows]
            )
        return
    conn.execute(stmt, rows)


def iterate_plain(conn: sa.Connection, query: sa.Select, chunk: int) -> Iterator[list[tuple]]:
    """A query's rows as the driver's tuples, `chunk` at a time: a large read
    never holds every row as Python objects (a server-side cursor on PostgreSQL)."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    if conn.dialect.paramstyle in ("qmark", "numeric"):
        params = tuple(params[name] for name in compiled.positiontup)
    dbapi = conn.connection.dbapi_connection
    with driver_errors(conn):
        cursor = dbapi.cursor(name="forecaster_read") if conn.dialect.name == "postgresql" else dbapi.cursor()
        try:
            cursor.execute(str(compiled), params)
            while rows := cursor.fetchmany(chunk):
                yield rows
        finally:
            cursor.close()


def fetch_plain(conn: sa.Connection, query: sa.Select) -> list[tuple]:
    """All rows of a query as the driver's plain tuples (SQLAlchemy's Row
    objects cost about as much again as SQLite's own work, for 100,000 rows)."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    if conn.dialect.paramstyle in ("qmark", "numeric"):
        params = tuple(params[name] for name in compiled.positiontup)
    cursor = conn.connection.dbapi_connection.cursor()
    with driver_errors(conn):
        cursor.execute(str(compiled), params)
        return cursor.fetchall()
