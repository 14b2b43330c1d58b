"""Waiting for a night's files before scoring it.

Files do not all arrive at once. At its fire time the daemon may find only
some tickers' closes for the new session; scoring then would leave the rest
to the late-file catch-up the next night. So a scheduled run first waits,
re-ingesting every few minutes, until enough of the previous session's
tickers have a close on the new one, or until a deadline, when it scores
what it has and names what is missing.

The clock and the sleep are arguments, so tests run it on a fixed clock.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from ..data.calendar import next_trading_day
from ..data.config import DEFAULT_CALENDAR, SETTLE_SECONDS
from ..data.ingest import ingest
from ..db import schema
from .runs import scored_span
from .shards import Shard


@dataclass
class Freshness:
    as_of: str  # the session whose closes are awaited
    previous: str | None  # the session before it with prices
    expected: int  # tickers with a close on `previous`
    present: int  # of those, with a close on `as_of`
    missing: list[str] = field(default_factory=list)
    checks: int = 1

    @property
    def share(self) -> float:
        return self.present / self.expected if self.expected else 1.0


def freshness(engine: sa.Engine, as_of: str, shard: Shard | None = None) -> Freshness:
    """How many of the previous session's tickers already have a close on `as_of`."""
    d, t = schema.price_dates.c, schema.tickers.c
    with engine.connect() as conn:
        previous = conn.execute(sa.select(sa.func.max(d.date)).where(d.date < as_of)).scalar()
        if previous is None:
            return Freshness(as_of, None, 0, 0)
        # Two key seeks per ticker, planned so without statistics too (a join
        # was planned as a scan of every price on SQLite).
        rows = conn.execute(
            sa.select(t.ticker, _has_close(t.ticker, previous), _has_close(t.ticker, as_of)).where(
                t.last_date >= previous
            )
        ).all()
    had = {ticker for ticker, before, _ in rows if before and (shard is None or ticker in shard)}
    has = {ticker for ticker, _, now in rows if now}
    return Freshness(as_of, previous, len(had), len(had & has), sorted(had - has))


def _has_close(ticker: sa.ColumnElement, date: str) -> sa.Exists:
    p = schema.prices.c
    return sa.exists().where(p.ticker == ticker, p.date == date)


def session_to_await(
    engine: sa.Engine, model_id: str, closed: str, shard: Shard | None = None, calendar: str = DEFAULT_CALENDAR
) -> str | None:
    """The session a scheduled run waits for, or None when there is nothing to
    wait for (the run scores what is new at once).

    `closed` is the newest session closed at fire time. The session awaited is
    the newest of: the next session this model owes (the one after its last
    succeeded as_of; with no run yet, `closed`), and the newest session with
    any prices stored (closes have started to arrive for it), never past
    `closed`. So a model one night behind waits for tonight, not for the
    night it missed, which is complete; a vendor a day late waits for
    tonight, a replay of history for the session it will really deliver, and
    an older session nothing has arrived for is not waited for."""
    with engine.connect() as conn:
        _, last = scored_span(conn, model_id, shard)
        d = schema.price_dates.c
        arriving = conn.execute(sa.select(sa.func.max(d.date)).where(d.date <= closed)).scalar()
    owed = closed if last is None else next_trading_day(last, calendar, engine=engine)
    if owed > closed:
        return None
    if arriving and arriving > (last or ""):
        return max(owed, arriving)
    # Nothing has arrived past the last night scored: worth a wait only for
    # the newest closed session (tonight's files, late); an older one whose
    # files never came (a replay of history, a vendor days behind) is not.
    return owed if owed == closed else None


def wait_for_data(
    engine: sa.Engine,
    as_of: str,
    *,
    data: Iterable[str | Path] = (),
    min_share: float,
    deadline: dt.datetime,
    recheck: dt.timedelta,
    shard: Shard | None = None,
    calendar: str = DEFAULT_CALENDAR,
    settle: float = SETTLE_SECONDS,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    sleep: Callable[[float], None] = time.sleep,
    should_stop: Callable[[], bool] = lambda: False,
    on_check: Callable[[Freshness], None] = lambda f: None,
) -> Freshness:
    """Ingest `data` and check, again every `recheck`, until at least
    `min_share` of the previous session's tickers have a close on `as_of`,
    or `deadline` passes, or `should_stop()`; returns the last check."""
    checks = 0
    while True:
        if data:
            ingest(engine, data, calendar=calendar, settle=settle)
        state = freshness(engine, as_of, shard)
        checks += 1
        state.checks = checks
        on_check(state)
        left = (deadline - now()).total_seconds()
        if state.share >= min_share or left <= 0 or should_stop():
            return state
        sleep(min(recheck.total_seconds(), left))
