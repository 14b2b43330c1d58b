"""Realized accuracy of stored predictions, beside the naive forecast, asked
of the `prediction_outcomes` view in SQL (predictions whose next close has
arrived): the same question a user can type into `forecaster sql`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

COLUMNS = ("n", "rmse", "mae", "naive_rmse", "naive_mae", "ratio", "direction_accuracy")

# Per group: RMSE and MAE of the model and of naive, and how often the model
# got the direction of the move right (up, down or unchanged).
ACCURACY_SQL = """
    SELECT {group} COUNT(*) AS n,
           sqrt(AVG(error * error)) AS rmse, AVG(ABS(error)) AS mae,
           sqrt(AVG(naive_error * naive_error)) AS naive_rmse, AVG(ABS(naive_error)) AS naive_mae,
           AVG(CASE WHEN (CASE WHEN predicted_close > last_close THEN 1
                               WHEN predicted_close < last_close THEN -1 ELSE 0 END)
                       = (CASE WHEN actual_close > last_close THEN 1
                               WHEN actual_close < last_close THEN -1 ELSE 0 END)
                    THEN 1.0 ELSE 0.0 END) AS direction_accuracy
    FROM prediction_outcomes
    WHERE actual_close IS NOT NULL AND {where}
    {group_by}
"""


@dataclass
class Report:
    per_ticker: list[dict]  # ticker and COLUMNS, by ticker
    overall: dict  # COLUMNS over everything
    pending: int  # predictions whose next close has not arrived yet
    outcomes: list[dict]  # each prediction with its outcome (for the plot)


def build_report(
    engine: sa.Engine, *, since: str | None = None, ticker: str | None = None, model_id: str | None = None
) -> Report:
    where, params = ["1 = 1"], {}
    if since:
        where.append("as_of >= :since")
        params["since"] = since
    if ticker:
        where.append("ticker = :ticker")
        params["ticker"] = ticker.strip().lower()  # stored as in the files' names, lower-case
    if model_id:
        where.append("model_id = :model_id")
        params["model_id"] = model_id
    condition = " AND ".join(where)
    with engine.connect() as conn:
        per_ticker = [
            _with_ratio(r)
            for r in conn.execute(
                sa.text(
                    ACCURACY_SQL.format(group="ticker,", where=condition, group_by="GROUP BY ticker ORDER BY ticker")
                ),
                params,
            ).mappings()
        ]
        overall = _with_ratio(
            conn.execute(sa.text(ACCURACY_SQL.format(group="", where=condition, group_by="")), params).mappings().one()
        )
        pending = conn.execute(
            sa.text(f"SELECT COUNT(*) FROM prediction_outcomes WHERE actual_close IS NULL AND {condition}"), params
        ).scalar()
        outcomes = [
            dict(r)
            for r in conn.execute(
                sa.text(
                    f"SELECT ticker, actual_date, actual_close, predicted_close, last_close FROM prediction_outcomes "
                    f"WHERE actual_close IS NOT NULL AND {condition} ORDER BY ticker, as_of"
                ),
                params,
            ).mappings()
        ]
    return Report(per_ticker, overall, pending, outcomes)


def _with_ratio(row) -> dict:
    out = dict(row)
    out["ratio"] = out["rmse"] / out["naive_rmse"] if out["n"] and out["naive_rmse"] else float("nan")
    return out


def plot_report(report: Report, path: Path) -> Path:
    """Predicted vs actual closes for the ticker with most outcomes (or the only one)."""
    from ..plots import forecast_vs_actual

    busiest = max(report.per_ticker, key=lambda r: r["n"])["ticker"]
    rows = [r for r in report.outcomes if r["ticker"] == busiest]
    column = lambda name: [r[name] for r in rows]  # noqa: E731
    return forecast_vs_actual(
        busiest,
        column("actual_date"),
        column("actual_close"),
        column("predicted_close"),
        column("last_close"),
        path,
        title=f"{busiest}: stored predictions vs actual closes",
    )
