"""When a difference is evidence, not noise: one set of rules for training's
kept step, the promotion gate, and the accuracy reports.

* A candidate beats a reference on the same cases when its squared errors,
  case by case, are smaller on average by at least EVIDENCE standard errors
  of that mean difference (a paired z-test) over at least MIN_CASES cases.
  Training keeps a step only then (and when it removes MIN_GAIN of the
  start's error); the gate promotes a challenger only then (and when it
  clears --min-improvement).
* A ratio to naive within LEVEL_WITH_NAIVE of 1 is level with naive: a model
  that repeats the last close, computed in float32, rounds each price by up
  to 6e-8 of itself, which moved its ratio by 1e-7 on aaxj and can reach
  ~1e-5 on a $2 ticker.
* A forecast within DIRECTION_NOISE of the last close (relative) states no
  direction: the naive forecast comes back from float32 that close to it,
  and its "direction" is rounding, not a call.
"""

from __future__ import annotations

import math

import numpy as np

EVIDENCE = 2.0  # standard errors by which a candidate must beat the reference
MIN_GAIN = 0.002  # training: the share of the reference's mean squared error a kept step must remove
MIN_CASES = 20  # fewer paired cases are no evidence at all (z 0): one case has no spread to measure
LEVEL_WITH_NAIVE = 1e-4
DIRECTION_NOISE = 1e-6


def paired_z(reference_sq: np.ndarray, candidate_sq: np.ndarray) -> float:
    """The mean improvement (reference minus candidate squared error, case by
    case) in standard errors: positive when the candidate is better. An exact
    tie is 0; the same improvement on every case is +-inf."""
    diff = np.asarray(reference_sq, dtype=np.float64) - np.asarray(candidate_sq, dtype=np.float64)
    return z_from_moments(len(diff), float(diff.sum()), float((diff * diff).sum()))


def z_from_moments(n: int, total: float, total_sq: float) -> float:
    """paired_z from the count, sum and sum of squares of the differences
    (what a distributed sum or an SQL aggregate gives)."""
    if n < MIN_CASES:
        return 0.0
    mean = total / n
    spread = math.sqrt(max(total_sq / n - mean * mean, 0.0) / n)
    if spread > 0:
        return mean / spread
    return 0.0 if mean == 0 else math.copysign(math.inf, mean)


def compared_with_naive(ratio: float) -> str:
    """ "better", "level" or "worse" (a ratio within float noise of 1 is level);
    "undefined" for a ratio that is not a number (naive made no error)."""
    if not math.isfinite(ratio):
        return "undefined"
    if abs(ratio - 1.0) <= LEVEL_WITH_NAIVE:
        return "level"
    return "better" if ratio < 1.0 else "worse"


def direction(predicted: np.ndarray, last: np.ndarray) -> np.ndarray:
    """-1, 0 or +1: the move a forecast states, 0 within DIRECTION_NOISE of the last close."""
    predicted, last = np.asarray(predicted, dtype=np.float64), np.asarray(last, dtype=np.float64)
    return np.where(
        predicted > last * (1 + DIRECTION_NOISE), 1, np.where(predicted < last * (1 - DIRECTION_NOISE), -1, 0)
    )


def ratio_summary(ratios: dict[str, float], pooled: float | None) -> dict:
    """Summaries of per-ticker ratios to naive that are always numbers with a
    stated meaning: a ratio is undefined where naive made no error (a ticker
    whose closes never moved), so the mean and median are over the defined
    ones only, the undefined ones are counted and named, and the pooled ratio
    (every day of every ticker relative to its last close, which no flat
    ticker breaks) stands beside them. None where nothing is defined."""
    defined = {t: r for t, r in ratios.items() if math.isfinite(r)}
    kinds = [compared_with_naive(r) for r in defined.values()]
    values = np.fromiter(defined.values(), dtype=np.float64, count=len(defined))
    return {
        "mean_ratio": float(values.mean()) if len(values) else None,
        "median_ratio": float(np.median(values)) if len(values) else None,
        "pooled_ratio": pooled if pooled is not None and math.isfinite(pooled) else None,
        "tickers_undefined_ratio": sorted(set(ratios) - set(defined)),
        "tickers_worse_than_naive": kinds.count("worse"),
        "tickers_level_with_naive": kinds.count("level"),
        "tickers_better_than_naive": kinds.count("better"),
    }


def pooled_ratio(predicted: np.ndarray, actual: np.ndarray, last: np.ndarray) -> float | None:
    """RMSE relative to the last close over every case, over naive's; None when naive made no error."""
    naive = float(np.sqrt(np.mean(np.square((last - actual) / last)))) if len(actual) else 0.0
    if naive == 0:
        return None
    return float(np.sqrt(np.mean(np.square((predicted - actual) / last)))) / naive
