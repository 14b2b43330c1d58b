"""Small builders shared by tests (no fixtures: plain functions)."""
from __future__ import annotations

import numpy as np

from forecaster.sample import generate_ohlc
from forecaster.windows import Series


def synthetic_series(ticker: str = "syn", days: int = 300, seed: int = 0, ar: float = 0.0) -> Series:
    f = generate_ohlc(days, seed, ar=ar)
    return Series(ticker, f["Date"].to_numpy(dtype=object),
                  np.array(f[["Open", "High", "Low", "Close"]], dtype=np.float64))
