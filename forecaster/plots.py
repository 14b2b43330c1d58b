"""Figures written as PNG. Matplotlib's object API with the Agg canvas: no
screen, no pyplot, and no global backend switched for whoever imports us."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike


def loss_curves(history: dict, path: Path) -> Path:
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], label="train")
    ax.plot(epochs, history["val_loss"], label="validation")
    ax.axvline(history["best_epoch"], color="grey", linestyle=":", label=f"kept: epoch {history['best_epoch']}")
    ax.set(xlabel="epoch", ylabel="MSE (scaled)", yscale="log", title="Training and validation loss")
    ax.legend()
    return _save(fig, path)


def forecast_vs_actual(
    ticker: str,
    dates: ArrayLike,
    actual: ArrayLike,
    predicted: ArrayLike,
    naive: ArrayLike,
    path: Path,
    title: str = "",
) -> Path:
    """Predicted next closes against the actual ones, with the naive forecast."""
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
    x = pd.to_datetime(pd.Series(dates))
    ax.plot(x, actual, label="actual close", color="black", linewidth=1)
    ax.plot(x, naive, label="naive (previous close)", color="tab:grey", linewidth=0.8, linestyle="--")
    ax.plot(x, predicted, label="model", color="tab:blue", linewidth=1)
    ax.set(title=title or f"{ticker}: held-out next-day close", ylabel="price")
    ax.legend()
    fig.autofmt_xdate()
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))
    return path
