"""Realized accuracy of stored predictions, beside the naive forecast, from
the `prediction_outcomes` view (predictions whose next close has arrived)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from .metrics import accuracy


@dataclass
class Report:
    per_ticker: pd.DataFrame   # one row per ticker: n, rmse, mae, naive_rmse, ratio, direction_accuracy
    overall: dict
    pending: int               # predictions whose next close has not arrived yet
    outcomes: pd.DataFrame


def build_report(engine: sa.Engine, *, since: str | None = None, ticker: str | None = None,
                 model_id: str | None = None) -> Report:
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
    sql = f"SELECT * FROM prediction_outcomes WHERE {' AND '.join(where)} ORDER BY ticker, as_of"
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(sa.text(sql), params).mappings().all())
    if frame.empty:
        return Report(pd.DataFrame(), {"n": 0}, 0, frame)
    done = frame[frame["actual_close"].notna()]
    rows = []
    for name, g in done.groupby("ticker"):
        rows.append({"ticker": name, **accuracy(g["predicted_close"], g["actual_close"], g["last_close"])})
    overall = accuracy(done["predicted_close"], done["actual_close"], done["last_close"]) if len(done) else {"n": 0}
    return Report(pd.DataFrame(rows), overall, int(frame["actual_close"].isna().sum()), done)


def plot_report(report: Report, path: Path) -> Path:
    """Predicted vs actual closes for the ticker with most outcomes (or the only one)."""
    from .plots import forecast_vs_actual
    ticker = report.outcomes["ticker"].value_counts().idxmax()
    g = report.outcomes[report.outcomes["ticker"] == ticker]
    return forecast_vs_actual(ticker, g["actual_date"], g["actual_close"], g["predicted_close"],
                              g["last_close"], path, title=f"{ticker}: stored predictions vs actual closes")
