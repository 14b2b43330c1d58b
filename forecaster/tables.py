"""Plain-text tables for the terminal: one format for every command."""

from __future__ import annotations

import csv
import io
import math


def format_table(columns: list[str], rows: list[tuple]) -> str:
    """Columns padded to their widest cell; floats to 4 decimals; None as blank, a
    float that is no number (a ratio to a naive error of 0) as n/a."""
    text = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in text]
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "n/a"
    return "" if value is None else str(value)


def format_rows(columns: list[str], rows: list[tuple], output: str = "table") -> str:
    """The rows as a table, as CSV (with a header) or as a JSON array of
    objects (numbers as numbers; a float that is no number as null)."""
    if output == "table":
        return format_table(columns, rows)
    rows = [tuple(_plain(v) for v in row) for row in rows]
    if output == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)  # None (NULL, NaN) as an empty field
        return text.getvalue()
    if output == "json":
        from .files import strict_json

        return strict_json([dict(zip(columns, row, strict=True)) for row in rows]) + "\n"
    raise ValueError(f"unknown output format {output!r}: table, csv or json")


def _plain(value):
    """A database value as JSON and CSV can hold it: a Decimal as a number,
    a date or time in ISO form, bytes in hex, a float that is no number as None."""
    import datetime as dt
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
