"""Defaults of the data layer (the CLI reads them from here)."""

DEFAULT_CALENDAR = "XNYS"  # exchange_calendars code of the NYSE
SAMPLE_TICKERS = 5  # sample-data: how many synthetic tickers...
SAMPLE_DAYS = 750  # ...of how many business days
# Seconds a file must have been unchanged before its unterminated last line is
# read: before that, a writer may be in the middle of it (reading.py).
SETTLE_SECONDS = 60.0
