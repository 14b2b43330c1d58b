"""Figures written as PNG (matplotlib's Agg backend: no screen needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def loss_curves(history: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], label="train")
    ax.plot(epochs, history["val_loss"], label="validation")
    ax.axvline(history["best_epoch"], color="grey", linestyle=":", label=f"kept: epoch {history['best_epoch']}")
    ax.set(xlabel="epoch", ylabel="MSE (scaled)", yscale="log", title="Training and validation loss")
    ax.legend()
    return _save(fig, path)


def forecast_vs_actual(ticker: str, dates, actual, predicted, naive, path: Path, title: str = "") -> Path:
    """Predicted next closes against the actual ones, with the naive forecast."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = pd.to_datetime(pd.Series(dates))
    ax.plot(x, actual, label="actual close", color="black", linewidth=1)
    ax.plot(x, naive, label="naive (previous close)", color="tab:grey", linewidth=0.8, linestyle="--")
    ax.plot(x, predicted, label="model", color="tab:blue", linewidth=1)
    ax.set(title=title or f"{ticker}: held-out next-day close", ylabel="price")
    ax.legend()
    fig.autofmt_xdate()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
