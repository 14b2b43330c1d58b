"""Trading days from a maintained exchange calendar (exchange_calendars),
not a hand-written holiday list. NYSE ("XNYS") by default.

Importing exchange_calendars and building a calendar take about 0.4 s, which
was a fifth of a nightly run. So the sessions are copied into the database
(`calendar_sessions`) once for a range of years, keyed by the library's
version, and a night reads its next trading day there; the library is loaded
only to fill or extend that copy.
"""

from __future__ import annotations

import datetime as dt
import functools
from importlib import metadata

import sqlalchemy as sa

from ..db import bulk, schema, store
from ..errors import DataError
from .config import DEFAULT_CALENDAR

# The time zones of the common calendars, so that judging "today on the
# exchange" (every ingest) does not import the library (~0.4 s). Any other
# calendar asks the library. tests/data/test_calendar.py checks these against it.
TIMEZONES = {
    "XNYS": "America/New_York",
    "XNAS": "America/New_York",
    "XASE": "America/New_York",
    "XTSE": "America/Toronto",
    "XLON": "Europe/London",
    "XETR": "Europe/Berlin",
    "XPAR": "Europe/Paris",
    "XSWX": "Europe/Zurich",
    "XTKS": "Asia/Tokyo",
    "XHKG": "Asia/Hong_Kong",
    "XASX": "Australia/Sydney",
}


def timezone(calendar: str = DEFAULT_CALENDAR) -> str:
    """The exchange's time zone (IANA name)."""
    if calendar in TIMEZONES:
        return TIMEZONES[calendar]
    return str(_calendar(calendar, dt.date.today().year - 1).tz)


def exchange_today(calendar: str = DEFAULT_CALENDAR, now: dt.datetime | None = None) -> dt.date:
    """The current day where the exchange is (a row dated later cannot have traded yet)."""
    from zoneinfo import ZoneInfo

    return (now or dt.datetime.now(dt.UTC)).astimezone(ZoneInfo(timezone(calendar))).date()


@functools.lru_cache(maxsize=8)
def _calendar(name: str, start_year: int):
    import exchange_calendars as xcals  # slow to import: only when the copy must be filled

    try:
        # The library's default window is the last 20 years; our data goes further back.
        return xcals.get_calendar(name, start=f"{start_year}-01-01")
    except xcals.errors.InvalidCalendarName:
        raise DataError(f"unknown exchange calendar {name!r} (e.g. XNYS, XLON, XTKS)") from None
    except (ValueError, xcals.errors.CalendarError) as exc:  # e.g. a start beyond the calendar's end
        raise DataError(f"the {name} calendar has no sessions from {start_year}: {str(exc).splitlines()[0]}") from None


def _around(day: dt.date, calendar: str):
    # Building a calendar costs time per year covered: start a little before
    # the day (one calendar per two-year block, cached, serves a backfill too).
    return _calendar(calendar, day.year - 1 - (day.year % 2))


def last_session(on_or_before: dt.date, calendar: str = DEFAULT_CALENDAR) -> str:
    """The latest session on or before a day (that day itself when it is one), as an ISO date."""
    import pandas as pd

    return (
        _around(on_or_before, calendar)
        .date_to_session(pd.Timestamp(on_or_before), direction="previous")
        .strftime("%Y-%m-%d")
    )


def last_closed_session(at: dt.datetime, calendar: str = DEFAULT_CALENDAR) -> str:
    """The newest session whose close had passed at `at` (an aware datetime), as an ISO date:
    at 06:00 on a Friday in New York, Thursday's."""
    import numpy as np
    import pandas as pd

    moment = pd.Timestamp(at).tz_convert("UTC")
    cal = _around(moment.date() - dt.timedelta(days=10), calendar)
    if moment > cal.closes.iloc[-1]:
        raise DataError(f"{at:%Y-%m-%d} is beyond the end of the {calendar} calendar ({cal.last_session.date()})")
    closes = cal.closes.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    closed = int(np.searchsorted(closes, moment.tz_localize(None).to_datetime64(), side="right")) - 1
    if closed < 0:
        raise DataError(f"no {calendar} session had closed by {at:%Y-%m-%d %H:%M}")
    return cal.closes.index[closed].strftime("%Y-%m-%d")


def next_trading_day(as_of: str, calendar: str = DEFAULT_CALENDAR, *, engine: sa.Engine | None = None) -> str:
    """The first session strictly after `as_of` (ISO date), as an ISO date.
    With an `engine`, from the database's copy of the calendar (filled on first need)."""
    if engine is None:
        return _next_from_library(as_of, calendar)
    cached = _next_from_copy(engine, as_of, calendar)
    if cached is None:
        _fill_copy(engine, as_of, calendar)
        cached = _next_from_copy(engine, as_of, calendar)
    return cached if cached is not None else _next_from_library(as_of, calendar)


def _next_from_library(as_of: str, calendar: str) -> str:
    import pandas as pd

    day = dt.date.fromisoformat(as_of)
    cal = _around(day, calendar)
    if day + dt.timedelta(days=1) > cal.last_session.date():
        raise DataError(f"{as_of} is beyond the end of the {calendar} calendar ({cal.last_session.date()})")
    return cal.date_to_session(pd.Timestamp(day + dt.timedelta(days=1)), direction="next").strftime("%Y-%m-%d")


def _source() -> str:
    return f"exchange_calendars {metadata.version('exchange_calendars')}"


def _next_from_copy(engine: sa.Engine, as_of: str, calendar: str) -> str | None:
    """The next session from the copy, or None when the copy does not cover as_of."""
    c, s = schema.calendar_coverage.c, schema.calendar_sessions.c
    source = _source()
    with engine.connect() as conn:
        covered = conn.execute(
            sa.select(c.first_day, c.last_day).where(c.calendar == calendar, c.source == source)
        ).first()
        if covered is None or not covered.first_day <= as_of < covered.last_day:
            return None
        return conn.execute(
            sa.select(sa.func.min(s.date)).where(s.calendar == calendar, s.source == source, s.date > as_of)
        ).scalar()


def _fill_copy(engine: sa.Engine, as_of: str, calendar: str) -> None:
    """Copy every session from before as_of (or the copy's start) to the library's horizon."""
    c, s = schema.calendar_coverage.c, schema.calendar_sessions.c
    source = _source()
    with engine.connect() as conn:
        first = conn.execute(sa.select(c.first_day).where(c.calendar == calendar, c.source == source)).scalar()
    start = min(dt.date.fromisoformat(as_of), dt.date.fromisoformat(first) if first else dt.date.max)
    cal = _around(start, calendar)
    sessions = [d.strftime("%Y-%m-%d") for d in cal.sessions]
    first_day = dt.date(cal.first_session.year, 1, 1).isoformat()  # the calendar starts on Jan 1
    with store.write_transaction(engine) as conn:
        conn.execute(schema.calendar_sessions.delete().where(s.calendar == calendar, s.source == source))
        conn.execute(
            schema.calendar_sessions.insert(), [{"calendar": calendar, "source": source, "date": d} for d in sessions]
        )
        bulk.upsert(
            conn,
            schema.calendar_coverage,
            [{"calendar": calendar, "source": source, "first_day": first_day, "last_day": sessions[-1]}],
            ["calendar", "source"],
        )
