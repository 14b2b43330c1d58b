"""Prices read back from the store: a ticker's history as a series, its
windows, and the latest windows of every ticker point in time (what a
nightly run scores).

A window i of a series holds rows [i, i + seq_len) and its target is the
close of row i + seq_len.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain

import numpy as np
import sqlalchemy as sa

from ..errors import DataError
from ..features import CLOSE, FEATURES
from . import schema
from .store import fetch_plain, read_snapshot


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


def make_windows(ohlc: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(windows (n-seq_len, seq_len, 4), next closes (n-seq_len,)) as views where possible."""
    n = len(ohlc) - seq_len
    if n <= 0:
        return np.empty((0, seq_len, ohlc.shape[1])), np.empty(0)
    windows = np.lib.stride_tricks.sliding_window_view(ohlc[:-1], seq_len, axis=0)
    return windows.transpose(0, 2, 1), ohlc[seq_len:, CLOSE]


def data_hash(series: dict[str, Series]) -> str:
    """sha256 over the tickers, dates and prices used: provenance for a checkpoint."""
    h = hashlib.sha256()
    for ticker in sorted(series):
        s = series[ticker]
        h.update(ticker.encode())
        h.update("\n".join(s.dates.tolist()).encode())
        h.update(np.ascontiguousarray(s.ohlc, dtype="<f8").tobytes())
    return h.hexdigest()


@dataclass
class ScoringBatch:
    """The windows one nightly run scores, and the tickers it cannot."""

    tickers: list[str]
    windows: np.ndarray  # (n, seq_len, 4) float32, rows dated <= as_of
    last_close: np.ndarray  # (n,) float64: the stored close on as_of, unrounded
    skipped: dict[str, str]  # ticker -> reason (a row on as_of, too little history)
    stale: list[str]  # tickers with history but no row on as_of

    def only(self, wanted: Callable[[str], bool]) -> ScoringBatch:
        """The part of the batch whose tickers satisfy `wanted(ticker)`."""
        keep = [i for i, t in enumerate(self.tickers) if wanted(t)]
        return ScoringBatch(
            [self.tickers[i] for i in keep],
            self.windows[keep],
            self.last_close[keep],
            {t: r for t, r in self.skipped.items() if wanted(t)},
            [t for t in self.stale if wanted(t)],
        )


WINDOW_SLACK = 5  # extra trading dates read, so a ticker with a short gap needs no second query


def latest_windows(engine: sa.Engine, as_of: str, seq_len: int) -> ScoringBatch:
    """Point in time: for each ticker with a close on `as_of`, its last
    `seq_len` rows dated <= as_of, whatever else the database holds.

    Two queries over the same span, in one snapshot: `tickers` joined to the
    last seq_len + slack trading dates of `prices` (a short primary-key range
    per ticker), so the cost grows with tickers, not with years of history.
    The first says how many rows each ticker has in the span and the date of
    its last one; the second returns the rows' prices alone, in the same
    order (a ticker name and a date per row cost as much to make as the four
    prices). A ticker with gaps in that span gets a query of its own."""
    p, t, d = schema.prices.c, schema.tickers.c, schema.price_dates.c
    with read_snapshot(engine) as conn:
        start = conn.execute(
            sa.select(
                sa.func.min(
                    sa.select(d.date)
                    .where(d.date <= as_of)
                    .order_by(d.date.desc())
                    .limit(seq_len + WINDOW_SLACK)
                    .subquery()
                    .c.date
                )
            )
        ).scalar()
        # Every ticker that existed by as_of ends in exactly one of: scored, stale, skipped.
        existing = conn.execute(sa.select(t.ticker).where(t.first_date <= as_of).order_by(t.ticker)).scalars().all()
        span = [t.first_date <= as_of, t.last_date >= as_of, p.date >= (start or as_of), p.date <= as_of]
        joined = schema.tickers.join(schema.prices, p.ticker == t.ticker)
        # Ordering by tickers' column makes SQLite loop over tickers and seek
        # each one's recent rows; ordering by prices' would scan all of prices.
        runs = fetch_plain(
            conn,
            sa.select(t.ticker, sa.func.count(), sa.func.max(p.date))
            .select_from(joined)
            .where(*span)
            .group_by(t.ticker)
            .order_by(t.ticker),
        )
        recent = fetch_plain(
            conn, sa.select(*(p[f] for f in FEATURES)).select_from(joined).where(*span).order_by(t.ticker, p.date)
        )
        # Each ticker's rows are one run of `recent`: where it ends, and its last date.
        ends = np.cumsum([count for _, count, _ in runs], dtype=np.int64)
        last_row = {name: (int(end), count, last) for (name, count, last), end in zip(runs, ends, strict=True)}
        one_ticker = (
            sa.select(*(p[f] for f in FEATURES))
            .where(p.ticker == sa.bindparam("ticker"), p.date <= as_of)
            .order_by(p.date.desc())
            .limit(seq_len)
        )
        tickers, rows_at, extra, skipped, stale = [], [], {}, {}, []
        for ticker in existing:
            end, count, last = last_row.get(ticker, (0, 0, None))
            if last != as_of:
                # No close on as_of: it ended before, or has a gap there (a halt,
                # perhaps without a single row in the span read).
                stale.append(ticker)
                continue
            if count < seq_len:  # gaps in the span read, or a short history
                rows = conn.execute(one_ticker, {"ticker": ticker}).all()[::-1]
                if len(rows) < seq_len:
                    skipped[ticker] = f"only {len(rows)} rows up to {as_of}, the model needs {seq_len}"
                    continue
                extra[len(tickers)] = rows
            tickers.append(ticker)
            rows_at.append(end - seq_len)  # unused for the tickers read again (extra)
    # One array of all rows read; each window is a run of seq_len of them.
    values = np.fromiter(chain.from_iterable(recent), np.float64, len(recent) * len(FEATURES))
    values = values.reshape(len(recent), len(FEATURES))
    array = np.empty((len(tickers), seq_len, len(FEATURES)))
    regular = np.array([i for i in range(len(tickers)) if i not in extra], dtype=np.int64)
    starts = np.asarray(rows_at, dtype=np.int64)[regular]
    array[regular] = values[starts[:, None] + np.arange(seq_len)]
    for i, rows in extra.items():
        array[i] = np.asarray(rows, dtype=np.float64)
    return ScoringBatch(tickers, array.astype(np.float32), array[:, -1, CLOSE].copy(), skipped, stale)
