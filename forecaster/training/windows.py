"""From a ticker's series to training data: the chronological split that
keeps the future out of training, and the scaling fitted on training rows.

Windows are split in time order: train | validation | test. Everything
fitted (the scaling) sees only rows up to the last training target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.prices import Series, make_windows
from ..errors import DataError
from ..features import CLOSE
from ..scaling import MinMaxScaling, RelativeScaling, Scaling

MIN_WINDOWS = 10  # below this a ticker cannot give train, validation and test windows


@dataclass
class Split:
    """Window index ranges: [0, train) [train, val) [val, n)."""

    train_end: int
    val_end: int
    n: int

    @property
    def n_test(self) -> int:
        return self.n - self.val_end

    def last_training_row(self, seq_len: int) -> int:
        """The last row any training or validation window (or its target) touches."""
        return self.val_end - 1 + seq_len


def min_rows(seq_len: int) -> int:
    return seq_len + MIN_WINDOWS


def check_history(series: Series, seq_len: int) -> None:
    if len(series) < min_rows(seq_len):
        raise DataError(
            f"ticker {series.ticker} has {len(series)} rows; with --seq-len {seq_len} it needs at "
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


def fit_scaling(method: str, series: dict[str, Series], splits: dict[str, Split], seq_len: int) -> Scaling:
    """The scaling, fitted on training rows only (scaling.py applies it).

    relative: one gain = 1 / std of the next-day relative close move over the
              training windows of all tickers.
    minmax:   per ticker and column, the low and high of its training rows.
    """
    if method == "relative":
        moves = []
        for ticker, s in series.items():
            windows, targets = make_windows(s.ohlc, seq_len)
            end = splits[ticker].val_end
            moves.append(targets[:end] / windows[:end, -1, CLOSE] - 1.0)
        std = float(np.std(np.concatenate(moves)))
        return RelativeScaling(1.0 / max(std, 1e-6))
    if method == "minmax":
        tickers = list(series)
        fit_rows = [series[t].ohlc[: splits[t].last_training_row(seq_len) + 1] for t in tickers]
        return MinMaxScaling(
            tuple(tickers),
            tuple(tuple(rows.min(axis=0).tolist()) for rows in fit_rows),
            tuple(tuple(rows.max(axis=0).tolist()) for rows in fit_rows),
        )
    raise DataError(f"unknown scaling {method!r}: choose relative or minmax")
