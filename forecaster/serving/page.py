"""The night as one self-contained HTML page: what `forecaster report --html`,
`predict --html` and the daemon write.

No second source of truth: the header is `forecaster status`'s health, the
forecasts are the `latest_predictions` view, the accuracy and coverage come
from serving.report's build_report (as `forecaster report` prints them), and
the scoreboard is `forecaster models`'. Charts are matplotlib SVGs and the
table a small script, all inlined: the page needs no network to be viewed
(docs/report.md says why this and not Plotly or Vega-Lite).
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import sqlalchemy as sa

from .. import plots
from ..data.config import DEFAULT_CALENDAR
from ..db import schema
from ..errors import DataError
from ..files import strict_json, write_atomically
from . import report as accuracy
from .config import STALE_SHARE
from .registry import REGISTRY_COLUMNS
from .status import Health, health

PAGE_SESSIONS = 120  # the accuracy, coverage and charts cover this many recent as_of sessions
CHART_SESSIONS = 60  # sessions of closes drawn per ticker
DEFAULT_CHARTS = 3  # per kind: the most volatile, the least volatile, the largest misses of the last night
ROLLING = (20, 60)  # sessions of outcomes per rolling coverage window


@dataclass
class Night:
    """Everything the page shows, gathered from the library's own functions."""

    made_at: str
    health: Health
    failure: str | None  # this run's error, when the page is written after a failed run
    forecasts: list[dict]  # latest_predictions, one row per ticker
    report: accuracy.Report | None  # over the last PAGE_SESSIONS sessions; None before any outcome
    since: str | None
    after_run: bool = False  # written by predict or the daemon after a run: its own outcome decides the banner
    coverage: dict[int, list[dict]] = field(default_factory=dict)  # window -> accuracy.rolling()
    charts: dict[str, str] = field(default_factory=dict)  # ticker -> SVG
    chosen_why: dict[str, str] = field(default_factory=dict)  # ticker -> why it is drawn
    coverage_svg: str | None = None
    models: list[dict] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)


def gather(
    engine: sa.Engine,
    *,
    tickers: list[str] | tuple[str, ...] = (),
    since: str | None = None,
    calendar: str = DEFAULT_CALENDAR,
    failure: str | None = None,
    at: dt.datetime | None = None,
    after_run: bool = False,
    stale_share: float = STALE_SHARE,
    judged: Health | None = None,
) -> Night:
    """The page's figures; its header `judged` (a run's verdict, serving.after_run),
    else the health as `forecaster status` judges it at `at`."""
    from .registry import models_table

    with engine.connect() as conn:
        forecasts = [
            dict(r) for r in conn.execute(sa.text("SELECT * FROM latest_predictions ORDER BY ticker")).mappings()
        ]
        since = since or _recent_start(conn)
        pr = schema.promotions.c
        decisions = [
            dict(r)
            for r in conn.execute(
                sa.select(pr.decided_at, pr.model_id, pr.previous_model_id, pr.decision, pr.reason)
                .order_by(pr.promotion_id.desc())
                .limit(10)
            ).mappings()
        ]
    rep = accuracy.build_report(engine, since=since) if since else None
    rep = rep if rep and rep.overall["n"] else None
    night = Night(
        made_at=(at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="seconds"),
        health=judged or health(engine, at=at, calendar=calendar, stale_share=stale_share),
        failure=failure,
        after_run=after_run,
        forecasts=forecasts,
        report=rep,
        since=since,
        models=_scoreboard(engine, models_table(engine)),
        decisions=decisions,
    )
    if rep and rep.intervals:
        night.coverage = {w: accuracy.rolling(rep.intervals["sessions"], w) for w in ROLLING}
        night.coverage_svg = _coverage_chart(night.coverage)
    asked = sorted({t.strip().lower() for t in tickers if t.strip()})  # stored as in the files' names
    if asked:
        with engine.connect() as conn:
            t = schema.tickers.c
            known = set(conn.execute(sa.select(t.ticker).where(t.ticker.in_(asked))).scalars())
        if unknown := [a for a in asked if a not in known]:
            raise DataError(f"unknown ticker {', '.join(unknown)}: not in the database")
    night.chosen_why = _choose(forecasts, rep, asked)
    with engine.connect() as conn:
        night.charts = {t: _ticker_chart(conn, t) for t in night.chosen_why}
    return night


def _scoreboard(engine: sa.Engine, registry: list[dict]) -> list[dict]:
    """`forecaster models`' rows (status, trained through, the gate) with each
    model's figures on its own outcomes from the model_scoreboard view."""
    with engine.connect() as conn:
        board = {r["model_id"]: dict(r) for r in conn.execute(sa.text("SELECT * FROM model_scoreboard")).mappings()}
    empty = {"n": 0, "ratio": None, "coverage80": None, "coverage95": None}
    return [{**m, **{k: board.get(m["model_id"], empty)[k] for k in empty}} for m in registry]


def _recent_start(conn: sa.Connection) -> str | None:
    """The oldest of the last PAGE_SESSIONS as_of dates predicted."""
    p = schema.predictions.c
    recent = sa.select(p.as_of).distinct().order_by(p.as_of.desc()).limit(PAGE_SESSIONS).subquery()
    return conn.execute(sa.select(sa.func.min(recent.c.as_of))).scalar()


def _choose(forecasts: list[dict], rep: accuracy.Report | None, asked) -> dict[str, str]:
    """The tickers drawn: those asked, else the few with the widest and the
    narrowest 80% band tonight (relative to the close) and the largest misses
    of the newest night with outcomes."""
    if asked:
        return {t: "asked" for t in asked}
    chosen: dict[str, str] = {}
    banded = sorted(
        (r for r in forecasts if r["lo80"] is not None), key=lambda r: (r["hi80"] - r["lo80"]) / r["last_close"]
    )
    for r in reversed(banded[-DEFAULT_CHARTS:]):
        chosen.setdefault(r["ticker"], "widest 80% band tonight")
    for r in banded[:DEFAULT_CHARTS]:
        chosen.setdefault(r["ticker"], "narrowest 80% band tonight")
    if rep:
        newest = max(r["as_of"] for r in rep.outcomes)
        last = [r for r in rep.outcomes if r["as_of"] == newest]
        for r in sorted(last, key=lambda r: -abs(r["actual_close"] - r["predicted_close"]) / r["last_close"])[
            :DEFAULT_CHARTS
        ]:
            chosen.setdefault(r["ticker"], f"largest misses of {newest}")
    return chosen


def _ticker_chart(conn: sa.Connection, ticker: str) -> str:
    p = schema.prices.c
    closes = conn.execute(
        sa.select(p.date, p.close).where(p.ticker == ticker).order_by(p.date.desc()).limit(CHART_SESSIONS)
    ).all()[::-1]
    first = closes[0][0] if closes else "9999-12-31"
    rows = conn.execute(
        sa.text(
            "SELECT target_date, predicted_close, lo80, hi80, lo95, hi95, actual_date, actual_close, in80 "
            "FROM prediction_outcomes WHERE ticker = :t AND served = 1 AND as_of >= :first AND lo80 IS NOT NULL "
            "ORDER BY as_of"
        ),
        {"t": ticker, "first": first},
    ).mappings()
    rows = [dict(r) for r in rows]
    served = {k: [r[k] for r in rows] for k in ("target_date", "predicted_close", "lo80", "hi80", "lo95", "hi95")}
    outside = [(r["actual_date"], r["actual_close"]) for r in rows if r["in80"] == 0]
    return plots.ticker_night(
        ticker,
        ([d for d, _ in closes], [c for _, c in closes]),
        served,
        ([d for d, _ in outside], [c for _, c in outside]),
    )


def _coverage_chart(coverage: dict[int, list[dict]]) -> str:
    """Both levels over the rolling 20 and 60 sessions, RiskMetrics' over 60, and
    the score ratio over 60; each line from its first full window (all of it
    while none is full yet)."""

    def full(rows):
        complete = [r for r in rows if r["complete"]]
        return complete or rows

    dates = [r["as_of"] for r in coverage[max(ROLLING)]]
    lines = {}
    for window in ROLLING:
        rows = {r["as_of"]: r for r in full(coverage[window])}
        for level in (80, 95):
            lines[f"{level}%, {window} sessions"] = [rows[d][f"coverage{level}"] if d in rows else None for d in dates]
    long = {r["as_of"]: r for r in full(coverage[max(ROLLING)])}
    for level in (80, 95):
        lines[f"RiskMetrics {level}%, 60 sessions"] = [
            long[d][f"rm_coverage{level}"] if d in long else None for d in dates
        ]
    ratio = [long[d]["score_vs_riskmetrics"] if d in long else None for d in dates]
    return plots.coverage_over_time(dates, lines, ratio)


def write(path: Path, night: Night) -> Path:
    """The page, replaced atomically: a reader never sees half of one."""
    text = render(night).encode()
    write_atomically(Path(path), lambda fh: fh.write(text))
    return Path(path)


# ---- rendering ------------------------------------------------------------

esc = html.escape


def render(night: Night) -> str:
    asset = resources.files(__package__).joinpath("page_assets")
    style, script = asset.joinpath("report.css").read_text(), asset.joinpath("report.js").read_text()
    h = night.health
    run = h.last_success or h.served_before_promotion
    title = ("FAILED " if night.failure else "") + f"forecaster: {run['as_of'] if run else 'no run yet'}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title>",
            f"<style>{style}</style></head><body>",
            _header(night),
            _forecasts(night),
            _charts(night),
            _accuracy(night),
            _models(night),
            f"<footer>Written {esc(night.made_at)} by forecaster from the database alone.</footer>",
            f"<script>{script}</script>",
            "</body></html>",
        ]
    )


def _header(night: Night) -> str:
    h = night.health
    out = ['<header id="health">']
    # After a run, that run's outcome; otherwise the newest run, when it failed after the last success.
    stored_failure = (
        not night.after_run
        and h.last_run
        and h.last_run["status"] == "failed"
        and (not h.last_success or h.last_run["run_id"] > h.last_success["run_id"])
    )
    if night.failure or stored_failure:
        why = night.failure or h.last_run["message"]
        out.append(
            f'<div class="banner failed" id="failure">The last run FAILED: {esc(why)}. '
            "The forecasts below are the newest ones stored, not tonight's.</div>"
        )
    run = h.last_success or h.served_before_promotion  # a champion promoted since: its predecessor's run serves
    tonight = sum(1 for r in night.forecasts if run and r["as_of"] == run["as_of"])  # a rerun adds none: count rows
    scored = (
        f"as of <b>{esc(run['as_of'])}</b>, finished {esc(str(run['finished_at']))} on {esc(str(run['device']))}, "
        f"{tonight} tickers, by model <code>{esc(str(run['model_id'])[:12])}</code>"
        if run
        else "no successful run yet"
    )
    model = (
        f"serving model <code>{esc(h.model_id[:12])}</code>"
        + (f", champion since {esc(h.champion_since)}" if h.champion_since else "")
        if h.model_id
        else "no model yet"
    )
    out.append(f"<h1>Forecasts {scored}</h1><p>{model}</p>")
    out.append(
        f'<p class="state {esc(h.state)}" id="state">{esc(h.state.upper())} (exit {h.exit_code}): '
        f"owed session {esc(h.owed_session)}, judged {esc(h.at)}</p>"
    )
    checks = "".join(
        f'<li class="{esc(c.state)}"><b>{esc(c.name)}</b> {esc(c.state)}: {esc(c.said)}</li>' for c in h.checks
    )
    out.append(f'<ul class="checks">{checks}</ul></header>')
    return "\n".join(out)


FORECAST_COLUMNS = [  # (key in the page's data, heading)
    ("ticker", "ticker"),
    ("as_of", "as of"),
    ("target_date", "for"),
    ("last_close", "last close"),
    ("predicted_close", "predicted"),
    ("change", "change %"),
    ("lo80", "80% low %"),
    ("hi80", "80% high %"),
    ("lo95", "95% low %"),
    ("hi95", "95% high %"),
    ("sessions_behind", "behind"),
    ("model", "model"),
    ("flags", "flags"),
]


def _forecasts(night: Night) -> str:
    def percent(value, last):
        return None if value is None else round(100 * (value / last - 1), 3)

    rows = [
        {
            "ticker": r["ticker"],
            "as_of": r["as_of"],
            "target_date": r["target_date"],
            "last_close": r["last_close"],
            "predicted_close": round(r["predicted_close"], 4),
            "change": percent(r["predicted_close"], r["last_close"]),
            **{c: percent(r[c], r["last_close"]) for c in ("lo80", "hi80", "lo95", "hi95")},
            "sessions_behind": r["sessions_behind"],
            "model": r["model_id"][:12],
            "flags": r["flags"] or "",
        }
        for r in night.forecasts
    ]
    data = strict_json({"columns": FORECAST_COLUMNS, "rows": rows}).replace("</", "<\\/")
    return (
        '<section id="forecasts"><h2>Forecasts for the next session</h2>'
        "<p>Bands are percentages of the last close; click a heading to sort, type to filter (ticker or flag).</p>"
        '<input id="filter" type="search" placeholder="filter: ticker or flag" aria-label="filter">'
        '<span id="shown"></span> <button id="show-all" type="button" hidden>show all</button>'
        '<table id="forecast-table"><thead></thead><tbody></tbody></table>'
        f'<script id="forecast-data" type="application/json">{data}</script></section>'
    )


def _charts(night: Night) -> str:
    if not night.charts:
        return '<section id="charts"><h2>Tickers</h2><p>No ticker to draw yet.</p></section>'
    figures = "".join(
        f'<figure class="chart" data-ticker="{esc(t)}">{svg}<figcaption>{esc(t)}: {esc(night.chosen_why[t])}'
        "</figcaption></figure>"
        for t, svg in night.charts.items()
    )
    return (
        '<section id="charts"><h2>Tickers</h2><p>Closes of the last sessions, the served predictions with their '
        f"80% and 95% bands, and the closes that fell outside the 80% band (x).</p>{figures}</section>"
    )


def _accuracy(night: Night) -> str:
    rep = night.report
    if rep is None:
        return (
            '<section id="accuracy"><h2>How the forecasts held</h2><p>No prediction has an outcome yet: '
            "run a backfill (predict --from/--to) or wait a few nights.</p></section>"
        )
    o = rep.overall
    ratio = "undefined" if o["pooled_ratio"] is None else f"{o['pooled_ratio']:.4f}"
    parts = [
        f'<section id="accuracy"><h2>How the forecasts held</h2><p>Served predictions as of {esc(night.since)} '
        f"or later: {o['n']} outcomes, pooled RMSE ratio to naive (relative to the last close) "
        f'<b id="pooled-ratio">{ratio}</b>.</p>'
    ]
    if rep.intervals:
        f = rep.intervals["overall"]
        score = f["score_vs_riskmetrics"]
        parts.append(
            '<table id="interval-summary"><thead><tr><th></th><th>80%</th><th>95%</th></tr></thead><tbody>'
            f'<tr><td>held</td><td id="coverage80">{100 * f["coverage80"]:.1f}%</td>'
            f'<td id="coverage95">{100 * f["coverage95"]:.1f}%</td></tr>'
            f"<tr><td>RiskMetrics held</td><td>{100 * f['riskmetrics']['coverage80']:.1f}%</td>"
            f"<td>{100 * f['riskmetrics']['coverage95']:.1f}%</td></tr></tbody></table>"
            f'<p>Interval score over RiskMetrics\' (below 1 is better): <b id="score-ratio">'
            f"{'undefined' if score is None else f'{score:.3f}'}</b>.</p>"
        )
        latest = {w: rows[-1] for w, rows in night.coverage.items() if rows}
        items = "".join(
            f"<li>last {w} sessions: {100 * r['coverage80']:.1f}% / {100 * r['coverage95']:.1f}% held"
            + ("" if r["complete"] else f" (only {len(night.coverage[w])} session(s) in the range shown)")
            + "</li>"
            for w, r in latest.items()
        )
        parts.append(f"<ul>{items}</ul>")
        parts.append(f'<figure class="chart" id="coverage-chart">{night.coverage_svg}</figure>')
    parts.append("</section>")
    return "".join(parts)


def _models(night: Night) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return esc("" if value is None else str(value))

    columns = [*REGISTRY_COLUMNS, "n", "ratio", "coverage80", "coverage95"]
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{cell(m.get(c))[:12] if c == 'model_id' else cell(m.get(c))}</td>" for c in columns)
        + "</tr>"
        for m in night.models
    )
    decisions = "".join(
        f"<tr><td>{esc(d['decided_at'])}</td><td>{esc(d['model_id'][:12])}</td>"
        f"<td>{esc((d['previous_model_id'] or '')[:12])}</td><td>{esc(d['decision'])}</td>"
        f"<td>{esc(d['reason'])}</td></tr>"
        for d in night.decisions
    )
    return (
        '<section id="models"><h2>Models</h2>'
        f'<table id="scoreboard"><thead><tr>{"".join(f"<th>{c}</th>" for c in columns)}</tr></thead>'
        f"<tbody>{rows}</tbody></table><h3>Last gate decisions</h3>"
        '<table id="decisions"><thead><tr><th>decided</th><th>model</th><th>against</th><th>decision</th>'
        "<th>reason</th></tr></thead>"
        f"<tbody>{decisions or '<tr><td colspan=5>none yet</td></tr>'}</tbody></table></section>"
    )
