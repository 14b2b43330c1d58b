"""Prediction intervals: calibrated 80% and 95% ranges around each forecast.

Split conformal prediction, made scale-free by a volatility estimate taken
from the window itself. For a window with last close L and volatility s (a
daily log-return standard deviation), the score of an outcome y is

    |y - predicted| / (L * s)

Its quantiles at 80% and 95% over the validation windows (never test days)
are fixed at training; an interval is then predicted +- q * L * s. One
global pair of numbers serves a $2 ticker and a $2,000 one, quiet or wild.

The volatility is the high-low range estimator of Parkinson (1980) over the
window, blended with the EWMA of close-to-close log returns that RiskMetrics
uses: see docs/intervals.md for the measurements that chose it. The formulas
use operations NumPy and torch share (through `xp`), so the ONNX graph
computes exactly what the NumPy reference and the evaluation compute.

RiskMetrics itself (an EWMA variance of log returns over the whole history,
lambda 0.94, Gaussian quantiles) is the baseline every report compares with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .features import FEATURES

LEVELS = (0.80, 0.95)  # the R forecast package's default levels
COLUMNS = ("lo80", "hi80", "lo95", "hi95")
EWMA_LAMBDA = 0.94  # RiskMetrics' daily decay
GAUSSIAN = {0.80: 1.2815515655446004, 0.95: 1.959963984540054}  # two-sided normal quantiles
PARKINSON = 1.0 / (4.0 * math.log(2.0))
OPEN, HIGH, LOW, CLOSE = (FEATURES.index(f) for f in ("open", "high", "low", "close"))
METHODS = ("ewma", "parkinson", "blend", "har")
DEFAULT_METHOD = "har"
MIN_VOLATILITY = 1e-4  # a flat window (no move, no range) still gets a width
GARMAN_KLASS = 2.0 * math.log(2.0) - 1.0
MIN_VARIANCE = MIN_VOLATILITY**2  # a day with no range and no gap: its log stays finite
HAR_SHORT = 5  # the HAR's "week"; its "day" is the newest row, its "month" the whole window
HAR_FIT_WINDOWS = 200_000  # training windows the HAR regression is fitted on (a seeded sample)

Array = Any  # a NumPy array or a torch tensor


def _xp(a: Array):
    """The array library of `a`: NumPy, or torch for a tensor."""
    return np if isinstance(a, np.ndarray) else __import__("torch")


def ewma_volatility(ohlc: Array) -> Array:
    """(B,) EWMA standard deviation of the window's close-to-close log returns."""
    xp = _xp(ohlc)
    returns = xp.log(ohlc[:, 1:, CLOSE] / ohlc[:, :-1, CLOSE])  # (B, T-1), the newest last
    steps = returns.shape[1]
    weights = np.array([EWMA_LAMBDA ** (steps - 1 - i) for i in range(steps)])
    weights = weights / weights.sum()
    if xp is not np:
        weights = xp.as_tensor(weights, dtype=returns.dtype)
    return xp.sqrt((returns * returns * weights).sum(1))


def parkinson_volatility(ohlc: Array) -> Array:
    """(B,) Parkinson's high-low estimate of the daily standard deviation over the window."""
    xp = _xp(ohlc)
    spans = xp.log(ohlc[:, :, HIGH] / ohlc[:, :, LOW])
    return xp.sqrt((spans * spans).mean(1) * PARKINSON)


def range_variance(ohlc: Array) -> Array:
    """(B, T-1) each day's variance from its own prices, for the window's rows
    after the first: Garman-Klass's open-high-low-close estimate plus the
    squared overnight return (from the previous close to this open)."""
    xp = _xp(ohlc)
    o, h, lo, c = (ohlc[:, 1:, k] for k in (OPEN, HIGH, LOW, CLOSE))
    spans, bodies, gaps = xp.log(h / lo), xp.log(c / o), xp.log(o / ohlc[:, :-1, CLOSE])
    day = 0.5 * spans * spans - GARMAN_KLASS * bodies * bodies
    day = xp.clip(day, 0.0, None) if xp is np else day.clamp_min(0.0)
    total = day + gaps * gaps
    return xp.clip(total, MIN_VARIANCE, None) if xp is np else total.clamp_min(MIN_VARIANCE)


def har_features(ohlc: Array) -> list[Array]:
    """[(B,)] x 3: the log of the mean range variance over the newest day, the
    newest HAR_SHORT days and the whole window (Corsi's HAR, 2009, on a range
    variance: its day, week and month, as far as the window reaches)."""
    xp = _xp(ohlc)
    v = range_variance(ohlc)
    return [xp.log(v[:, -1]), xp.log(v[:, -HAR_SHORT:].mean(1)), xp.log(v.mean(1))]


def har_volatility(ohlc: Array, coefficients: tuple[float, ...]) -> Array:
    """(B,) the HAR's forecast of the next day's standard deviation:
    sqrt(exp(b0 + b1 log v_day + b2 log v_week + b3 log v_month))."""
    xp = _xp(ohlc)
    log_variance = coefficients[0] + sum(b * f for b, f in zip(coefficients[1:], har_features(ohlc), strict=True))
    return xp.sqrt(xp.exp(log_variance))


def fit_har(windows: np.ndarray, next_rows: np.ndarray) -> tuple[float, ...]:
    """Pooled least squares of the next day's log range variance on the
    window's HAR features: (b0, b_day, b_week, b_month)."""
    both = np.concatenate([windows[:, -1:], next_rows[:, None, :]], axis=1)
    target = np.log(range_variance(both)[:, 0])
    design = np.column_stack([np.ones(len(windows)), *har_features(windows)])
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    return tuple(float(b) for b in coefficients)


def window_volatility(ohlc: Array, method: str = DEFAULT_METHOD, har: tuple[float, ...] = ()) -> Array:
    """(B,) the volatility an interval is scaled by, never below MIN_VOLATILITY
    (`har`: the HAR's coefficients, for that method)."""
    xp = _xp(ohlc)
    if method == "har":
        if len(har) != 4:
            raise ValueError("the har volatility needs its 4 fitted coefficients")
        vol = har_volatility(ohlc, har)
    elif method == "ewma":
        vol = ewma_volatility(ohlc)
    elif method == "parkinson":
        vol = parkinson_volatility(ohlc)
    elif method == "blend":
        e, p = ewma_volatility(ohlc), parkinson_volatility(ohlc)
        vol = xp.sqrt((e * e + p * p) / 2.0)
    else:
        raise ValueError(f"unknown volatility {method!r}: choose {', '.join(METHODS)}")
    return xp.clip(vol, MIN_VOLATILITY, None) if xp is np else vol.clamp_min(MIN_VOLATILITY)


def scores(actual: np.ndarray, predicted: np.ndarray, last: np.ndarray, volatility: np.ndarray) -> np.ndarray:
    """The conformity score of each outcome: its miss in units of L * s."""
    return np.abs(actual - predicted) / (last * volatility)


def conformal_quantile(values: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ceil((n + 1) level)-th smallest score,
    which covers a new exchangeable score with probability >= level."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    rank = min(len(values), math.ceil((len(values) + 1) * level))
    return float(values[rank - 1])


@dataclass(frozen=True)
class Calibration:
    """What is fixed at training and travels in the model file: the volatility
    estimator and the score quantile at each level."""

    method: str
    quantiles: tuple[float, ...]  # one per LEVELS
    n: int  # validation windows the quantiles come from
    har: tuple[float, ...] = ()  # the HAR's coefficients (method "har"), fitted on training windows

    def to_metadata(self) -> dict:
        return {
            "method": self.method,
            "levels": list(LEVELS),
            "quantiles": list(self.quantiles),
            "n": self.n,
            "ewma_lambda": EWMA_LAMBDA,
            **({"har_coefficients": list(self.har)} if self.method == "har" else {}),
        }

    @classmethod
    def from_metadata(cls, data: dict) -> Calibration:
        if list(data.get("levels", [])) != list(LEVELS) or data.get("method") not in METHODS:
            raise ValueError(f"interval calibration {data!r} is not one this forecaster knows")
        har = tuple(float(b) for b in data.get("har_coefficients", ()))
        if data["method"] == "har" and len(har) != 4:
            raise ValueError(f"interval calibration {data!r} lacks the HAR's 4 coefficients")
        return cls(data["method"], tuple(float(q) for q in data["quantiles"]), int(data["n"]), har)

    @classmethod
    def fit(
        cls,
        actual: np.ndarray,
        predicted: np.ndarray,
        windows: np.ndarray,
        method: str,
        har: tuple[float, ...] = (),
    ) -> Calibration:
        """The score quantiles of the validation windows (float64 OHLC) and
        their outcomes, for `method` (and its HAR coefficients)."""
        volatility = window_volatility(windows, method, har)
        s = scores(actual, predicted, windows[:, -1, CLOSE], volatility)
        return cls(method, tuple(conformal_quantile(s, level) for level in LEVELS), len(s), har)

    def volatility(self, ohlc: Array) -> Array:
        return window_volatility(ohlc, self.method, self.har)

    def bounds(self, predicted: Array, ohlc: Array) -> list[Array]:
        """[lo80, hi80, lo95, hi95] for these windows and their point forecasts."""
        half = ohlc[:, -1, CLOSE] * self.volatility(ohlc)
        out = []
        for q in self.quantiles:
            out += [predicted - q * half, predicted + q * half]
        return out


def riskmetrics_volatility(closes: np.ndarray) -> np.ndarray:
    """For each day, RiskMetrics' EWMA standard deviation of daily log returns
    known at that day's close (lambda 0.94, started on the first returns)."""
    returns = np.diff(np.log(np.asarray(closes, dtype=np.float64)))
    variance = np.empty(len(closes))
    variance[0] = np.nan
    running = returns[: min(20, len(returns))].var() if len(returns) else np.nan
    for i, r in enumerate(returns, start=1):
        running = EWMA_LAMBDA * running + (1 - EWMA_LAMBDA) * r * r
        variance[i] = running
    return np.sqrt(variance)


def riskmetrics_bounds(last: np.ndarray, volatility: np.ndarray) -> list[np.ndarray]:
    """[lo80, hi80, lo95, hi95] of RiskMetrics: a Gaussian log return around no change."""
    out = []
    for level in LEVELS:
        z = GAUSSIAN[level] * volatility
        out += [last * np.exp(-z), last * np.exp(z)]
    return out


def interval_score(lo: np.ndarray, hi: np.ndarray, actual: np.ndarray, level: float) -> np.ndarray:
    """Winkler's score: the width, plus 2 / alpha times the distance by which the actual is outside."""
    alpha = 1.0 - level
    return (hi - lo) + (2.0 / alpha) * (np.maximum(lo - actual, 0.0) + np.maximum(actual - hi, 0.0))


def score_ratio(ours: dict, baseline: dict) -> float | None:
    """The interval score relative to the close, summed over both levels, ours
    over the baseline's (below 1 is better); None where the baseline scored 0
    (closes that never moved: a zero-width interval that always held)."""
    keys = [f"relative_score{int(round(level * 100))}" for level in LEVELS]
    base = sum(baseline[k] for k in keys)
    return sum(ours[k] for k in keys) / base if base else None


def summary(bounds: list[np.ndarray], actual: np.ndarray, last: np.ndarray) -> dict:
    """Coverage, mean width and mean interval score at each level (the width and
    the score also relative to the last close, so tickers of any price weigh alike)."""
    out = {"n": int(len(actual))}
    for i, level in enumerate(LEVELS):
        lo, hi = bounds[2 * i], bounds[2 * i + 1]
        tag = int(round(level * 100))
        score = interval_score(lo, hi, actual, level)
        out[f"coverage{tag}"] = float(np.mean((actual >= lo) & (actual <= hi))) if len(actual) else float("nan")
        out[f"width{tag}"] = float(np.mean(hi - lo)) if len(actual) else float("nan")
        out[f"score{tag}"] = float(np.mean(score)) if len(actual) else float("nan")
        out[f"relative_score{tag}"] = float(np.mean(score / last)) if len(actual) else float("nan")
    return out
