"""Which as_of dates a run scores: the ones asked for (predict), or the ones
a model still owes (the daemon's catch-up), decided from the ledgers."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from ..artifact.model_file import ModelFile
from ..data.config import DEFAULT_CALENDAR
from ..db import schema
from ..errors import DataError, NotYetError
from .config import DEFAULT_LOOKBACK
from .runs import scored_span
from .shards import Shard


def check_dates(*values: str | None) -> None:
    """Every given date is YYYY-MM-DD (checked before any work is done)."""
    for value in values:
        if value is None:
            continue
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise DataError(f"{value!r} is not a date (expected YYYY-MM-DD)") from None


def _may_still_come(as_of: str, newest: str, calendar: str) -> bool:
    """Whether the closes of `as_of` can still arrive: a session after the
    newest stored, and not after the exchange's today (a holiday, a weekend or
    next year never will)."""
    from ..data.calendar import exchange_today, last_session

    day = dt.date.fromisoformat(as_of)
    return newest < as_of and day <= exchange_today(calendar) and last_session(day, calendar) == as_of


def as_of_dates(
    engine: sa.Engine, as_of: str | None, start: str | None, end: str | None, calendar: str = DEFAULT_CALENDAR
) -> list[str]:
    """The given as_of, every date with prices in [start, end], or the newest
    date stored; DataError, before any run starts, for a date without prices."""
    check_dates(as_of, start, end)
    if start and end and start > end:
        raise DataError(f"--from {start} is after --to {end}")
    d = schema.price_dates.c
    with engine.connect() as conn:
        if start or end:
            dates = list(
                conn.execute(
                    sa.select(d.date)
                    .where(d.date >= (start or "0000-00-00"), d.date <= (end or "9999-99-99"))
                    .order_by(d.date)
                ).scalars()
            )
            if not dates:
                raise DataError(f"no prices stored between {start or 'the start'} and {end or 'the end'}")
            return dates
        newest = conn.execute(sa.select(sa.func.max(d.date))).scalar()
        if as_of and newest is not None:
            if conn.execute(sa.select(d.date).where(d.date == as_of)).first() is None:
                day = dt.date.fromisoformat(as_of)
                what = f"a {day:%A}" if day.weekday() >= 5 else "no ticker has a close that day"
                said = f"no prices stored for {as_of} ({what}); the newest date with prices is {newest}"
                raise (NotYetError if _may_still_come(as_of, newest, calendar) else DataError)(said)
            return [as_of]
    if newest is None:
        raise DataError("the database holds no prices yet: ingest some first, or pass --data")
    return [newest]


def owed_dates(
    engine: sa.Engine, model: ModelFile, shard: Shard | None = None, lookback: int = DEFAULT_LOOKBACK
) -> list[str]:
    """The as_of dates this model still owes, from the ledgers (not from the
    scheduler's memory), so downtime, a crash or late files lose nothing:

    * every date with prices after its last succeeded run (with no run yet,
      the newest date only);
    * any of the last `lookback` dates since its first run on which some
      ticker has a close and enough history but no prediction from this
      model: its file arrived after that night was scored.
    """
    d = schema.price_dates.c
    with engine.connect() as conn:
        first, last = scored_span(conn, model.sha256, shard)
        if last is None:
            newest = conn.execute(sa.select(sa.func.max(d.date))).scalar()
            return [newest] if newest else []
        after = list(conn.execute(sa.select(d.date).where(d.date > last).order_by(d.date)).scalars())
        recent = (
            conn.execute(
                sa.select(d.date)
                .where(d.date <= last, d.date >= first)
                .order_by(d.date.desc())
                .limit(max(0, lookback - len(after)))
            )
            .scalars()
            .all()
        )
        late = [day for day in recent if late_tickers(conn, model, day, shard)]
    return sorted(late) + after


def late_tickers(conn: sa.Connection, model: ModelFile, as_of: str, shard: Shard | None = None) -> list[str]:
    """Tickers with a close on as_of and enough history up to it that this
    model has not scored for as_of (and could: its shard, its tickers)."""
    t, p, q = schema.tickers.c, schema.prices.c, schema.predictions.c
    unscored = (
        conn.execute(
            sa.select(t.ticker)
            .where(
                t.first_date <= as_of,
                t.last_date >= as_of,
                # One key seek per ticker, planned so without statistics too (a
                # join was planned as a scan of every price on SQLite).
                sa.exists().where(p.ticker == t.ticker, p.date == as_of),
                ~sa.exists().where(q.model_id == model.sha256, q.ticker == t.ticker, q.as_of == as_of),
            )
            .order_by(t.ticker)
        )
        .scalars()
        .all()
    )
    known = set(model.training_tickers) if model.uses_ticker_index else None
    history = sa.select(sa.func.count()).select_from(
        sa.select(p.date).where(p.ticker == sa.bindparam("ticker"), p.date <= as_of).limit(model.input_rows).subquery()
    )
    return [
        ticker
        for ticker in unscored
        if (shard is None or ticker in shard)
        and (known is None or ticker in known)
        and conn.execute(history, {"ticker": ticker}).scalar() >= model.input_rows
    ]
