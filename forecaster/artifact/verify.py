"""`forecaster verify`: ONNX Runtime against the NumPy reference on the same windows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import sqlalchemy as sa

from ..data.prices import load_series
from ..data.windows import make_windows
from ..errors import DataError
from ..features import CLOSE
from ..intervals import COLUMNS
from .config import DEFAULT_TOLERANCE, VERIFY_WINDOWS
from .model_file import load_model
from .parity import compare
from .reference import from_onnx


@dataclass
class VerifyResult:
    max_abs: float
    max_rel: float
    n_windows: int
    source: str


def random_windows(n: int, seq_len: int, seed: int = 0) -> np.ndarray:
    """Plausible raw OHLC windows: random walks at price levels from 1 to 1,000."""
    rng = np.random.default_rng(seed)
    level = np.exp(rng.uniform(0, np.log(1000), (n, 1)))
    close = level * np.exp(np.cumsum(rng.normal(0, 0.02, (n, seq_len)), axis=1))
    open_ = close * np.exp(rng.normal(0, 0.005, close.shape))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.01, close.shape)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.01, close.shape)))
    return np.stack([open_, high, low, close], axis=-1).astype(np.float32)


def stored_windows(
    engine: sa.Engine, tickers: list[str], rows: int, training_tickers: list[str], per_ticker: int
) -> tuple[np.ndarray, np.ndarray]:
    """The latest `per_ticker` windows of `rows` rows of each ticker, with its index among the training tickers."""
    windows, index = [], []
    for ticker, s in load_series(engine, tickers).items():
        w, _ = make_windows(s.ohlc, rows)
        if len(w) == 0:
            raise DataError(f"ticker {ticker} has {len(s)} rows; the model reads {rows} and needs one more")
        w = w[-per_ticker:]
        windows.append(w)
        index.append(np.full(len(w), training_tickers.index(ticker) if ticker in training_tickers else -1))
    return np.concatenate(windows).astype(np.float32), np.concatenate(index)


def verify(
    model_path: str | Path,
    *,
    engine: sa.Engine | None = None,
    tickers: list[str] = (),
    n_windows: int = VERIFY_WINDOWS,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
) -> VerifyResult:
    """Raise ParityError when ONNX Runtime and the reference differ beyond `tolerance`."""
    model = load_model(model_path, "cpu")
    reference = from_onnx(onnx.load(str(model_path)))
    training = model.training_tickers
    if tickers:
        windows, index = stored_windows(
            engine, list(tickers), model.input_rows, training, max(1, n_windows // len(tickers))
        )
        if model.uses_ticker_index and (index < 0).any():
            unseen = sorted({t for t in tickers if t not in training})
            raise DataError(
                f"{', '.join(unseen)}: not a training ticker of this model, whose "
                "per-ticker minmax scaling has no numbers for it"
            )
        source = f"{len(windows)} stored windows of {', '.join(tickers)}"
    else:
        windows = random_windows(n_windows, model.input_rows, seed)
        index = np.random.default_rng(seed).integers(0, len(training), len(windows))
        source = f"{len(windows)} random windows"
    got, _, got_bounds = model.score_with_intervals(windows, index)
    expected = reference(windows, index)
    max_abs, max_rel = compare(got, expected, tolerance, what="ONNX Runtime vs the NumPy reference")
    # The interval bounds, around the reference's own forecast: the graph's
    # volatility and quantiles against the formulas and the metadata's numbers.
    for name, g, e in zip(COLUMNS, got_bounds or [], reference.bounds(windows, expected) or [], strict=True):
        worst = compare(
            g,
            e,
            tolerance,
            what=f"ONNX Runtime vs the NumPy reference, {name}",
            scale=windows[:, -1, CLOSE].astype(np.float64),
        )
        max_abs, max_rel = max(max_abs, worst[0]), max(max_rel, worst[1])
    return VerifyResult(max_abs, max_rel, len(windows), source)
