"""The `runs` ledger: one row per as_of scored, from `running` to
`succeeded` or `failed`, and the `models` row each prediction points to.

It is what makes a night idempotent and recoverable: what was scored, by
which model, on which host, and what a dead process left behind.
"""

from __future__ import annotations

import json
import os
import socket

import sqlalchemy as sa

from ..artifact.model_file import ModelFile
from ..clock import utc_now
from ..db import schema, store
from ..db.schema import RunStatus
from ..errors import StoreError
from .shards import Shard


def start_run(engine: sa.Engine, model_id: str, as_of: str, device: str, shard: Shard | None) -> int:
    """A `running` row, committed at once: a crash from here on leaves a trace."""
    with store.write_transaction(engine) as conn:
        return _insert_run(conn, model_id, as_of, device, shard)


def add_shadow_run(
    conn: sa.Connection, model_id: str, as_of: str, device: str, shard: Shard | None, shadow_of: int
) -> int:
    """A challenger's run row inside the caller's transaction: it commits with the run it shadows."""
    return _insert_run(conn, model_id, as_of, device, shard, shadow_of=shadow_of)


def _insert_run(
    conn: sa.Connection, model_id: str, as_of: str, device: str, shard: Shard | None, shadow_of: int | None = None
) -> int:
    return conn.execute(
        schema.runs.insert().values(
            started_at=utc_now(),
            status=RunStatus.RUNNING,
            as_of=as_of,
            model_id=model_id,
            device=device,
            host=socket.gethostname(),
            pid=os.getpid(),
            shard=_text(shard),
            shadow_of=shadow_of,
        )
    ).inserted_primary_key[0]


def finish_run(conn: sa.Connection, run_id: int, status: str, message: str, n: int | None) -> None:
    conn.execute(
        schema.runs.update()
        .where(schema.runs.c.run_id == run_id)
        .values(status=status, finished_at=utc_now(), message=message, n_predictions=n)
    )


def mark_failed(engine: sa.Engine, run_id: int, reason: str) -> None:
    """Best effort: when the database itself is failing, this may fail too."""
    try:
        with store.write_transaction(engine) as conn:
            finish_run(conn, run_id, RunStatus.FAILED, reason, 0)
    except StoreError:
        pass


def record_failed_run(
    engine: sa.Engine, as_of: str | None, model_id: str | None, device: str, reason: str, shard: Shard | None = None
) -> None:
    """A run that failed before it could start (its model would not load)."""
    try:
        with store.write_transaction(engine) as conn:
            conn.execute(
                schema.runs.insert().values(
                    started_at=utc_now(),
                    finished_at=utc_now(),
                    status=RunStatus.FAILED,
                    as_of=as_of,
                    model_id=model_id,
                    device=device,
                    n_predictions=0,
                    message=reason,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    shard=_text(shard),
                )
            )
    except StoreError:
        pass


def recover_abandoned_runs(engine: sa.Engine) -> list[int]:
    """Mark failed the runs left `running` by a process of this host that no longer exists."""
    r = schema.runs.c
    host = socket.gethostname()
    with engine.connect() as conn:
        running = conn.execute(sa.select(r.run_id, r.pid).where(r.status == RunStatus.RUNNING, r.host == host)).all()
    dead = [row for row in running if not _alive(row.pid)]
    if dead:
        with store.write_transaction(engine) as conn:
            for row in dead:
                conn.execute(
                    schema.runs.update()
                    .where(r.run_id == row.run_id, r.status == RunStatus.RUNNING)
                    .values(
                        status=RunStatus.FAILED,
                        finished_at=utc_now(),
                        n_predictions=0,
                        message=f"abandoned: process {row.pid} on {host} ended before finishing (killed or crashed)",
                    )
                )
    return [row.run_id for row in dead]


def ensure_model_row(conn: sa.Connection, model: ModelFile) -> None:
    m = schema.models.c
    if conn.execute(sa.select(m.model_id).where(m.model_id == model.sha256)).first() is None:
        conn.execute(
            schema.models.insert().values(
                model_id=model.sha256,
                path=str(model.path.resolve()),
                created_at=model.metadata["created_at"],
                metadata=json.dumps(model.metadata),
            )
        )


def _succeeded(model_id: str, shard: Shard | None) -> sa.ColumnElement[bool]:
    r = schema.runs.c
    return sa.and_(r.model_id == model_id, r.status == RunStatus.SUCCEEDED, same_shard(shard))


def scored_before(conn: sa.Connection, model_id: str, as_of: str, shard: Shard | None) -> bool:
    """Has this model (and shard) a succeeded run for as_of already?"""
    return conn.execute(
        sa.select(sa.exists().where(_succeeded(model_id, shard), schema.runs.c.as_of == as_of))
    ).scalar()


def scored_span(conn: sa.Connection, model_id: str, shard: Shard | None) -> tuple[str | None, str | None]:
    """(first, last) as_of of this model's (and shard's) succeeded runs; (None, None) before its first."""
    r = schema.runs.c
    return tuple(
        conn.execute(sa.select(sa.func.min(r.as_of), sa.func.max(r.as_of)).where(_succeeded(model_id, shard))).one()
    )


def same_shard(shard: Shard | None) -> sa.ColumnElement[bool]:
    """Runs of this shard only: each shard keeps its own ledger."""
    column = schema.runs.c.shard
    return column.is_(None) if shard is None else column == str(shard)


def _text(shard: Shard | None) -> str | None:
    return None if shard is None else str(shard)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
