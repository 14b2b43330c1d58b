"""Deterministic synthetic daily OHLC in the public dataset's layout.

The demo and most tests run on this, so a fresh clone needs nothing from
outside. Closes follow a geometric random walk whose daily log-returns may
carry AR(1) memory (`ar`): with ar=0 the naive forecast is optimal; with
ar=0.6 yesterday's move predicts today's, which a working model must learn.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from .config import SAMPLE_DAYS, SAMPLE_TICKERS

DEFAULT_END = dt.date(2017, 11, 10)  # the public dataset's last day


def generate_ohlc(
    days: int,
    seed: int,
    *,
    ar: float = 0.0,
    end: dt.date = DEFAULT_END,
    start_price: float | None = None,
    daily_vol: float | None = None,
) -> pd.DataFrame:
    """One ticker's history: Date, Open, High, Low, Close, Volume, OpenInt on business days."""
    if days < 1:
        raise ValueError("days must be at least 1")
    rng = np.random.default_rng(seed)
    vol = daily_vol if daily_vol is not None else rng.uniform(0.008, 0.025)
    price0 = start_price if start_price is not None else rng.uniform(10, 200)
    shocks = rng.normal(0.0002, vol, days)
    returns = lfilter([1.0], [1.0, -ar], shocks)  # r_t = ar * r_{t-1} + shock_t
    close = np.maximum(price0 * np.exp(np.cumsum(returns)), 0.05)
    prev_close = np.concatenate([[price0], close[:-1]])
    open_ = np.maximum(prev_close * np.exp(rng.normal(0, vol * 0.3, days)), 0.05)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol * 0.5, days)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol * 0.5, days)))
    volume = rng.lognormal(11, 1, days).astype(np.int64)
    dates = pd.bdate_range(end=pd.Timestamp(end), periods=days)
    # Rounding is monotonic, so High >= max(Open, Close) >= ... still holds after it.
    return pd.DataFrame(
        {
            "Date": dates.strftime("%Y-%m-%d"),
            "Open": open_.round(4),
            "High": high.round(4),
            "Low": low.round(4),
            "Close": close.round(4),
            "Volume": volume,
            "OpenInt": 0,
        }
    )


def ticker_name(i: int) -> str:
    return f"syn{i:04d}"


def write_sample_data(
    out_dir: str | Path,
    *,
    tickers: int = SAMPLE_TICKERS,
    days: int = SAMPLE_DAYS,
    seed: int = 0,
    ar: float = 0.0,
    end: dt.date = DEFAULT_END,
) -> list[Path]:
    """Write `tickers` files `<out_dir>/Stocks/synNNNN.us.txt`; returns their paths."""
    folder = Path(out_dir) / "Stocks"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(tickers):
        frame = generate_ohlc(days, seed * 100_003 + i, ar=ar, end=end)
        path = folder / f"{ticker_name(i)}.us.txt"
        frame.to_csv(path, index=False, lineterminator="\n")
        paths.append(path)
    return paths


def append_one_day(folder: Path, seed: int = 1) -> int:
    """Append the next business day to every file under `folder` (a plausible
    move from the last close); how many files. What a night brings, for the
    benchmarks and the crash tests."""
    rng = np.random.default_rng(seed)
    n = 0
    for path in sorted(folder.rglob("*.us.txt")):
        with open(path, "rb+") as fh:
            fh.seek(max(0, os.path.getsize(path) - 200))
            last = fh.read().decode().strip().splitlines()[-1].split(",")
            day = (pd.Timestamp(last[0]) + pd.offsets.BDay(1)).strftime("%Y-%m-%d")
            close = float(last[4]) * float(np.exp(rng.normal(0, 0.01)))
            open_ = float(last[4])
            high, low = max(open_, close) * 1.002, min(open_, close) * 0.998
            fh.seek(0, 2)
            fh.write(f"{day},{open_:.4f},{high:.4f},{low:.4f},{close:.4f},{int(rng.integers(1e3, 1e6))},0\n".encode())
        n += 1
    return n
