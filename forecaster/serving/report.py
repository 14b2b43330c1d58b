"""Realized accuracy of stored predictions, beside the naive forecast, asked
of the `prediction_outcomes` view in SQL (predictions whose next close has
arrived): the same question a user can type into `forecaster sql`.

By default what was served (no challenger's shadow predictions); by model
when asked, each model on its own outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from .. import intervals as iv
from ..db import schema
from ..errors import DataError
from ..evidence import DIRECTION_NOISE
from ..tables import format_table
from .dates import check_dates

# Per group: RMSE and MAE of the model and of naive, and how often the model
# got the direction of the move right (up, down or unchanged; a forecast
# within DIRECTION_NOISE of the last close states no direction: evidence.py).
# CAST: on PostgreSQL the AVG of a numeric literal is a Decimal, not a float.
ACCURACY_SQL = """
    SELECT {group} COUNT(*) AS n,
           sqrt(AVG(error * error)) AS rmse, AVG(ABS(error)) AS mae,
           sqrt(AVG(naive_error * naive_error)) AS naive_rmse, AVG(ABS(naive_error)) AS naive_mae,
           sqrt(AVG((error / last_close) * (error / last_close))) AS relative_rmse,
           sqrt(AVG((naive_error / last_close) * (naive_error / last_close))) AS relative_naive_rmse,
           CAST(AVG(CASE WHEN (CASE WHEN predicted_close > last_close * (1 + :noise) THEN 1
                                    WHEN predicted_close < last_close * (1 - :noise) THEN -1 ELSE 0 END)
                            = (CASE WHEN actual_close > last_close THEN 1
                                    WHEN actual_close < last_close THEN -1 ELSE 0 END)
                         THEN 1.0 ELSE 0.0 END) AS DOUBLE PRECISION) AS direction_accuracy
    FROM prediction_outcomes
    WHERE actual_close IS NOT NULL AND {where}
    {group_by}
"""


@dataclass
class Report:
    per_ticker: list[dict]  # ticker and the accuracy figures, by ticker
    overall: dict  # the same over everything
    pending: int  # predictions whose next close has not arrived yet
    outcomes: list[dict]  # each prediction with its outcome (for the plot)
    intervals: dict | None = None  # coverage, width, score beside RiskMetrics: "overall", "tickers", "thirds"
    per_model: list[dict] | None = None  # model_id, status and the figures, when asked by model
    model_id: str | None = None  # the model asked for (a prefix resolved)
    # Outcomes whose window held a flagged price (price_flags), by ticker: judge those with care.
    flagged_prices: dict[str, int] = field(default_factory=dict)


def build_report(
    engine: sa.Engine,
    *,
    since: str | None = None,
    ticker: str | list[str] | None = None,
    model_id: str | None = None,
    by_model: bool = False,
) -> Report:
    """Served predictions only, unless a model is asked for (then that model's,
    shadows included) or `by_model` (then also one row per model)."""
    check_dates(since)
    where, params = ["1 = 1"], {"noise": DIRECTION_NOISE}
    with engine.connect() as conn:
        if since:
            newest = conn.execute(sa.select(sa.func.max(schema.predictions.c.as_of))).scalar()
            if newest is not None and since > newest:
                raise DataError(f"no prediction was made as of {since} or later: the newest as_of is {newest}")
            where.append("as_of >= :since")
            params["since"] = since
        asked = [ticker] if isinstance(ticker, str) else list(ticker or [])
        asked = sorted({t.strip().lower() for t in asked if t.strip()})  # stored as in the files' names
        if asked:
            t = schema.tickers.c
            known = set(conn.execute(sa.select(t.ticker).where(t.ticker.in_(asked))).scalars())
            unknown = [a for a in asked if a not in known]
            if unknown:
                raise DataError(f"unknown ticker {', '.join(unknown)}: not in the database")
            names = {f"ticker{k}": a for k, a in enumerate(asked)}
            params.update(names)
            where.append(f"ticker IN ({', '.join(':' + n for n in names)})")
        if model_id is not None:  # "" too: no model's id is empty
            params["model_id"] = model_id = resolve_model_id(conn, model_id)
            where.append("model_id = :model_id")
        per_model = _per_model(conn, " AND ".join(where), params) if by_model else None
        if not model_id:
            where.append("served = 1")  # the rest: what was served (a model asked for: all of its own)
        condition = " AND ".join(where)
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
        flagged = dict(
            conn.execute(
                sa.text(
                    f"SELECT ticker, COUNT(*) FROM prediction_outcomes WHERE actual_close IS NOT NULL "
                    f"AND flags LIKE '%flagged_prices%' AND {condition} GROUP BY ticker ORDER BY ticker"
                ),
                params,
            ).all()
        )
        if asked and not overall["n"] and not pending:  # known tickers, but nothing of them in the range asked
            raise DataError(
                f"no {'' if model_id else 'served '}prediction for {', '.join(asked)}"
                + (f" as of {since} or later" if since else "")
                + (f" by model {model_id[:12]}" if model_id else "")
            )
        outcomes = [
            dict(r)
            for r in conn.execute(
                sa.text(
                    f"SELECT ticker, as_of, actual_date, actual_close, predicted_close, last_close, "
                    f"lo80, hi80, lo95, hi95 FROM prediction_outcomes "
                    f"WHERE actual_close IS NOT NULL AND {condition} ORDER BY ticker, as_of"
                ),
                params,
            ).mappings()
        ]
        calibrated = [r for r in outcomes if r["lo80"] is not None]
        intervals = _intervals(conn, calibrated) if calibrated else None
    return Report(per_ticker, overall, pending, outcomes, intervals, per_model, model_id, flagged)


def _per_model(conn: sa.Connection, condition: str, params: dict) -> list[dict]:
    """One row per model, each on its own outcomes (a challenger's shadow predictions are its own)."""
    query = ACCURACY_SQL.format(group="model_id,", where=condition, group_by="GROUP BY model_id ORDER BY model_id")
    rows = [_with_ratio(r) for r in conn.execute(sa.text(query), params).mappings()]
    statuses = dict(conn.execute(sa.select(schema.models.c.model_id, schema.models.c.status)).all())
    return [{**r, "status": statuses.get(r["model_id"]) or ""} for r in rows]


def resolve_model_id(conn: sa.Connection, given: str) -> str:
    """The model whose id starts with `given` (the 12 characters `models` prints
    will do); DataError when none or several do."""
    prefix = given.strip().lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise DataError(f"{given!r} is not a model id (a sha256 in hex, or its first characters)")
    m = schema.models.c
    found = conn.execute(sa.select(m.model_id).where(m.model_id.like(f"{prefix}%")).limit(2)).scalars().all()
    if not found:
        raise DataError(f"no model's id starts with {given!r} (forecaster models lists them)")
    if len(found) > 1:
        raise DataError(f"several models' ids start with {given!r}: give more of it")
    return found[0]


RISKMETRICS_WARMUP = 250  # sessions of closes before the first as_of: lambda 0.94 forgets 0.94^250 ~ 2e-7


def _intervals(conn: sa.Connection, rows: list[dict]) -> dict:
    """Coverage, width and interval score of the stored intervals, per ticker
    and overall, beside RiskMetrics' intervals on the same days (computed here
    from the stored closes), and coverage in the calmest and wildest third of
    days by RiskMetrics' volatility that evening."""
    d = schema.price_dates.c
    first = min(r["as_of"] for r in rows)
    start = conn.execute(
        sa.select(
            sa.func.min(
                sa.select(d.date)
                .where(d.date <= first)
                .order_by(d.date.desc())
                .limit(RISKMETRICS_WARMUP)
                .subquery()
                .c.date
            )
        )
    ).scalar()
    volatility = {}
    p = schema.prices.c
    for ticker in sorted({r["ticker"] for r in rows}):
        history = conn.execute(
            sa.select(p.date, p.close).where(p.ticker == ticker, p.date >= start).order_by(p.date)
        ).all()
        vol = iv.riskmetrics_volatility(np.array([c for _, c in history]))
        volatility.update({(ticker, date): v for (date, _), v in zip(history, vol, strict=True)})
    per_ticker, columns = {}, {}
    for ticker in sorted({r["ticker"] for r in rows}):
        mine = [r for r in rows if r["ticker"] == ticker]
        per_ticker[ticker] = _interval_figures(mine, np.array([volatility[(ticker, r["as_of"])] for r in mine]))
    every = np.array([volatility[(r["ticker"], r["as_of"])] for r in rows])
    overall = _interval_figures(rows, every)
    relative = every  # RiskMetrics' volatility is a daily log-return sd: comparable across tickers
    calm, wild = relative <= np.nanquantile(relative, 1 / 3), relative > np.nanquantile(relative, 2 / 3)
    thirds = {
        name: iv.summary(_bounds(selected), *_actual_last(selected))
        for name, selected in (
            ("calm", [r for r, c in zip(rows, calm, strict=True) if c]),
            ("wild", [r for r, w in zip(rows, wild, strict=True) if w]),
        )
    }
    columns.update(overall=overall, tickers=per_ticker, thirds=thirds, sessions=_by_session(rows, every))
    return columns


def _by_session(rows: list[dict], volatility: np.ndarray) -> list[dict]:
    """Per as_of, oldest first: outcomes n, how many held at each level and the
    summed interval scores relative to the close, ours and RiskMetrics' (rm_):
    sums, so that any window of sessions adds up (rolling)."""
    actual, last = _actual_last(rows)
    ours, baseline = _bounds(rows), iv.riskmetrics_bounds(last, volatility)
    as_of = np.array([r["as_of"] for r in rows])
    figures = {}
    for i, level in enumerate(iv.LEVELS):
        tag = int(round(level * 100))
        for prefix, bounds in (("", ours), ("rm_", baseline)):
            lo, hi = bounds[2 * i], bounds[2 * i + 1]
            figures[f"{prefix}held{tag}"] = ((actual >= lo) & (actual <= hi)).astype(np.float64)
            figures[f"{prefix}score{tag}"] = iv.interval_score(lo, hi, actual, level) / last
    days, session = np.unique(as_of, return_inverse=True)  # one pass, not one mask per day
    sums = {k: np.bincount(session, v, minlength=len(days)) for k, v in figures.items()}
    counts = np.bincount(session, minlength=len(days))
    return [
        {"as_of": str(day), "n": int(counts[j]), **{k: float(v[j]) for k, v in sums.items()}}
        for j, day in enumerate(days)
    ]


def rolling(sessions: list[dict], window: int) -> list[dict]:
    """Coverage at both levels, ours and RiskMetrics', and the interval score
    ratio over the last `window` sessions at each session (report()'s
    intervals["sessions"]); complete once the window is full."""
    out = []
    for end in range(len(sessions)):
        chosen = sessions[max(0, end - window + 1) : end + 1]
        total = {k: sum(s[k] for s in chosen) for k in chosen[0] if k != "as_of"}
        n = total["n"]
        rm_score = total["rm_score80"] + total["rm_score95"]
        out.append(
            {
                "as_of": sessions[end]["as_of"],
                "complete": len(chosen) == window,
                **{f"{p}coverage{t}": total[f"{p}held{t}"] / n for p in ("", "rm_") for t in (80, 95)},
                "score_vs_riskmetrics": (total["score80"] + total["score95"]) / rm_score if rm_score else None,
            }
        )
    return out


def _bounds(rows: list[dict]) -> list[np.ndarray]:
    return [np.array([r[c] for r in rows], dtype=np.float64) for c in iv.COLUMNS]


def _actual_last(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array([r["actual_close"] for r in rows], dtype=np.float64),
        np.array([r["last_close"] for r in rows], dtype=np.float64),
    )


def _interval_figures(rows: list[dict], volatility: np.ndarray) -> dict:
    actual, last = _actual_last(rows)
    ours = iv.summary(_bounds(rows), actual, last)
    baseline = iv.summary(iv.riskmetrics_bounds(last, volatility), actual, last)
    ours["riskmetrics"] = baseline
    ours["score_vs_riskmetrics"] = iv.score_ratio(ours, baseline)
    return ours


def _with_ratio(row) -> dict:
    """ratio: RMSE over naive's, in price units (NaN where naive made no error: the
    ticker's closes never moved); pooled_ratio: the same relative to each last
    close, which weighs cheap and dear tickers alike and no flat ticker breaks
    (None only when no close moved at all)."""
    out = dict(row)
    out["ratio"] = out["rmse"] / out["naive_rmse"] if out["n"] and out["naive_rmse"] else float("nan")
    relative = out.pop("relative_rmse"), out.pop("relative_naive_rmse")
    out["pooled_ratio"] = relative[0] / relative[1] if out["n"] and relative[1] else None
    return out


def plot_report(report: Report, path: Path, tickers: list[str] | None = None) -> dict[str, Path]:
    """Predicted vs actual closes: one PNG per ticker asked (PATH itself for
    one, PATH's stem + .TICKER.png for several), or, with none asked, the
    ticker with most outcomes."""
    chosen = sorted({t.strip().lower() for t in tickers or [] if t.strip()}) or [
        max(report.per_ticker, key=lambda r: r["n"])["ticker"]
    ]
    with_outcomes = {r["ticker"] for r in report.outcomes}
    return {
        t: _plot_one(report, t, path if len(chosen) == 1 else path.with_name(f"{path.stem}.{t}{path.suffix or '.png'}"))
        for t in chosen
        if t in with_outcomes
    }


def _plot_one(report: Report, busiest: str, path: Path) -> Path:
    from ..plots import forecast_vs_actual

    rows = [r for r in report.outcomes if r["ticker"] == busiest]
    column = lambda name: [r[name] for r in rows]  # noqa: E731
    bands = None if rows[0]["lo80"] is None else [column(c) for c in iv.COLUMNS]
    return forecast_vs_actual(
        busiest,
        column("actual_date"),
        column("actual_close"),
        column("predicted_close"),
        column("last_close"),
        path,
        title=f"{busiest}: stored predictions vs actual closes"
        + (" with their 80% and 95% intervals" if bands else ""),
        bands=bands,
    )


def interval_table(figures: dict) -> str:
    """Coverage, width and interval score of the intervals, beside RiskMetrics' (rm_), per ticker and overall."""

    def row(name, f):
        rm = f["riskmetrics"]
        return (
            name,
            f["n"],
            pct(f["coverage80"]),
            pct(rm["coverage80"]),
            pct(f["coverage95"]),
            pct(rm["coverage95"]),
            f["width80"],
            f["score80"],
            rm["score80"],
            f["score95"],
            rm["score95"],
            None if f["score_vs_riskmetrics"] is None else round(f["score_vs_riskmetrics"], 3),
        )

    def pct(x):
        return f"{100 * x:.1f}%"

    rows = [row(t, f) for t, f in figures["tickers"].items()] + [row("ALL", figures["overall"])]
    table = format_table(
        [
            "ticker",
            "n",
            "in80",
            "rm_in80",
            "in95",
            "rm_in95",
            "width80",
            "score80",
            "rm_score80",
            "score95",
            "rm_score95",
            "score_vs_rm",
        ],
        rows,
    )
    calm, wild = figures["thirds"]["calm"], figures["thirds"]["wild"]
    return (
        f"{table}\ncoverage in the calmest third of days {pct(calm['coverage80'])} / {pct(calm['coverage95'])}, "
        f"in the wildest third {pct(wild['coverage80'])} / {pct(wild['coverage95'])} (80% / 95%); "
        "score_vs_rm: interval score relative to the close, ours over RiskMetrics' (below 1 is better)"
    )
