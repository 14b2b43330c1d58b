"""Training data from a universe's prices: the chronological split that keeps
the future out of training, and the scaling fitted on training rows.

A window is the global row of its first day (data/windows.py gathers it).
Per ticker, windows are split in time order: train | validation | test.
Everything fitted (the scaling) sees only rows up to the last training
target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.universe import Universe
from ..errors import DataError
from ..features import CLOSE
from ..scaling import MinMaxScaling, RelativeScaling, Scaling

MIN_WINDOWS = 10  # below this a ticker cannot give train, validation and test windows


@dataclass
class Split:
    """One ticker's window index ranges: [0, train) [train, val) [val, n)."""

    train_end: int
    val_end: int
    n: int

    @property
    def n_test(self) -> int:
        return self.n - self.val_end

    def last_training_row(self, seq_len: int) -> int:
        """The last row (of the ticker) any training or validation window, or its target, touches."""
        return self.val_end - 1 + seq_len


@dataclass
class WindowIndex:
    """Every window of a universe by part, as the global row of its first day."""

    seq_len: int
    splits: list[Split]  # per ticker
    train: np.ndarray  # (n_train,) int64
    val: np.ndarray
    test: np.ndarray
    # Training and validation windows left out because a flagged close lies
    # in them (their inputs or target); the test keeps every window, as a
    # nightly run meets them.
    flagged_skipped: int = 0


def min_rows(seq_len: int) -> int:
    return seq_len + MIN_WINDOWS


def check_history(ticker: str, rows: int, seq_len: int) -> None:
    if rows < min_rows(seq_len):
        raise DataError(
            f"ticker {ticker} has {rows} rows; with --seq-len {seq_len} it needs at "
            f"least {min_rows(seq_len)} (seq_len + {MIN_WINDOWS} windows for train, validation and test)"
        )


def split(n_windows: int, test_fraction: float, val_fraction: float) -> Split:
    """Chronological: the last `test_fraction` of windows is the test set; the
    validation slice is the end of what remains (never taken from the test)."""
    n_test = max(1, int(round(n_windows * test_fraction)))
    n_trainval = n_windows - n_test
    n_val = max(1, int(round(n_trainval * val_fraction)))
    if n_trainval - n_val < 1:
        raise DataError(f"{n_windows} windows are too few to split into train, validation and test")
    return Split(train_end=n_trainval - n_val, val_end=n_trainval, n=n_windows)


def index_windows(
    universe: Universe, seq_len: int, test_fraction: float, val_fraction: float, skip_flagged: bool = True
) -> WindowIndex:
    """Split every ticker's windows and list each part's windows by first row;
    with skip_flagged, training and validation leave out the windows that
    cross a flagged day (a move from the row before it, both in the window)."""
    splits, parts = [], {"train": [], "val": [], "test": []}
    for k, ticker in enumerate(universe.tickers):
        first, rows = int(universe.starts[k]), int(universe.counts[k])
        check_history(ticker, rows, seq_len)
        s = split(rows - seq_len, test_fraction, val_fraction)
        splits.append(s)
        for part, (a, b) in (
            ("train", (0, s.train_end)),
            ("val", (s.train_end, s.val_end)),
            ("test", (s.val_end, s.n)),
        ):
            parts[part].append(np.arange(first + a, first + b, dtype=np.int64))
    train, val, test = (np.concatenate(parts[p]) for p in ("train", "val", "test"))
    if not skip_flagged or universe.flagged is None or not universe.flagged.any():
        return WindowIndex(seq_len, splits, train, val, test)
    kept_train, kept_val = (rows[universe.free_of_flags(rows, seq_len)] for rows in (train, val))
    skipped = len(train) - len(kept_train) + len(val) - len(kept_val)
    if not len(kept_train) or not len(kept_val):
        raise DataError("every training or validation window crosses a flagged price (price_flags): nothing to fit")
    return WindowIndex(seq_len, splits, kept_train, kept_val, test, skipped)


def fit_scaling(method: str, universe: Universe, index: WindowIndex) -> Scaling:
    """The scaling, fitted on training rows only (scaling.py applies it)."""
    if method not in _FITS:
        raise DataError(f"unknown scaling {method!r}: choose {' or '.join(_FITS)}")
    return _FITS[method](universe, index)


def _fit_relative(universe: Universe, index: WindowIndex) -> RelativeScaling:
    """One gain = 1 / std of the next-day relative close move over the training
    and validation windows of all tickers."""
    seq_len = index.seq_len
    rows = np.concatenate([index.train, index.val])
    close = universe.ohlc[:, CLOSE].astype(np.float64)
    moves = close[rows + seq_len] / close[rows + seq_len - 1] - 1.0
    return RelativeScaling(1.0 / max(float(np.std(moves)), 1e-6))


def _fit_minmax(universe: Universe, index: WindowIndex) -> MinMaxScaling:
    """Per ticker and column, the low and high of its training rows."""
    lows, highs = [], []
    for k, s in enumerate(index.splits):
        first = int(universe.starts[k])
        fit_rows = universe.ohlc[first : first + s.last_training_row(index.seq_len) + 1].astype(np.float64)
        lows.append(tuple(fit_rows.min(axis=0).tolist()))
        highs.append(tuple(fit_rows.max(axis=0).tolist()))
    return MinMaxScaling(tuple(universe.tickers), tuple(lows), tuple(highs))


_FITS = {RelativeScaling.method: _fit_relative, MinMaxScaling.method: _fit_minmax}
