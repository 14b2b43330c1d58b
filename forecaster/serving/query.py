"""Read-only SQL questions against the store (what `forecaster sql` runs).

The engine should come from store.connect(url, read_only=True): the database
itself refuses writes and ATTACH. The transaction is rolled back as well.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..errors import DatabaseError, StoreError


def run_query(engine: sa.Engine, query: str, *, limit: int = 50) -> tuple[list[str], list[tuple], bool]:
    """(column names, up to `limit` rows, whether more rows exist).

    The transaction is always rolled back, so a statement that writes changes nothing.
    """
    with engine.connect() as conn:
        try:
            result = conn.exec_driver_sql(query)
            if not result.returns_rows:
                raise StoreError("only queries that return rows are allowed here")
            columns = list(result.keys())
            rows = [tuple(r) for r in result.fetchmany(limit + 1)]
        except DatabaseError as exc:
            raise StoreError(f"query failed: {exc.reason}") from exc
        finally:
            conn.rollback()
    return columns, rows[:limit], len(rows) > limit
