"""Held-out accuracy, per ticker and overall, in price units, beside naive."""

from __future__ import annotations

import numpy as np
import torch

from ..data.universe import Universe
from ..features import CLOSE
from .loop import INFERENCE_BATCH
from .metrics import accuracy
from .model import Forecaster
from .windows import WindowIndex, gather

# |RMSE ratio - 1| up to this is float noise, not skill: a model that repeats
# the last close in float32 rounds each price by up to 6e-8 of itself, which
# moved its ratio to naive by 1e-7 on aaxj and can reach ~1e-5 on a $2 ticker.
LEVEL_WITH_NAIVE = 1e-4


def compared_with_naive(ratio: float) -> str:
    """ "better", "level" or "worse": a ratio within float noise of 1 (a model
    that repeats the last close, computed in float32) is level, not worse."""
    if abs(ratio - 1.0) <= LEVEL_WITH_NAIVE:
        return "level"
    return "better" if ratio < 1.0 else "worse"


def predict_windows(
    model: Forecaster, universe: Universe, rows: np.ndarray, seq_len: int, device: torch.device
) -> np.ndarray:
    """Next closes (float64) for the windows starting at `rows`, in batches."""
    out = np.empty(len(rows))
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), INFERENCE_BATCH):
            part = rows[start : start + INFERENCE_BATCH]
            windows, _ = gather(universe, part, seq_len)
            tickers = torch.from_numpy(universe.ticker_of(part)).to(device) if model.scaling.uses_ticker_index else None
            out[start : start + len(part)] = model(torch.from_numpy(windows).to(device), tickers).double().cpu().numpy()
    return out


def held_out(model: Forecaster, universe: Universe, index: WindowIndex, device: torch.device) -> tuple[dict, dict]:
    """(metrics, predictions): per-ticker and overall test metrics, and each
    ticker's test dates, actual and predicted closes and last closes."""
    seq_len = index.seq_len
    predicted = predict_windows(model, universe, index.test, seq_len, device)
    actual = universe.ohlc[index.test + seq_len, CLOSE].astype(np.float64)
    last = universe.ohlc[index.test + seq_len - 1, CLOSE].astype(np.float64)
    per_ticker, predictions, at = {}, {}, 0
    for ticker, s in zip(universe.tickers, index.splits, strict=True):
        mine = slice(at, at + s.n_test)  # the test windows are listed ticker by ticker
        at += s.n_test
        m = accuracy(predicted[mine], actual[mine], last[mine])
        target_rows = index.test[mine] + seq_len
        per_ticker[ticker] = {
            "test_rmse": m["rmse"],
            "test_mae": m["mae"],
            "naive_rmse": m["naive_rmse"],
            "naive_mae": m["naive_mae"],
            "ratio": m["ratio"],
            "direction_accuracy": m["direction_accuracy"],
            "naive_direction_accuracy": m["naive_direction_accuracy"],
            "n_test": m["n"],
            "test_start": universe.iso_date(target_rows[0]),
            "test_end": universe.iso_date(target_rows[-1]),
        }
        predictions[ticker] = {
            "rows": target_rows,
            "actual": actual[mine],
            "predicted": predicted[mine],
            "last": last[mine],
        }
    ratios = [m["ratio"] for m in per_ticker.values()]
    overall = {
        "n_tickers": len(per_ticker),
        "n_test": sum(m["n_test"] for m in per_ticker.values()),
        "mean_ratio": float(np.mean(ratios)),
        "median_ratio": float(np.median(ratios)),
        "tickers_worse_than_naive": sum(compared_with_naive(r) == "worse" for r in ratios),
        "tickers_level_with_naive": sum(compared_with_naive(r) == "level" for r in ratios),
    }
    return {"tickers": per_ticker, "overall": overall}, predictions
