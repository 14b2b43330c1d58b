"""Figures written as PNG, or returned as SVG text for the HTML report.
Matplotlib's object API with the Agg and SVG canvases: no screen, no pyplot,
and no global backend switched for whoever imports us."""

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


def ticker_night(
    ticker: str,
    closes: tuple[ArrayLike, ArrayLike],
    predictions: dict[str, ArrayLike],
    outside: tuple[ArrayLike, ArrayLike],
) -> str:
    """One ticker for the HTML report, as SVG: its recent closes, the served
    predictions at their target dates with both bands, and the closes that
    fell outside the 80% band marked. `predictions` holds target_date,
    predicted_close, lo80, hi80, lo95, hi95."""
    fig = Figure(figsize=(7.5, 3.2))
    ax = fig.subplots()
    x = pd.to_datetime(pd.Series(predictions["target_date"]))
    if len(x):
        ax.fill_between(x, predictions["lo95"], predictions["hi95"], color="tab:blue", alpha=0.12, lw=0, label="95%")
        ax.fill_between(x, predictions["lo80"], predictions["hi80"], color="tab:blue", alpha=0.25, lw=0, label="80%")
        ax.plot(x, predictions["predicted_close"], color="tab:blue", lw=1, label="predicted")
    ax.plot(pd.to_datetime(pd.Series(closes[0])), closes[1], color="black", lw=1, label="close")
    if len(outside[0]):
        ax.plot(pd.to_datetime(pd.Series(outside[0])), outside[1], "x", color="tab:red", label="outside 80%")
    ax.set(title=ticker, ylabel="price")
    ax.legend(fontsize="small", ncols=3)
    fig.autofmt_xdate()
    return _svg(fig)


def coverage_over_time(dates: ArrayLike, lines: dict[str, ArrayLike], ratio: ArrayLike) -> str:
    """Realised coverage against nominal (dotted), with RiskMetrics' beside it
    (dashed), and the interval score ratio to RiskMetrics below, as SVG."""
    fig = Figure(figsize=(9, 5))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    x = pd.to_datetime(pd.Series(dates))
    for name, values in lines.items():
        y = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        top.plot(x, y, lw=1, linestyle="--" if name.startswith("RiskMetrics") else "-", label=name)
    for nominal in (0.80, 0.95):
        top.axhline(nominal, color="grey", linestyle=":", lw=1)
    top.margins(y=0.15)  # the nominal lines off the axes' edges
    top.set(ylabel="coverage", title="Realised coverage, rolling windows of sessions (dotted: nominal)")
    top.legend(fontsize="small", ncols=2)
    bottom.plot(x, np.array([np.nan if v is None else v for v in ratio], dtype=np.float64), color="tab:purple", lw=1)
    bottom.axhline(1.0, color="black", linestyle="--", lw=1)
    bottom.set(ylabel="score / RiskMetrics'")
    fig.autofmt_xdate()
    return _svg(fig)


def _svg(fig: Figure) -> str:
    """The figure as an <svg> element (text kept as text: a smaller page)."""
    import io

    from matplotlib import rc_context
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    fig.tight_layout()
    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "forecaster"}):  # a salt: the same figure, the same ids
        FigureCanvasSVG(fig).print_svg(buffer)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))
    return path
