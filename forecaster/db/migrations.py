"""Creating the schema, and upgrading an older one to this version in place.

`ensure_schema` creates a new database, or upgrades an older one step by
step, in one transaction; store.connect calls it under the write lock.
"""

from __future__ import annotations

import sqlalchemy as sa

from .schema import (
    INTERVAL_COLUMNS,
    ONE_CHAMPION_INDEX,
    SCHEMA_VERSION,
    VIEWS,
    metadata,
    price_flags,
    promotions,
    schema_info,
)


def version(conn: sa.Connection) -> int | None:
    """The schema version, or None for a database without our schema."""
    if not sa.inspect(conn).has_table("schema_info"):
        return None
    return conn.execute(sa.select(schema_info.c.version)).scalar()


def ensure_schema(conn: sa.Connection) -> None:
    """Create the schema, or upgrade an older one step by step, in one transaction."""
    found = version(conn)
    if found is None:
        metadata.create_all(conn)
        _create_views(conn)
        conn.execute(schema_info.insert().values(version=SCHEMA_VERSION))
        return
    _drop_views(conn)  # they name tables' columns: rebuilt once, over the final tables
    for step in range(found, SCHEMA_VERSION):
        MIGRATIONS[step](conn)
    _create_views(conn)
    conn.execute(schema_info.update().values(version=SCHEMA_VERSION))


def _create_views(conn: sa.Connection) -> None:
    for name, sql in VIEWS.items():
        conn.exec_driver_sql(f"CREATE VIEW {name} AS {sql}")


def _drop_views(conn: sa.Connection) -> None:
    for name in reversed(list(VIEWS)):
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")


def _add_after_run_id(conn: sa.Connection) -> None:
    if "after_run_id" not in {c["name"] for c in sa.inspect(conn).get_columns("promotions")}:
        conn.exec_driver_sql("ALTER TABLE promotions ADD COLUMN after_run_id INTEGER NOT NULL DEFAULT 0")
    # Decisions made before: the newest run started by then.
    conn.exec_driver_sql(
        "UPDATE promotions SET after_run_id = COALESCE("
        "(SELECT MAX(r.run_id) FROM runs r WHERE r.started_at <= promotions.decided_at), 0)"
    )


def _views_only(conn: sa.Connection) -> None:
    """A step that changes the views alone (ensure_schema rebuilds them)."""


def _add_missing_tables(conn: sa.Connection) -> None:
    metadata.create_all(conn)  # checkfirst: only the tables that are not there yet


def _add_interval_columns(conn: sa.Connection) -> None:
    present = {c["name"] for c in sa.inspect(conn).get_columns("predictions")}
    for name in INTERVAL_COLUMNS:
        if name not in present:
            conn.exec_driver_sql(f"ALTER TABLE predictions ADD COLUMN {name} FLOAT")


def _add_registry(conn: sa.Connection) -> None:
    for table, name, kind in (
        ("models", "status", "VARCHAR(16)"),
        ("models", "promoted_at", "VARCHAR"),
        ("runs", "shadow_of", "INTEGER"),
    ):
        if name not in {c["name"] for c in sa.inspect(conn).get_columns(table)}:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
    metadata.create_all(conn, tables=[promotions])
    conn.execute(ONE_CHAMPION_INDEX)


def _add_price_flags(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[price_flags])
    if "judged_through" not in {c["name"] for c in sa.inspect(conn).get_columns("tickers")}:
        conn.exec_driver_sql("ALTER TABLE tickers ADD COLUMN judged_through VARCHAR(10)")


def _judge_flags_again(conn: sa.Connection) -> None:
    """Every stored history judged again by the next ingest: flags judged night
    by night before 2026-12-02 could call the last revert of a run of bad
    prints a split."""
    conn.exec_driver_sql("UPDATE tickers SET judged_through = NULL")


# MIGRATIONS[v] upgrades a database's tables from version v to v + 1 (the
# views are rebuilt once after the last step). Never edit one that has
# shipped: databases out there were upgraded by it.
MIGRATIONS = {
    1: _add_missing_tables,  # 2: calendar_sessions, calendar_coverage
    2: _add_interval_columns,  # 3: predictions.lo80, hi80, lo95, hi95; in80 / in95 in prediction_outcomes
    3: _add_registry,  # 4: models.status, promoted_at, runs.shadow_of, promotions, model_scoreboard
    4: _add_missing_tables,  # 5: price_revisions; prediction_outcomes.prediction_id
    5: _views_only,  # 6: latest_predictions keeps serving across a promotion, sessions_behind; outcomes' served
    6: _add_after_run_id,  # 7: promotions.after_run_id; served is the one prediction per ticker and as_of served
    7: _add_price_flags,  # 8: price_flags, tickers.judged_through (the next ingest judges every stored history)
    8: _judge_flags_again,  # 9: the next ingest judges every stored history again (runs of bad prints)
}
