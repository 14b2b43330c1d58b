"""Crontab lines as APScheduler triggers, with crontab's own weekday numbers.

APScheduler 3's CronTrigger.from_crontab() reads weekday numbers with
0 = Monday, so "1-5" would mean Tuesday-Saturday; crontab means Monday-Friday
(0 and 7 are Sunday). The weekday field is turned into day names, which both
read the same way.
"""

from __future__ import annotations

import datetime as dt

from apscheduler.triggers.cron import CronTrigger

from ..errors import ForecasterError

CRONTAB_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab: 0 (and 7) is Sunday


def make_trigger(cron: str, timezone: str) -> CronTrigger:
    """A trigger for a crontab line (minute hour day month weekday) in `timezone`."""
    fields = cron.split()
    try:
        if len(fields) != 5:
            raise ValueError("expected 5 fields: minute hour day month weekday")
        minute, hour, day, month, weekday = fields
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=crontab_weekdays(weekday), timezone=timezone
        )
    except (ValueError, KeyError, LookupError) as exc:
        raise ForecasterError(f"bad schedule {cron!r} / time zone {timezone!r}: {exc}") from None


def crontab_weekdays(field: str) -> str:
    """crontab's weekday field ("1-5", "0,6", "*/2", "mon-fri") as day names."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = 0, 6
        else:
            a, _, b = span.partition("-")
            first, last = _day_number(a), _day_number(b or a)
            if b and last == 0:
                last = 7  # "5-7" or "fri-sun": through Sunday
        days.update(d % 7 for d in range(first, last + 1, int(step or 1)))
    if not days:
        raise ValueError(f"weekday field {field!r} selects no day")
    return ",".join(CRONTAB_DAYS[d] for d in sorted(days))


def _day_number(token: str) -> int:
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token)
    if token[:3] in CRONTAB_DAYS:
        return CRONTAB_DAYS.index(token[:3])
    raise ValueError(f"bad weekday {token!r}")


def last_fire_before(trigger: CronTrigger, now: dt.datetime, within: dt.timedelta = dt.timedelta(days=366)):
    """The trigger's latest fire time at or before `now` (looking back `within`), or None."""
    # In UTC: datetimes that share a zone compare and add by wall clock, so in
    # the hour a DST fall-back repeats, 01:30 "plus a second" is 01:30 again.
    utc = dt.UTC
    now = now.astimezone(utc)
    last, at = None, trigger.get_next_fire_time(None, now - within)
    while at is not None and at.astimezone(utc) <= now:
        last = at.astimezone(utc)
        at = trigger.get_next_fire_time(at, last + dt.timedelta(seconds=1))
    return last
