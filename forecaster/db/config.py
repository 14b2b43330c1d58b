"""Defaults of the database layer (the CLI reads them from here)."""

DEFAULT_DB_URL = "sqlite:///forecaster.db"  # a file in the working folder
SQL_ROW_LIMIT = 50  # rows `forecaster sql` prints at most, by default
