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
    """Training and validation loss at each check (epochs, or steps for a step budget)."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    unit = history.get("unit", "epoch")
    at = history.get("at") or list(range(1, len(history["train_loss"]) + 1))
    ax.plot(at, history["train_loss"], label="train")
    ax.plot(at, history["val_loss"], label="validation")
    best = history.get("best_at", history.get("best_epoch", 0))
    ax.axvline(best, color="grey", linestyle=":", label=f"kept: {unit} {best}")
    ax.set(xlabel=unit, ylabel="MSE (scaled)", yscale="log", title="Training and validation loss")
    ax.legend()
    return _save(fig, path)


def ratio_summary(ratios: dict[str, float], path: Path) -> Path:
    """The held-out RMSE ratio to naive of every ticker, as a histogram: one picture for thousands."""
    values = np.array(list(ratios.values()), dtype=np.float64)
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    ax.hist(values[np.isfinite(values)], bins=60, color="tab:blue")
    ax.axvline(1.0, color="black", linestyle="--", label="naive")
    ax.axvline(float(np.nanmedian(values)), color="tab:orange", label=f"median {np.nanmedian(values):.3f}")
    ax.set(
        xlabel="held-out RMSE / naive RMSE (below 1 beats naive)",
        ylabel="tickers",
        title=f"{len(values)} tickers: held-out ratio to naive",
    )
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
    bands: list[ArrayLike] | None = None,
) -> Path:
    """Predicted next closes against the actual ones, with the naive forecast
    and, given `bands` [lo80, hi80, lo95, hi95], the 80% and 95% intervals."""
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
    x = pd.to_datetime(pd.Series(dates))
    if bands is not None:
        ax.fill_between(x, bands[2], bands[3], color="tab:blue", alpha=0.12, linewidth=0, label="95% interval")
        ax.fill_between(x, bands[0], bands[1], color="tab:blue", alpha=0.25, linewidth=0, label="80% interval")
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
