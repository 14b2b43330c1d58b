"""The exchange calendar: the time zones kept beside the library agree with it."""

import pytest

from forecaster.data import calendar


@pytest.mark.parametrize("name", sorted(calendar.TIMEZONES))
def test_the_time_zones_kept_here_are_the_librarys(name):
    import exchange_calendars as xcals

    assert calendar.TIMEZONES[name] == str(xcals.get_calendar(name).tz)


def test_another_calendar_asks_the_library():
    assert calendar.timezone("XBOM") == "Asia/Kolkata"
