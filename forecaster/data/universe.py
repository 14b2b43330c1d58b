"""A universe's prices as contiguous arrays: what training reads.

One float32 array holds every OHLC row of every ticker, ticker after ticker
in date order (5,000 tickers x 2,500 days is 200 MB), beside an int32 array
of dates (yyyymmdd). Windows are then index ranges into it, never copies:
memory grows with rows, not with windows x seq_len.

Loaded from the database in one columnar pass, chunk by chunk through the
driver (a server-side cursor on PostgreSQL), so no per-row Python objects
outlive their chunk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from ..db import schema
from ..db.bulk import iterate_plain
from ..errors import DataError
from ..features import FEATURES
from .prices import Series

CHUNK_ROWS = 200_000  # rows converted to arrays at a time
TICKERS_PER_QUERY = 500  # bound parameters per query, under any SQLite build's limit


@dataclass
class Universe:
    tickers: list[str]
    starts: np.ndarray  # (n_tickers + 1,) int64: ticker k owns rows [starts[k], starts[k + 1])
    dates: np.ndarray  # (N,) int32 yyyymmdd
    ohlc: np.ndarray  # (N, 4) float32, FEATURES order
    # (N,) bool: the row's close moved too far from the one before to be
    # trusted (price_flags, data/flags.py); None: nothing was judged
    flagged: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.tickers)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.starts)

    def rows(self, k: int) -> slice:
        return slice(int(self.starts[k]), int(self.starts[k + 1]))

    def iso_date(self, row: int) -> str:
        return iso_day(self.dates[row])

    def ticker_of(self, rows: np.ndarray) -> np.ndarray:
        """The ticker index (into `tickers`) of each global row."""
        return np.searchsorted(self.starts, rows, side="right") - 1

    def without(self, drop: set[int]) -> Universe:
        """The same universe without some tickers (by index)."""
        keep = [k for k in range(len(self)) if k not in drop]
        rows = np.concatenate([np.arange(self.starts[k], self.starts[k + 1]) for k in keep]) if keep else []
        counts = self.counts[keep]
        return Universe(
            [self.tickers[k] for k in keep],
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            self.dates[rows],
            self.ohlc[rows],
            None if self.flagged is None else self.flagged[rows],
        )

    def through(self, last_day: int) -> Universe:
        """The same tickers with only their rows dated on or before last_day
        (yyyymmdd): what the data looked like then."""
        keep = self.dates <= last_day
        counts = np.array([keep[self.rows(k)].sum() for k in range(len(self))], dtype=np.int64)
        return Universe(
            list(self.tickers),
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            self.dates[keep],
            self.ohlc[keep],
            None if self.flagged is None else self.flagged[keep],
        )

    def free_of_flags(self, starts: np.ndarray, length: int) -> np.ndarray:
        """(B,) bool: which `length`-row windows starting at global `starts` have
        no flagged row among their rows after the first and their target (a
        flag marks a move from the row before it, so both rows are in the window)."""
        if self.flagged is None or not self.flagged.any():
            return np.ones(len(starts), dtype=bool)
        seen = np.concatenate([[0], np.cumsum(self.flagged, dtype=np.int64)])
        return seen[starts + length + 1] == seen[starts + 1]

    def data_hash(self) -> str:
        """sha256 over the tickers, their row counts, dates and prices: provenance for a checkpoint."""
        h = hashlib.sha256()
        h.update("\n".join(self.tickers).encode())
        for array in (self.counts.astype("<i8"), self.dates.astype("<i4"), self.ohlc.astype("<f4")):
            h.update(np.ascontiguousarray(array).tobytes())
        if self.flagged is not None and self.flagged.any():  # they choose the training windows
            h.update(np.flatnonzero(self.flagged).astype("<i8").tobytes())
        return h.hexdigest()

    @classmethod
    def from_series(cls, series: dict[str, Series]) -> Universe:
        """From per-ticker series (library callers and tests)."""
        tickers = list(series)
        counts = [len(series[t]) for t in tickers]
        dates = np.concatenate([_yyyymmdd(series[t].dates) for t in tickers]) if tickers else np.empty(0, np.int32)
        ohlc = np.concatenate([series[t].ohlc for t in tickers]) if tickers else np.empty((0, len(FEATURES)))
        return cls(
            tickers,
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            dates.astype(np.int32),
            ohlc.astype(np.float32),
        )


def iso_day(yyyymmdd: int) -> str:
    """20240131 -> "2024-01-31" (the arrays' dates as the database writes them)."""
    d = int(yyyymmdd)
    return f"{d // 10000:04d}-{d // 100 % 100:02d}-{d % 100:02d}"


def _yyyymmdd(iso: np.ndarray) -> np.ndarray:
    return np.array([int(d[:4] + d[5:7] + d[8:10]) for d in iso], dtype=np.int32)


def stored_counts(engine: sa.Engine) -> dict[str, int]:
    """Every ticker in the database and its number of rows (from `tickers`, no scan of prices)."""
    with engine.connect() as conn:
        return _counts(conn)


def _counts(conn: sa.Connection) -> dict[str, int]:
    t = schema.tickers.c
    return dict(conn.execute(sa.select(t.ticker, t.n_rows).order_by(t.ticker)).all())


def load_universe(engine: sa.Engine, tickers: list[str]) -> Universe:
    """Every row of `tickers`, in one columnar pass, from one snapshot of the
    database; tickers in sorted order, so the database streams its primary
    key without sorting anything. Unknown tickers are a DataError."""
    tickers = sorted(set(tickers))
    p = schema.prices.c
    day = sa.cast(sa.func.replace(p.date, "-", ""), sa.Integer)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # one snapshot for the counts and the rows, as SQLite's read gives
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        known = _counts(conn)
        unknown = [t for t in tickers if t not in known]
        if unknown:
            raise DataError(
                f"unknown ticker{'s' * (len(unknown) > 1)} {', '.join(unknown)}: "
                f"not in the database ({len(known)} tickers stored)"
            )
        counts = np.array([known[t] for t in tickers], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        dates = np.empty(int(starts[-1]), dtype=np.int32)
        ohlc = np.empty((int(starts[-1]), len(FEATURES)), dtype=np.float32)
        at = 0
        for first in range(0, len(tickers), TICKERS_PER_QUERY):
            group = tickers[first : first + TICKERS_PER_QUERY]
            query = sa.select(day, p.open, p.high, p.low, p.close).where(p.ticker.in_(group)).order_by(p.ticker, p.date)
            for chunk in iterate_plain(conn, query, CHUNK_ROWS):
                block = np.asarray(chunk, dtype=np.float64)
                if at + len(block) > len(dates):
                    break
                dates[at : at + len(block)] = block[:, 0]
                ohlc[at : at + len(block)] = block[:, 1:]
                at += len(block)
        if at != len(dates):  # `tickers` is kept in the same transaction as prices; this means a writer raced us
            raise DataError(
                f"read {at} price rows where the tickers table promised {len(dates)}: an ingest ran meanwhile; "
                "train again"
            )
        flagged = _flagged_rows(conn, tickers, starts, dates)
    return Universe(list(tickers), starts, dates, ohlc, flagged)


def _flagged_rows(conn: sa.Connection, tickers: list[str], starts: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """The rows of price_flags, as a mask over the universe's rows."""
    f = schema.price_flags.c
    position = {t: k for k, t in enumerate(tickers)}
    flagged = np.zeros(len(dates), dtype=bool)
    for first in range(0, len(tickers), TICKERS_PER_QUERY):
        group = tickers[first : first + TICKERS_PER_QUERY]
        for ticker, date in conn.execute(sa.select(f.ticker, f.date).where(f.ticker.in_(group))):
            k = position[ticker]
            day = int(date.replace("-", ""))
            lo, hi = int(starts[k]), int(starts[k + 1])
            row = lo + int(np.searchsorted(dates[lo:hi], day))
            if row < hi and dates[row] == day:
                flagged[row] = True
    return flagged
