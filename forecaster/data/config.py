"""Defaults of the data layer (the CLI reads them from here)."""

DEFAULT_DB_URL = "sqlite:///forecaster.db"  # a file in the working folder
DEFAULT_CALENDAR = "XNYS"  # exchange_calendars code of the NYSE
