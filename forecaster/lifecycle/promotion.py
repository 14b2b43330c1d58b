"""Decisions about the registry: make a model the champion (retiring the
previous one), reject it, or register it as a challenger; and the registry
as `forecaster models` lists it. The read side a scoring host needs is
serving/registry.py.

The database keeps at most one champion (a partial unique index); a change
of champion retires the old one and promotes the new one in one transaction,
with its `promotions` row, so a crash leaves the previous state whole.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import sqlalchemy as sa

from ..artifact.model_file import ModelFile, load_model
from ..clock import utc_now
from ..db import schema, store
from ..db.schema import Decision, ModelStatus
from ..evidence import compared_with_naive
from ..serving.registry import champion_id
from ..serving.runs import ensure_model_row


def decide(conn: sa.Connection, model: ModelFile, decision: str, reason: str, metrics: dict | None = None) -> None:
    """Record a gate decision in the caller's transaction: "promoted" makes
    `model` the champion (retiring the previous one), "rejected" marks it
    rejected, "challenger" registers it to be scored beside the champion."""
    m = schema.models.c
    ensure_model_row(conn, model)
    previous = champion_id(conn)
    now = utc_now()
    this = schema.models.update().where(m.model_id == model.sha256)
    if decision == Decision.PROMOTED:
        if previous and previous != model.sha256:
            conn.execute(schema.models.update().where(m.model_id == previous).values(status=ModelStatus.RETIRED))
        conn.execute(this.values(status=ModelStatus.CHAMPION, promoted_at=now))
    elif decision == Decision.REJECTED:
        conn.execute(this.values(status=ModelStatus.REJECTED))
    elif decision == ModelStatus.CHALLENGER:
        conn.execute(this.values(status=ModelStatus.CHALLENGER))
        return  # not a decision yet: the gate comes later
    else:
        raise ValueError(f"unknown decision {decision!r}")
    conn.execute(
        schema.promotions.insert().values(
            decided_at=now,
            model_id=model.sha256,
            previous_model_id=previous,
            decision=str(decision),
            after_run_id=conn.execute(sa.select(sa.func.coalesce(sa.func.max(schema.runs.c.run_id), 0))).scalar(),
            reason=reason,
            metrics=json.dumps(metrics or {}),
        )
    )


def promote(engine: sa.Engine, model_path: str | Path, reason: str) -> list[str]:
    """Make a model file the champion by hand (the first one, or an override).
    Returns warnings (a model worse than naive on its own held-out days)."""
    model = load_model(model_path, "cpu")
    overall = model.metadata.get("metrics", {}).get("overall", {})
    warnings = []
    # The pooled ratio (no flat ticker breaks it); a file made before it was stored has the mean.
    which = "pooled" if overall.get("pooled_ratio") is not None else "mean"
    ratio = overall.get(f"{which}_ratio")
    if ratio is not None and math.isfinite(ratio) and compared_with_naive(ratio) == "worse":
        warnings.append(
            f"{Path(model_path).name} is worse than the naive forecast on its own held-out days "
            f"({which} RMSE ratio {ratio:.3f}); promoted as asked"
        )
    with store.write_transaction(engine) as conn:
        decide(
            conn,
            model,
            Decision.PROMOTED,
            reason,
            {
                "held_out": {k: overall.get(k) for k in ("pooled_ratio", "mean_ratio", "median_ratio", "n_tickers")},
                "manual": True,
            },
        )
        # The file given is the one served from now on (its sha256 is the model_id:
        # the same bytes), wherever the model was first scored from.
        m = schema.models.c
        conn.execute(schema.models.update().where(m.model_id == model.sha256).values(path=str(model.path.resolve())))
    return warnings
