"""Prediction intervals: calibrated 80% and 95% ranges around each forecast.

Split conformal prediction, made scale-free by a volatility estimate taken
from the window itself. For a window with last close L and volatility s (a
daily log-return standard deviation), the score of an outcome y is

    |y - predicted| / (L * s)

Its quantiles at 80% and 95% over the validation windows (never test days)
are fixed at training; an interval is then predicted +- q * L * s. One
global pair of numbers serves a $2 ticker and a $2,000 one, quiet or wild.

The volatility (the default, `har60`) is a HAR model (Corsi 2009) of the
next day's log return scale on a range variance over the newest 60 rows:
its day, week and month, the 60-day mean, and two exponential averages
(RiskMetrics' 0.94 of squared returns and 0.99 of the range variance) carry
memory past the point forecast's 20-row window. Its coefficients are fitted
at training by Student-t likelihood. The earlier estimators (a HAR on the
20-row window, the EWMA/Parkinson blend) stay for the models made with
them: see docs/intervals.md for the measurements that chose. The formulas
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
METHODS = ("ewma", "parkinson", "blend", "har", "har60")
DEFAULT_METHOD = "har60"
MIN_VOLATILITY = 1e-4  # a flat window (no move, no range) still gets a width
GARMAN_KLASS = 2.0 * math.log(2.0) - 1.0
MIN_VARIANCE = MIN_VOLATILITY**2  # a day with no range and no gap: its log stays finite
HAR_SHORT = 5  # the HAR's "week"; its "day" is the newest row, its "month" the whole window
HAR_FIT_WINDOWS = 200_000  # training windows the HAR regression is fitted on (a seeded sample)
LONG_ROWS = 60  # the har60 volatility's rows: about three months, measured against 20, 120 and 250
HAR_MONTH = 22  # Corsi's month, in trading days
EWMA_SLOW = 0.99  # the slower of har60's two averages: a memory of about 100 days
CHUNK = 20_000  # windows converted to float64 at a time where many are (100 MB at 60 rows)
COEFFICIENTS = {"har": 4, "har60": 7}  # fitted numbers per method that has them
READS = {"har60": LONG_ROWS}  # rows of history per method that reads beyond the model's window

Array = Any  # a NumPy array or a torch tensor


def _chunks(windows: np.ndarray, size: int):
    return (windows[i : i + size] for i in range(0, max(len(windows), 1), size))


def _xp(a: Array):
    """The array library of `a`: NumPy, or torch for a tensor."""
    return np if isinstance(a, np.ndarray) else __import__("torch")


def _ewma(values: Array, decay: float) -> Array:
    """(B,) the exponentially weighted mean of (B, T) values, the newest last,
    with weights decay^age normalised over the T days the window holds."""
    xp = _xp(values)
    steps = values.shape[1]
    weights = np.array([decay ** (steps - 1 - i) for i in range(steps)])
    weights = weights / weights.sum()
    if xp is not np:
        weights = xp.as_tensor(weights, dtype=values.dtype)
    return (values * weights).sum(1)


def _log_returns(ohlc: Array) -> Array:
    """(B, T-1) the window's close-to-close log returns, the newest last."""
    xp = _xp(ohlc)
    return xp.log(ohlc[:, 1:, CLOSE] / ohlc[:, :-1, CLOSE])


def ewma_volatility(ohlc: Array) -> Array:
    """(B,) EWMA standard deviation of the window's close-to-close log returns."""
    xp = _xp(ohlc)
    returns = _log_returns(ohlc)
    return xp.sqrt(_ewma(returns * returns, EWMA_LAMBDA))


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


def har60_features(ohlc: Array) -> list[Array]:
    """[(B,)] x 6 from the newest LONG_ROWS rows: the log of the mean range
    variance over the newest day, 5 days, HAR_MONTH days and all 59; the log
    of RiskMetrics' EWMA (0.94) of squared returns, and of an EWMA 0.99 of
    the range variance, both over those 59 days."""
    xp = _xp(ohlc)
    window = ohlc[:, -LONG_ROWS:]
    v, returns = range_variance(window), _log_returns(window)
    squared = returns * returns
    squared = xp.clip(squared, MIN_VARIANCE, None) if xp is np else squared.clamp_min(MIN_VARIANCE)
    return [
        xp.log(v[:, -1]),
        xp.log(v[:, -HAR_SHORT:].mean(1)),
        xp.log(v[:, -HAR_MONTH:].mean(1)),
        xp.log(v.mean(1)),
        xp.log(_ewma(squared, EWMA_LAMBDA)),
        xp.log(_ewma(v, EWMA_SLOW)),
    ]


def har60_volatility(ohlc: Array, coefficients: tuple[float, ...]) -> Array:
    """(B,) the scale of the next log return: exp(b0 + sum of b_i x feature_i)."""
    xp = _xp(ohlc)
    features = har60_features(ohlc)
    return xp.exp(coefficients[0] + sum(b * f for b, f in zip(coefficients[1:], features, strict=True)))


def fit_student_t_scale(features: np.ndarray, log_returns: np.ndarray) -> tuple[tuple[float, ...], float]:
    """((b0, b1, ...), nu): the log-linear scale exp(b0 + features @ b) and the
    degrees of freedom of a Student-t that maximise the likelihood of the
    next log returns (L-BFGS, started from the least-squares fit of log |r|)."""
    from scipy.optimize import minimize
    from scipy.special import digamma, expit, gammaln

    design = np.column_stack([np.ones(len(features)), features])
    log_r2 = np.log(np.maximum(np.asarray(log_returns, dtype=np.float64) ** 2, 1e-300))  # no move: no -inf
    start, *_ = np.linalg.lstsq(design, 0.5 * np.maximum(log_r2, math.log(MIN_VARIANCE)), rcond=None)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        # In logs throughout: the line search tries scales far off, where z^2 would overflow.
        beta, nu = theta[:-1], 2.0 + np.exp(theta[-1])
        log_scale = design @ beta
        a = log_r2 - np.log(nu) - 2.0 * log_scale  # log(z^2 / nu)
        tail = np.logaddexp(0.0, a)  # log(1 + z^2 / nu)
        share = expit(a)  # z^2 / (nu + z^2)
        constant = gammaln(nu / 2) - gammaln((nu + 1) / 2) + 0.5 * np.log(nu)
        nll = log_scale + 0.5 * (nu + 1) * tail + constant
        d_scale = 1.0 - (nu + 1) * share
        d_nu = 0.5 * tail - 0.5 * (nu + 1) * share / nu + 0.5 * digamma(nu / 2) - 0.5 * digamma((nu + 1) / 2) + 0.5 / nu
        n = len(log_r2)
        return nll.sum() / n, np.append(design.T @ d_scale / n, d_nu.sum() / n * (nu - 2.0))

    # nu - 2 between e^-10 and e^10: the line search cannot overflow it, and a Student-t beyond is a Gaussian.
    bounds = [(None, None)] * design.shape[1] + [(-10.0, 10.0)]
    start = np.append(start, np.log(3.0))
    fit = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 500})
    return tuple(float(b) for b in fit.x[:-1]), float(2.0 + np.exp(fit.x[-1]))


def fit_har60(windows: np.ndarray, next_close: np.ndarray, chunk: int = CHUNK) -> tuple[float, ...]:
    """har60's coefficients from training windows (B, >= LONG_ROWS, 4) and
    their next closes: the Student-t scale of the next log return. The
    features are computed in float64, `chunk` windows at a time."""
    features = np.concatenate(
        [np.column_stack(har60_features(part.astype(np.float64))) for part in _chunks(windows, chunk)]
    )
    last = windows[:, -1, CLOSE].astype(np.float64)
    coefficients, _ = fit_student_t_scale(features, np.log(np.asarray(next_close, dtype=np.float64) / last))
    return coefficients


def fit_har(windows: np.ndarray, next_rows: np.ndarray) -> tuple[float, ...]:
    """Pooled least squares of the next day's log range variance on the
    window's HAR features: (b0, b_day, b_week, b_month)."""
    both = np.concatenate([windows[:, -1:], next_rows[:, None, :]], axis=1)
    target = np.log(range_variance(both)[:, 0])
    design = np.column_stack([np.ones(len(windows)), *har_features(windows)])
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    return tuple(float(b) for b in coefficients)


def input_rows(method: str | None, seq_len: int) -> int:
    """The rows of history a model reads: its window, or more where its
    interval method (None: a model without intervals) reaches further back."""
    return max(seq_len, READS.get(method, 0))


def fit_coefficients(method: str, windows: np.ndarray, next_rows: np.ndarray) -> tuple[float, ...]:
    """The fitted numbers of a method that has them (COEFFICIENTS; () for the
    others), from training windows as long as it reads and their next rows (B, 4)."""
    if method == "har60":
        return fit_har60(windows, next_rows[:, CLOSE])
    if method == "har":
        return fit_har(windows.astype(np.float64), next_rows.astype(np.float64))
    return ()


def window_volatility(ohlc: Array, method: str = DEFAULT_METHOD, har: tuple[float, ...] = ()) -> Array:
    """(B,) the volatility an interval is scaled by, never below MIN_VOLATILITY
    (`har`: the HAR's coefficients, for that method)."""
    xp = _xp(ohlc)
    if method in COEFFICIENTS and len(har) != COEFFICIENTS[method]:
        raise ValueError(f"the {method} volatility needs its {COEFFICIENTS[method]} fitted coefficients")
    if method == "har60":
        vol = har60_volatility(ohlc, har)
    elif method == "har":
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
    har: tuple[float, ...] = ()  # the HAR's coefficients (methods "har", "har60"), fitted on training windows

    @property
    def rows(self) -> int:
        """The rows of history the volatility reads (0: the model's whole window)."""
        return READS.get(self.method, 0)

    def to_metadata(self) -> dict:
        return {
            "method": self.method,
            "levels": list(LEVELS),
            "quantiles": list(self.quantiles),
            "n": self.n,
            "ewma_lambda": EWMA_LAMBDA,
            **({"har_coefficients": list(self.har)} if self.method in COEFFICIENTS else {}),
            **({"rows": self.rows} if self.rows else {}),
        }

    @classmethod
    def from_metadata(cls, data: dict) -> Calibration:
        if list(data.get("levels", [])) != list(LEVELS) or data.get("method") not in METHODS:
            raise ValueError(f"interval calibration {data!r} is not one this forecaster knows")
        har = tuple(float(b) for b in data.get("har_coefficients", ()))
        wanted = COEFFICIENTS.get(data["method"], 0)
        if len(har) != wanted:
            raise ValueError(f"interval calibration {data!r} does not hold the {wanted} coefficients of its method")
        if data["method"] == "har60" and data.get("rows") != LONG_ROWS:
            raise ValueError(f"interval calibration {data!r}: har60 reads {LONG_ROWS} rows")
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
        """The score quantiles of the validation windows (OHLC, as long as the
        method reads) and their outcomes, for `method` (and its HAR
        coefficients); the volatility in float64, CHUNK windows at a time."""
        volatility = np.concatenate(
            [window_volatility(part.astype(np.float64), method, har) for part in _chunks(windows, CHUNK)]
        )
        s = scores(actual, predicted, windows[:, -1, CLOSE].astype(np.float64), volatility)
        return cls(method, tuple(conformal_quantile(s, level) for level in LEVELS), len(s), har)

    def input_rows(self, seq_len: int) -> int:
        return input_rows(self.method, seq_len)

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
