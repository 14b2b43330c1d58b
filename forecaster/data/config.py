"""Defaults of the data layer (the CLI reads them from here)."""

DEFAULT_CALENDAR = "XNYS"  # exchange_calendars code of the NYSE
# Seconds a file must have been unchanged before its unterminated last line is
# read: before that, a writer may be in the middle of it (reading.py).
SETTLE_SECONDS = 60.0
