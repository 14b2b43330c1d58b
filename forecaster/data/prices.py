"""Prices read back from the store: a ticker's history as a series (windows
of it are windows.py's job)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from ..db import schema
from ..errors import DataError


@dataclass
class Series:
    """One ticker's history in date order."""

    ticker: str
    dates: np.ndarray  # (n,) ISO date strings
    ohlc: np.ndarray  # (n, 4) float64, FEATURES order

    def __len__(self) -> int:
        return len(self.dates)


def load_series(engine: sa.Engine, tickers: list[str]) -> dict[str, Series]:
    """Prices for `tickers` from the store; unknown tickers are a DataError."""
    p = schema.prices.c
    out: dict[str, Series] = {}
    with engine.connect() as conn:
        known = set(conn.execute(sa.select(schema.tickers.c.ticker)).scalars())
        unknown = [t for t in tickers if t not in known]
        if unknown:
            raise DataError(
                f"unknown ticker{'s' * (len(unknown) > 1)} {', '.join(unknown)}: "
                f"not in the database ({len(known)} tickers stored)"
            )
        for ticker in tickers:
            rows = conn.execute(
                sa.select(p.date, p.open, p.high, p.low, p.close).where(p.ticker == ticker).order_by(p.date)
            ).all()
            out[ticker] = Series(
                ticker,
                np.array([r[0] for r in rows], dtype=object),
                np.array([r[1:] for r in rows], dtype=np.float64).reshape(-1, 4),
            )
    return out


def all_tickers(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(schema.tickers.c.ticker).order_by(schema.tickers.c.ticker)).scalars())
