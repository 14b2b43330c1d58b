"""The database: the bottom layer. Engine and transactions (store), tables
and views (schema), creating and upgrading them (migrations), the bulk paths
through the driver (bulk), and read-only questions (query).

Imports nothing of forecaster but the top-level common modules.
"""
