"""`make interval-additions`: additions to har60 measured on the 400 real
tickers, as `make interval-comparison` measures har60 (same periods, fitting
and calibration windows, days scored, score relative to RiskMetrics').

None of them is in the library; each was a candidate for the goal of 0.97x
RiskMetrics' score (docs/intervals.md says what came of them):

  asymmetric      the empirical quantiles of the signed score, one per tail
                  (10% and 90%, 2.5% and 97.5%; no conformal rank)
  + friday        a regressor: the next weekday is after a weekend
  + actual gap    the log of the calendar days to the next row (known only
                  afterwards, holidays included: an upper bound for any calendar regressor)
  + market 3 / 6  the cross-sectional median, that evening over every ticker
                  with the rows, of har60's day, week and month features / of all six
  + seasonal      for each of the last four quarters, the largest range variance
                  within 2 rows of 63, 126, 189 and 252 rows before the target, as
                  the log of its ratio to the month's mean when above it (0 below,
                  and where the ticker's history is shorter): earnings come back
                  every quarter, and daily prices carry no calendar of them
  + split         the overnight and the intraday parts of the range variance
                  apart: the log of each one's mean over the newest day, 5 days,
                  22 days and all 59 (eight regressors beside har60's six)
  per ticker      the conformal quantiles per ticker, shrunk to the pooled ones
                  with weight n / (n + SHRINK) for a ticker's n calibration windows
  tracked         the pooled quantile times a multiplier that each session's misses
                  over all tickers move by TRACKING x (miss rate - alpha) / alpha in
                  its log, used from the next session on (nightly adaptation)
"""

from __future__ import annotations

import sys
import warnings

import interval_comparison as ic
import numpy as np
import pandas as pd

from forecaster import intervals as iv
from forecaster.data.windows import reaching_back
from forecaster.intervals import CLOSE, HIGH, LOW, OPEN

L, S = iv.LONG_ROWS, ic.SEQ_LEN
QUARTER, BAND = 63, 2  # trading days in a quarter; rows either side an earnings day may fall
SHRINK = 500  # calibration windows at which a ticker's own quantile weighs half
TRACKING = 0.01  # the tracker's step; 0.02, 0.05 and 0.1 were worse at 95% in both periods
VARIANTS = (  # (label, the extra regressors, the calibration: pooled, per tail or per ticker)
    ("har60", (), "pooled"),
    ("har60, asymmetric", (), "per tail"),
    ("har60, per ticker", (), "per ticker"),
    ("har60, tracked", (), "tracked"),
    ("har60 + friday", ("friday",), "pooled"),
    ("har60 + actual gap", ("gap",), "pooled"),
    ("har60 + market 3", ("market 3",), "pooled"),
    ("har60 + market 6", ("market 6",), "pooled"),
    ("har60 + seasonal", ("seasonal",), "pooled"),
    ("har60 + split", ("split",), "pooled"),
    ("har60 + market 6 + seasonal", ("market 6", "seasonal"), "pooled"),
)


def every_evening(universe) -> np.ndarray:
    """(N, 6) har60's features of the window ending at every row that has LONG_ROWS of history
    (a ticker's last row too: the market factor of an evening knows nothing of who trades next)."""
    out = np.full((len(universe.dates), 6), np.nan)
    ends = np.concatenate([np.arange(universe.starts[k] + L - 1, universe.starts[k + 1]) for k in range(len(universe))])
    for i in range(0, len(ends), ic.CHUNK):
        part = ends[i : i + ic.CHUNK]
        windows = universe.ohlc[part[:, None] - L + 1 + np.arange(L)]
        out[part] = np.column_stack(iv.har60_features(windows.astype(np.float64)))
    return out


def market_medians(universe, features: np.ndarray) -> np.ndarray:
    """(N, 6) for each row, the median of `features` over every ticker's row of the same date."""
    known = np.isfinite(features[:, 0])
    frame = pd.DataFrame(features[known])
    frame["date"] = universe.dates[known]
    medians = frame.groupby("date").median()
    return medians.reindex(universe.dates).to_numpy()


def row_variance(universe) -> np.ndarray:
    """(N,) each row's range variance as har60 computes it (NaN for a ticker's
    first row, a flagged row and the row after it: their move is not a price's)."""
    o = universe.ohlc.astype(np.float64)
    previous = np.r_[np.nan, o[:-1, CLOSE]]
    previous[universe.starts[:-1]] = np.nan
    # Each row as a window of two: only the first row's close enters the library's formula.
    pairs = np.stack([np.repeat(previous[:, None], 4, axis=1), o], axis=1)
    with np.errstate(invalid="ignore"):
        v = iv.range_variance(pairs)[:, 0]
    v[np.isnan(previous)] = np.nan
    if universe.flagged is not None:
        bad = universe.flagged.astype(bool)
        v[bad | np.r_[False, bad[:-1]]] = np.nan
    return v


def seasonal(universe, v: np.ndarray, last_rows: np.ndarray, month: np.ndarray) -> np.ndarray:
    """(B, 4) for each of the last four quarters before the target (the row
    after `last_rows`): max(0, log of the largest v within BAND rows of it
    over exp(month)); 0 where the ticker's history does not reach back."""
    first = universe.starts[universe.ticker_of(last_rows)]
    out = np.zeros((len(last_rows), 4))
    for k in range(1, 5):
        rows = (last_rows + 1 - QUARTER * k)[:, None] + np.arange(-BAND, BAND + 1)
        values = np.where(rows >= first[:, None], v[np.clip(rows, 0, None)], np.nan)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bands: no history, no evidence
            ratio = np.log(np.nanmax(values, axis=1)) - month
        out[:, k - 1] = np.clip(np.nan_to_num(ratio, nan=0.0), 0.0, None)
    return out


def split_parts(universe, last_rows: np.ndarray) -> np.ndarray:
    """(B, 8) the log mean over the newest 1, 5, HAR_MONTH and all days of the
    window's intraday (Garman-Klass) and overnight (squared gap) variances."""
    out = []
    for i in range(0, len(last_rows), ic.CHUNK):
        part = last_rows[i : i + ic.CHUNK]
        w = universe.ohlc[part[:, None] - L + 1 + np.arange(L)].astype(np.float64)
        o, h, lo, c = (w[:, 1:, k] for k in (OPEN, HIGH, LOW, CLOSE))
        floor = iv.MIN_VARIANCE / 2  # each part's share of har60's floor
        intraday = np.clip(0.5 * np.log(h / lo) ** 2 - iv.GARMAN_KLASS * np.log(c / o) ** 2, floor, None)
        overnight = np.maximum(np.log(o / w[:, :-1, CLOSE]) ** 2, floor)
        spans = (1, iv.HAR_SHORT, iv.HAR_MONTH, L - 1)
        out.append(np.column_stack([np.log(x[:, -n:].mean(1)) for x in (intraday, overnight) for n in spans]))
    return np.concatenate(out)


def quantiles_per_ticker(universe, scores: np.ndarray, cal_rows: np.ndarray, level: float) -> np.ndarray:
    """(n_tickers,) each ticker's conformal quantile of its calibration scores,
    shrunk to the pooled one by its count."""
    pooled = iv.conformal_quantile(scores, level)
    tickers = universe.ticker_of(cal_rows)
    out = np.full(len(universe), pooled)
    for k in np.unique(tickers):
        mine = scores[tickers == k]
        weight = len(mine) / (len(mine) + SHRINK)
        out[k] = weight * iv.conformal_quantile(mine, level) + (1 - weight) * pooled
    return out


def tracked(quantile: float, scores: np.ndarray, days: np.ndarray, level: float) -> np.ndarray:
    """(B,) the test days' quantile, session by session: `quantile` times a
    multiplier moved after each session by that session's share of `scores`
    (the test days' normalised misses) beyond its quantile."""
    alpha, log_multiplier = 1 - level, 0.0
    session = np.unique(days, return_inverse=True)[1]
    out = np.empty(len(scores))
    for d in range(session.max() + 1):
        today = session == d
        out[today] = quantile * np.exp(log_multiplier)
        log_multiplier += TRACKING * (np.mean(scores[today] > out[today]) - alpha) / alpha
    return out


def calendar(universe, last_rows: np.ndarray) -> dict[str, np.ndarray]:
    days = pd.to_datetime(universe.dates.astype(str), format="%Y%m%d")
    friday = (days.day_of_week.to_numpy()[last_rows] == 4).astype(float)
    gap = np.log((days[last_rows + 1] - days[last_rows]).days.to_numpy().astype(float))
    return {"friday": friday, "gap": gap}


def main() -> int:
    universe, etf = ic.load(ic.SHARED / "universe")
    features = every_evening(universe)
    market = market_medians(universe, features)
    v = row_variance(universe)
    for period, span in ic.PERIODS.items():
        fit_rows, cal_rows, test, actual, last, sigma = ic.period_windows(universe, span)
        if len(fit_rows) > iv.HAR_FIT_WINDOWS:  # the sample training fits on
            fit_rows = np.sort(np.random.default_rng(0).choice(fit_rows, iv.HAR_FIT_WINDOWS, replace=False))
        fit_starts, _ = reaching_back(universe, fit_rows, S, L, skip_flagged=True)
        cal_starts, cal_kept = reaching_back(universe, cal_rows, S, L, skip_flagged=True)
        ends = {"fit": fit_starts + L - 1, "cal": cal_starts + L - 1, "test": test + S - 1}
        columns = {
            name: {
                "": features[e],
                **calendar(universe, e),
                "market 3": market[e][:, :3],
                "market 6": market[e],
                "seasonal": seasonal(universe, v, e, features[e][:, 2]),
                "split": split_parts(universe, e),
            }
            for name, e in ends.items()
        }
        closes = universe.ohlc[:, CLOSE].astype(np.float64)
        fit_returns = np.log(closes[ends["fit"] + 1] / closes[ends["fit"]])
        cal_last, cal_next = closes[ends["cal"]], closes[ends["cal"] + 1]

        if period == next(iter(ic.PERIODS)):
            print(
                "| period | method | 80% score | coverage | stocks | ETFs | 95% score | coverage | stocks | ETFs | nu "
                "| added coefficients |"
            )
            print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label, extra, calibration in VARIANTS:
            design = {k: np.column_stack([c[""]] + [c[x] for x in extra]) for k, c in columns.items()}
            b, nu = iv.fit_student_t_scale(design["fit"], fit_returns)
            scale = {k: np.exp(b[0] + d @ np.array(b[1:])) for k, d in design.items()}
            signed = (cal_next - cal_last) / (cal_last * scale["cal"])
            bounds = []
            for level in iv.LEVELS:
                if calibration == "per tail":
                    lo, hi = np.quantile(signed, [(1 - level) / 2, (1 + level) / 2])
                elif calibration == "per ticker":
                    hi = quantiles_per_ticker(universe, np.abs(signed), ends["cal"], level)[universe.ticker_of(test)]
                    lo = -hi
                elif calibration == "tracked":
                    misses = np.abs(actual - last) / (last * scale["test"])
                    hi = tracked(iv.conformal_quantile(np.abs(signed), level), misses, universe.dates[test + S], level)
                    lo = -hi
                else:
                    hi = iv.conformal_quantile(np.abs(signed), level)
                    lo = -hi
                bounds += [last + lo * last * scale["test"], last + hi * last * scale["test"]]
            fig = ic.figures(universe, etf, test, actual, last, sigma, bounds)
            cells = [
                f"{fig[level]['all']['score_ratio']:.4f} | {100 * fig[level]['all']['coverage']:.1f}% | "
                f"{fig[level]['stocks']['score_ratio']:.4f} | {fig[level]['etfs']['score_ratio']:.4f}"
                for level in ("80", "95")
            ]
            extra_b = ", ".join(f"{x:+.3f}" for x in b[7:]) or "-"
            print(f"| {period} | {label} | {' | '.join(cells)} | {nu:.2f} | {extra_b} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
