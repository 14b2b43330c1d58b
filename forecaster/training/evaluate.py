"""Held-out accuracy, per ticker and overall, in price units, beside naive."""

from __future__ import annotations

import numpy as np
import torch

from .. import intervals
from ..data.universe import Universe
from ..data.windows import gather, reaching_back
from ..errors import DataError
from ..evidence import pooled_ratio, ratio_summary
from ..features import CLOSE
from .loop import INFERENCE_BATCH
from .metrics import accuracy
from .model import Forecaster
from .split import WindowIndex


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
    overall = {
        "n_tickers": len(per_ticker),
        "n_test": sum(m["n_test"] for m in per_ticker.values()),
        **ratio_summary({t: m["ratio"] for t, m in per_ticker.items()}, pooled_ratio(predicted, actual, last)),
    }
    return {"tickers": per_ticker, "overall": overall}, predictions


MIN_CALIBRATION_WINDOWS = 20  # a 95% split-conformal quantile needs 19 scores


def interval_method(universe: Universe, index: WindowIndex) -> tuple[str, str | None]:
    """(method, warning): the default, unless too few training or validation
    windows have the history it reads (short series): then the HAR on the
    model's own window, said in a warning."""
    length = intervals.input_rows(intervals.DEFAULT_METHOD, index.seq_len)
    reach = (reaching_back(universe, rows, index.seq_len, length, True)[1] for rows in (index.train, index.val))
    have = min(int(kept.sum()) for kept in reach)
    if have >= MIN_CALIBRATION_WINDOWS:
        return intervals.DEFAULT_METHOD, None
    return "har", (
        f"intervals: only {have} training or validation windows reach back the {length} rows the "
        f"{intervals.DEFAULT_METHOD} volatility reads (it needs {MIN_CALIBRATION_WINDOWS}); using har, "
        f"from the {index.seq_len}-row window"
    )


def calibrate(
    model: Forecaster,
    universe: Universe,
    rows: np.ndarray,
    seq_len: int,
    device: torch.device,
    method: str = intervals.DEFAULT_METHOD,
    fit_rows: np.ndarray | None = None,
) -> intervals.Calibration:
    """The interval calibration: the volatility's coefficients (for a method
    that has them) from `fit_rows` (training windows), then the score
    quantiles from the model's misses on the validation windows `rows`
    (never test days). Both keep only the windows whose ticker holds the
    history the volatility reads (a ticker's first rows do not) and whose
    longer history crosses no flagged price."""
    length = intervals.input_rows(method, seq_len)
    har = ()
    if method in intervals.COEFFICIENTS:
        if fit_rows is None:
            raise ValueError(f"the {method} interval method needs training windows to fit on")
        starts, _ = reaching_back(universe, fit_rows, seq_len, length, True)
        if not len(starts):
            raise DataError(f"no training window has the {length} rows of history the {method} intervals read")
        fit_windows, _ = gather(universe, starts, length)
        har = intervals.fit_coefficients(method, fit_windows, universe.ohlc[starts + length])
    starts, kept = reaching_back(universe, rows, seq_len, length, True)
    if not len(starts):
        raise DataError(f"no validation window has the {length} rows of history the {method} intervals read")
    predicted = predict_windows(model, universe, rows[kept], seq_len, device)
    windows, actual = gather(universe, starts, length)
    return intervals.Calibration.fit(actual.astype(np.float64), predicted, windows, method, har)


def held_out_intervals(
    calibration: intervals.Calibration, universe: Universe, index: WindowIndex, predictions: dict
) -> dict:
    """Coverage, width and interval score on the held-out days, per ticker and
    overall, beside RiskMetrics' on the same days; adds each ticker's bounds to
    `predictions` (for the plots). A test day whose ticker lacks the history
    the volatility reads gets no interval (NaN bounds), as a night would give it
    none, and is left out of the figures."""
    seq_len, closes = index.seq_len, universe.ohlc[:, CLOSE]
    length = calibration.input_rows(seq_len)
    per_ticker, model_bounds, baseline_bounds, actuals, lasts = {}, [], [], [], []
    for k, ticker in enumerate(universe.tickers):
        p = predictions[ticker]
        starts, kept = reaching_back(universe, p["rows"] - seq_len, seq_len, length)
        windows, _ = gather(universe, starts, length)
        bounds = calibration.bounds(p["predicted"][kept], windows.astype(np.float64))
        p["bounds"] = [np.full(len(kept), np.nan) for _ in bounds]
        for full, b in zip(p["bounds"], bounds, strict=True):
            full[kept] = b
        span = universe.rows(k)
        actual, last = p["actual"][kept], p["last"][kept]
        volatility = intervals.riskmetrics_volatility(closes[span])[p["rows"][kept] - 1 - span.start]
        baseline = intervals.riskmetrics_bounds(last, volatility)
        per_ticker[ticker] = {
            **intervals.summary(bounds, actual, last),
            "riskmetrics": intervals.summary(baseline, actual, last),
        }
        model_bounds.append(bounds)
        baseline_bounds.append(baseline)
        actuals.append(actual)
        lasts.append(last)
    joined = [np.concatenate([b[i] for b in model_bounds]) for i in range(len(intervals.COLUMNS))]
    base = [np.concatenate([b[i] for b in baseline_bounds]) for i in range(len(intervals.COLUMNS))]
    actual, last = np.concatenate(actuals), np.concatenate(lasts)
    overall = {**intervals.summary(joined, actual, last), "riskmetrics": intervals.summary(base, actual, last)}
    overall["score_vs_riskmetrics"] = intervals.score_ratio(overall, overall["riskmetrics"])
    return {"calibration": calibration.to_metadata(), "overall": overall, "tickers": per_ticker}
