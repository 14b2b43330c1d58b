"""Files -> prices: reading and judging OHLC files, loading them into the
database (the single source of truth), and reading prices back, point in time.

Imports only the top-level common modules (errors, files, clock, features).
"""
