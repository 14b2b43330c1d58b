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
"""

from __future__ import annotations

import sys

import interval_comparison as ic
import numpy as np
import pandas as pd

from forecaster import intervals as iv
from forecaster.data.windows import reaching_back
from forecaster.features import CLOSE

L, S = iv.LONG_ROWS, ic.SEQ_LEN
VARIANTS = (  # (label, the extra regressors, one quantile per tail)
    ("har60", None, False),
    ("har60, asymmetric", None, True),
    ("har60 + friday", "friday", False),
    ("har60 + actual gap", "gap", False),
    ("har60 + market 3", "market 3", False),
    ("har60 + market 6", "market 6", False),
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


def calendar(universe, last_rows: np.ndarray) -> dict[str, np.ndarray]:
    days = pd.to_datetime(universe.dates.astype(str), format="%Y%m%d")
    friday = (days.day_of_week.to_numpy()[last_rows] == 4).astype(float)
    gap = np.log((days[last_rows + 1] - days[last_rows]).days.to_numpy().astype(float))
    return {"friday": friday, "gap": gap}


def main() -> int:
    universe, etf = ic.load(ic.SHARED / "universe")
    features = every_evening(universe)
    market = market_medians(universe, features)
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
        for label, extra, asymmetric in VARIANTS:
            design = {k: np.column_stack([c[""]] + ([c[extra]] if extra else [])) for k, c in columns.items()}
            b, nu = iv.fit_student_t_scale(design["fit"], fit_returns)
            scale = {k: np.exp(b[0] + d @ np.array(b[1:])) for k, d in design.items()}
            signed = (cal_next - cal_last) / (cal_last * scale["cal"])
            bounds = []
            for level in iv.LEVELS:
                if asymmetric:
                    lo, hi = np.quantile(signed, [(1 - level) / 2, (1 + level) / 2])
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
