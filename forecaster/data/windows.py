"""Windows of prices: the one place they are gathered, for training, the
promotion gate and the nightly run alike.

A window holds seq_len consecutive rows of one ticker (open, high, low,
close) and its target is the close of the row after it:
  * `gather`: windows of a Universe (data/universe.py) by the global row of
    their first day, as index ranges into its one price array, batch by
    batch (training, evaluation, the gate);
  * `reaching_back`: the longer windows (the interval's volatility reads
    more history than the network) that end where given windows end;
  * `make_windows`: every window of one Series, as views;
  * `latest_windows`: point in time, each ticker's last seq_len stored rows
    up to an as_of, read from the database (what a night scores).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import sqlalchemy as sa

from ..db import schema
from ..db.bulk import fetch_plain
from ..db.store import read_snapshot
from ..features import CLOSE, FEATURES
from .universe import Universe


def gather(universe: Universe, rows: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(windows (B, seq_len, 4) float32, next closes (B,) float32) for the windows starting at global `rows`."""
    windows = universe.ohlc[rows[:, None] + np.arange(seq_len)]
    return windows, universe.ohlc[rows + seq_len, CLOSE]


def reaching_back(
    universe: Universe, rows: np.ndarray, seq_len: int, length: int, skip_flagged: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(first rows, kept): the `length`-row windows (length >= seq_len) that end
    where the seq_len windows starting at global `rows` end, for the windows
    whose ticker holds that much history (and, with skip_flagged, whose rows
    after the first and target cross no flagged price); `kept` masks `rows`."""
    starts = rows + seq_len - length
    kept = starts >= universe.starts[universe.ticker_of(rows)]
    if skip_flagged:
        kept &= universe.free_of_flags(np.where(kept, starts, rows), length)  # (rows: any index that exists)
    return starts[kept], kept


def make_windows(ohlc: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(windows (n-seq_len, seq_len, 4), next closes (n-seq_len,)) as views where possible."""
    n = len(ohlc) - seq_len
    if n <= 0:
        return np.empty((0, seq_len, ohlc.shape[1])), np.empty(0)
    windows = np.lib.stride_tricks.sliding_window_view(ohlc[:-1], seq_len, axis=0)
    return windows.transpose(0, 2, 1), ohlc[seq_len:, CLOSE]


@dataclass
class ScoringBatch:
    """The windows one nightly run scores, and the tickers it cannot."""

    tickers: list[str]
    windows: np.ndarray  # (n, seq_len, 4) float32, rows dated <= as_of
    last_close: np.ndarray  # (n,) float64: the stored close on as_of, unrounded
    skipped: dict[str, str]  # ticker -> reason (a row on as_of, too little history)
    stale: list[str]  # tickers with history but no row on as_of
    # Scored tickers whose window holds a flagged close (price_flags): a
    # split, bad print or jump inside it, which the model never trained on.
    flagged_prices: set[str] = field(default_factory=set)

    def only(self, wanted: Callable[[str], bool]) -> ScoringBatch:
        """The part of the batch whose tickers satisfy `wanted(ticker)`."""
        keep = [i for i, t in enumerate(self.tickers) if wanted(t)]
        return ScoringBatch(
            [self.tickers[i] for i in keep],
            self.windows[keep],
            self.last_close[keep],
            {t: r for t, r in self.skipped.items() if wanted(t)},
            [t for t in self.stale if wanted(t)],
            {t for t in self.flagged_prices if wanted(t)},
        )


def latest_windows(engine: sa.Engine, as_of: str, seq_len: int) -> ScoringBatch:
    """Point in time: for each ticker with a close on `as_of`, its last
    `seq_len` rows dated <= as_of, whatever else the database holds.

    Two queries in one snapshot, each a few primary-key seeks per ticker, so
    the cost grows with tickers, not with years of history. The first gives
    each ticker's last date up to as_of and the date its window starts (its
    seq_len-th row back); the second the windows' prices alone, seq_len rows
    per ticker in ticker order (a ticker name and a date per row would cost
    as much to make as the four prices)."""
    t, p = schema.tickers.c, schema.prices.c
    back = schema.prices.alias("back")
    summary = (
        sa.select(
            t.ticker,
            t.last_date,
            sa.select(sa.func.max(back.c.date))
            .where(back.c.ticker == t.ticker, back.c.date <= as_of)
            .scalar_subquery()
            .label("last"),
            sa.select(back.c.date)
            .where(back.c.ticker == t.ticker, back.c.date <= as_of)
            .order_by(back.c.date.desc())
            .limit(1)
            .offset(seq_len - 1)
            .scalar_subquery()
            .label("start"),
        )
        # Every ticker that existed by as_of ends in exactly one of: scored, stale, skipped.
        .where(t.first_date <= as_of)
        .subquery()
    )
    s = summary.c
    windows = (
        sa.select(*(p[f] for f in FEATURES))
        .select_from(summary.join(schema.prices, p.ticker == s.ticker))
        .where(s.last_date >= as_of, p.date >= s.start, p.date <= as_of)
        .order_by(s.ticker, p.date)
    )
    f = schema.price_flags.c
    with read_snapshot(engine) as conn:
        summaries = fetch_plain(conn, sa.select(summary).order_by(s.ticker))
        recent = fetch_plain(conn, windows)
        # A flagged move between two rows of a window (its first row's came from outside it).
        starts = {ticker: start for ticker, _, last, start in summaries if start is not None and last == as_of}
        flags = (
            fetch_plain(conn, sa.select(f.ticker, f.date).where(f.date > min(starts.values()), f.date <= as_of))
            if starts
            else []
        )
        flagged = {ticker for ticker, date in flags if ticker in starts and date > starts[ticker]}
        tickers, keep, skipped, stale = [], [], {}, []
        for ticker, last_date, last, start in summaries:
            if start is not None and last_date >= as_of:  # `recent` holds its seq_len rows
                keep.append(last == as_of)
            if last != as_of:
                # No close on as_of: it ended before, or has a gap there (a halt).
                stale.append(ticker)
            elif start is None:
                n = conn.execute(sa.select(sa.func.count()).where(p.ticker == ticker, p.date <= as_of)).scalar()
                skipped[ticker] = f"only {n} rows up to {as_of}, the model needs {seq_len}"
            else:
                tickers.append(ticker)
    if len(recent) != seq_len * len(keep):  # one snapshot: only a bug gets here
        raise RuntimeError(f"read {len(recent)} window rows for {len(keep)} tickers of {seq_len} rows")
    values = np.fromiter(chain.from_iterable(recent), np.float64, len(recent) * len(FEATURES))
    array = values.reshape(len(keep), seq_len, len(FEATURES))[np.asarray(keep, dtype=bool)]
    return ScoringBatch(tickers, array.astype(np.float32), array[:, -1, CLOSE].copy(), skipped, stale, flagged)
