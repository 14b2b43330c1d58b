"""Accuracy of next-close forecasts, always beside the naive forecast
(tomorrow's close = today's close), which is hard to beat on daily prices."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import mean_absolute_error, root_mean_squared_error

from ..evidence import direction


def accuracy(predicted: ArrayLike, actual: ArrayLike, last_close: ArrayLike) -> dict:
    """RMSE, MAE and direction accuracy of `predicted`, and of the naive forecast.

    Direction accuracy counts days where the direction the forecast states
    (evidence.direction: none within float noise of the last close) equals
    the sign of (actual - last close); the naive forecast always says
    "unchanged", so its direction accuracy is the share of unchanged days.
    """
    predicted, actual, last = (np.asarray(a, dtype=np.float64) for a in (predicted, actual, last_close))
    if len(actual) == 0:
        return {"n": 0}
    rmse, naive_rmse = root_mean_squared_error(actual, predicted), root_mean_squared_error(actual, last)
    move = np.sign(actual - last)
    return {
        "n": int(len(actual)),
        "rmse": float(rmse),
        "mae": float(mean_absolute_error(actual, predicted)),
        "naive_rmse": float(naive_rmse),
        "naive_mae": float(mean_absolute_error(actual, last)),
        "ratio": float(rmse / naive_rmse) if naive_rmse > 0 else float("nan"),
        "direction_accuracy": float(np.mean(direction(predicted, last) == move)),
        "naive_direction_accuracy": float(np.mean(move == 0)),
    }
