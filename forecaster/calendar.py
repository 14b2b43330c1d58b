"""Trading days from a maintained exchange calendar (exchange_calendars),
not a hand-written holiday list. NYSE ("XNYS") by default."""
from __future__ import annotations

import datetime as dt
import functools

import pandas as pd

from .errors import DataError

DEFAULT_CALENDAR = "XNYS"


@functools.lru_cache(maxsize=8)
def _calendar(name: str, start_year: int):
    import exchange_calendars as xcals  # half a second to import: only when needed
    try:
        # The library's default window is the last 20 years; our data goes further back.
        return xcals.get_calendar(name, start=f"{start_year}-01-01")
    except xcals.errors.InvalidCalendarName:
        raise DataError(f"unknown exchange calendar {name!r} (e.g. XNYS, XLON, XTKS)") from None


def _around(day: dt.date, calendar: str):
    # Building a calendar costs time per year covered: start a little before
    # the day (one calendar per two-year block, cached, serves a backfill too).
    return _calendar(calendar, day.year - 1 - (day.year % 2))


def last_session(on_or_before: dt.date, calendar: str = DEFAULT_CALENDAR) -> str:
    """The latest session on or before a day (that day itself when it is one), as an ISO date."""
    return _around(on_or_before, calendar).date_to_session(
        pd.Timestamp(on_or_before), direction="previous").strftime("%Y-%m-%d")


def next_trading_day(as_of: str, calendar: str = DEFAULT_CALENDAR) -> str:
    """The first session strictly after `as_of` (ISO date), as an ISO date."""
    day = dt.date.fromisoformat(as_of)
    cal = _around(day, calendar)
    if day + dt.timedelta(days=1) > cal.last_session.date():
        raise DataError(f"{as_of} is beyond the end of the {calendar} calendar ({cal.last_session.date()})")
    return cal.date_to_session(pd.Timestamp(day + dt.timedelta(days=1)), direction="next").strftime("%Y-%m-%d")
