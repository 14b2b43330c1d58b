"""Plain-text tables for the terminal: one format for every command."""

from __future__ import annotations

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
