"""Files -> prices -> windows: finding, reading and judging OHLC files,
loading them into the database (the single source of truth), and reading
prices and windows back, point in time.

Imports the database layer (forecaster.db) and the top-level common modules.
"""
