"""The model registry as a scoring host reads it: which model serves (the
champion), which are scored beside it (challengers), and the files they
were registered with. Decisions (promote, reject, register) are lifecycle
work: lifecycle/promotion.py.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from ..artifact.model_file import ModelFile, load_model
from ..db import schema
from ..db.schema import ModelStatus
from ..errors import ForecasterError, StoreError
from .config import MODEL_CHAMPION

CHAMPION = MODEL_CHAMPION  # what `--model champion` names


class NoChampionError(ForecasterError):
    """The registry has no champion yet."""


@dataclass
class Registered:
    model_id: str
    path: str
    status: str | None


def champion(engine: sa.Engine) -> Registered:
    """The serving model; NoChampionError names how to make one."""
    found = _with_status(engine, ModelStatus.CHAMPION)
    if not found:
        raise NoChampionError("no champion yet: promote one first (forecaster promote MODEL.onnx --reason TEXT)")
    return found[0]


def challengers(engine: sa.Engine) -> list[Registered]:
    """The models scored beside the champion every night (shadow scoring)."""
    return _with_status(engine, ModelStatus.CHALLENGER)


def champion_id(conn: sa.Connection) -> str | None:
    m = schema.models.c
    return conn.execute(sa.select(m.model_id).where(m.status == ModelStatus.CHAMPION)).scalar()


def trained_through(metadata: dict) -> str:
    """The newest training day of any of a model's tickers (validation and held-out days come after)."""
    tickers = metadata.get("training", {}).get("tickers", {})
    return max((t.get("train_end_date", "") for t in tickers.values()), default="")


def newest_registered_at(engine: sa.Engine) -> dt.datetime | None:
    """When the newest model with a registry status was made (a retrain makes one)."""
    m = schema.models.c
    with engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(m.created_at)).where(m.status.is_not(None))).scalar()
    return dt.datetime.fromisoformat(newest) if newest else None


def data_through(metadata: dict) -> str:
    """The newest day of any price a model's training read (held-out days included)."""
    tickers = metadata.get("training", {}).get("tickers", {})
    return max((t.get("last_date", "") for t in tickers.values()), default="")


def _with_status(engine: sa.Engine, status: str) -> list[Registered]:
    m = schema.models.c
    with engine.connect() as conn:
        return [
            Registered(r.model_id, r.path, r.status)
            for r in conn.execute(
                sa.select(m.model_id, m.path, m.status).where(m.status == status).order_by(m.created_at)
            )
        ]


def load_registered(entry: Registered, device: str = "cpu") -> ModelFile:
    """The registered file, checked to be the very file registered (same sha256)."""
    model = load_model(Path(entry.path), device)
    if model.sha256 != entry.model_id:
        raise ForecasterError(
            f"{entry.path} has changed since it was registered as {entry.status} "
            f"{entry.model_id[:12]} (its sha256 is now {model.sha256[:12]})"
        )
    return model


# The registry's own columns of models_table, as `forecaster models` and the HTML report show them first.
REGISTRY_COLUMNS = ["model_id", "status", "trained_through", "promoted_at", "decision", "gate_ratio"]


def _stored_json(text: str, where: str) -> dict:
    """A JSON column this project wrote; a clear error if it was changed by hand."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StoreError(f"{where} is not valid JSON ({exc}): was the database edited by hand?") from None


def models_table(engine: sa.Engine) -> list[dict]:
    """Every registered or scoring model: status, trained through, its latest
    gate decision and figures, and its realised ratio to naive since promotion."""
    m, p = schema.models.c, schema.promotions.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(m.model_id, m.path, m.status, m.promoted_at, m.created_at, m.metadata).order_by(m.created_at)
        ).all()
        gates = {
            r.model_id: r
            for r in conn.execute(
                sa.select(p.model_id, p.decision, p.decided_at, p.metrics, p.reason).order_by(p.promotion_id)
            )
        }
        out = []
        for r in rows:
            through = trained_through(_stored_json(r.metadata, f"models.metadata of model {r.model_id[:12]}"))
            # Since promotion: the predictions of runs started after it (a backfill included).
            realised = conn.execute(
                sa.text(
                    "SELECT COUNT(*), "
                    "sqrt(AVG(o.error * o.error)) / NULLIF(sqrt(AVG(o.naive_error * o.naive_error)), 0) "
                    "FROM prediction_outcomes o JOIN runs r ON r.run_id = o.run_id "
                    "WHERE o.model_id = :m AND o.actual_close IS NOT NULL AND r.started_at >= :since"
                ),
                {"m": r.model_id, "since": r.promoted_at or "9999"},
            ).one()
            gate = gates.get(r.model_id)
            where = f"promotions.metrics of model {r.model_id[:12]}"
            figures = _stored_json(gate.metrics, where) if gate and gate.metrics else {}
            out.append(
                {
                    "model_id": r.model_id,
                    "status": r.status or "",
                    "path": r.path,
                    "trained_through": through,
                    "promoted_at": r.promoted_at or "",
                    "decision": gate.decision if gate else "",
                    "gate_ratio": figures.get("challenger_vs_naive"),
                    "realised_n": realised[0],
                    "realised_ratio": realised[1],
                }
            )
    return out
