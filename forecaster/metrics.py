"""Accuracy of next-close forecasts, always beside the naive forecast
(tomorrow's close = today's close), which is hard to beat on daily prices."""
from __future__ import annotations

import numpy as np


def accuracy(predicted, actual, last_close) -> dict:
    """RMSE, MAE and direction accuracy of `predicted`, and of the naive forecast.

    Direction accuracy counts days where the sign of (forecast - last close)
    equals the sign of (actual - last close); the naive forecast always says
    "unchanged", so its direction accuracy is the share of unchanged days.
    """
    predicted, actual, last = (np.asarray(a, dtype=np.float64) for a in (predicted, actual, last_close))
    if len(actual) == 0:
        return {"n": 0}
    err, naive_err = predicted - actual, last - actual
    rmse, naive_rmse = _rmse(err), _rmse(naive_err)
    move = np.sign(actual - last)
    return {
        "n": int(len(actual)),
        "rmse": rmse,
        "mae": float(np.mean(np.abs(err))),
        "naive_rmse": naive_rmse,
        "naive_mae": float(np.mean(np.abs(naive_err))),
        "ratio": rmse / naive_rmse if naive_rmse > 0 else float("nan"),
        "direction_accuracy": float(np.mean(np.sign(predicted - last) == move)),
        "naive_direction_accuracy": float(np.mean(move == 0)),
    }


def _rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err ** 2)))
