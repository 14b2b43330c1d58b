"""`make interval-comparison`: the interval methods on real tickers, out of sample.

The 400 real tickers of ../shared/universe (and, as a second small table,
the ten of ../shared/data) are ingested as a user would (rows set aside,
prices flagged), then evaluated over two periods:

  2015-16: fitted on windows whose target is on or before 2014-12-31,
           scored over 2015-01-02..2016-12-30 (the August 2015 and early-2016 sell-offs)
  2017:    fitted through 2016-12-30, scored over 2017

As in training: per ticker, the last VAL_FRACTION of the fitting windows
calibrate the conformal quantiles, the rest fit the HAR's regression, and
windows that cross a flagged price are left out of both. The point forecast
is the last close: on these tickers no network beats it (docs/training.md),
so the intervals alone differ.

Methods: RiskMetrics (EWMA 0.94 of close-to-close returns over the whole
history, Gaussian: the baseline) and split conformal around the point with
the volatility from the 20-row window: the EWMA/Parkinson blend (the earlier
default) and the HAR on a range variance (forecaster/intervals.py).

Per period and level: coverage, coverage on the calm and wild thirds of days
(by RiskMetrics' sigma that evening), the mean Winkler score relative to the
last close as a ratio to RiskMetrics', a Diebold-Mariano test against
RiskMetrics (the daily cross-sectional mean loss difference, Newey-West
variance), and the share of tickers whose mean score beats RiskMetrics';
for all tickers, stocks and ETFs. Writes benchmarks/interval_comparison.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from forecaster import intervals as iv
from forecaster.data.ingest import ingest
from forecaster.data.universe import Universe, load_universe, stored_counts
from forecaster.data.windows import gather
from forecaster.db import schema, store
from forecaster.features import CLOSE

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared"
SEQ_LEN = 20
VAL_FRACTION = 0.2
PERIODS = {
    "2015-16": (20141231, 20150102, 20161230),
    "2017": (20161230, 20170103, 20171231),
}
METHODS = ("blend", "har")


def windows_by_target(universe: Universe, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(first rows, target dates) of every window of every ticker."""
    starts = [np.arange(universe.starts[k], universe.starts[k + 1] - seq_len) for k in range(len(universe))]
    rows = np.concatenate(starts).astype(np.int64)
    return rows, universe.dates[rows + seq_len]


def clean(universe: Universe, rows: np.ndarray, seq_len: int) -> np.ndarray:
    """The windows that cross no flagged price (as training leaves them out)."""
    if universe.flagged is None:
        return rows
    seen = np.concatenate([[0], np.cumsum(universe.flagged, dtype=np.int64)])
    return rows[seen[rows + seq_len + 1] == seen[rows + 1]]


def fit_and_calibration(universe: Universe, rows: np.ndarray, targets: np.ndarray, through: int):
    """(HAR fitting rows, calibration rows): per ticker, the last VAL_FRACTION
    of its windows with a target on or before `through` calibrate."""
    fit, cal = [], []
    tickers = universe.ticker_of(rows)
    for k in range(len(universe)):
        mine = rows[(tickers == k) & (targets <= through)]
        n_cal = max(1, int(round(len(mine) * VAL_FRACTION))) if len(mine) >= 10 else 0
        fit.append(mine[: len(mine) - n_cal])
        cal.append(mine[len(mine) - n_cal :])
    return np.concatenate(fit), np.concatenate(cal)


def riskmetrics_at(universe: Universe, rows: np.ndarray, seq_len: int) -> np.ndarray:
    """RiskMetrics' sigma at each window's last day, from its ticker's history up to then."""
    closes, out = universe.ohlc[:, CLOSE].astype(np.float64), np.empty(len(rows))
    tickers = universe.ticker_of(rows)
    for k in np.unique(tickers):
        span = universe.rows(int(k))
        mine = tickers == k
        out[mine] = iv.riskmetrics_volatility(closes[span])[rows[mine] + seq_len - 1 - span.start]
    return out


def newey_west_dm(daily: np.ndarray) -> tuple[float, float]:
    """(DM statistic, two-sided p) for a mean loss difference of zero, from a
    series of daily differences; Newey-West variance, lag 4 (T/100)^(2/9)."""
    t = len(daily)
    d = daily - daily.mean()
    lags = int(4 * (t / 100) ** (2 / 9))
    variance = d @ d / t + 2 * sum((1 - k / (lags + 1)) * (d[k:] @ d[:-k]) / t for k in range(1, lags + 1))
    stat = daily.mean() / math.sqrt(variance / t)
    return float(stat), float(math.erfc(abs(stat) / math.sqrt(2)))


def evaluate(universe: Universe, etf: np.ndarray, period: tuple[int, int, int]) -> dict:
    through, first, last_day = period
    rows, targets = windows_by_target(universe, SEQ_LEN)
    kept = clean(universe, rows, SEQ_LEN)
    fit_rows, cal_rows = fit_and_calibration(universe, kept, universe.dates[kept + SEQ_LEN], through)
    test = rows[(targets >= first) & (targets <= last_day)]
    windows, actual = (a.astype(np.float64) for a in gather(universe, test, SEQ_LEN))
    last = windows[:, -1, CLOSE]
    cal_windows, cal_actual = (a.astype(np.float64) for a in gather(universe, cal_rows, SEQ_LEN))
    fit_windows, _ = gather(universe, fit_rows, SEQ_LEN)
    har = iv.fit_har(fit_windows.astype(np.float64), universe.ohlc[fit_rows + SEQ_LEN].astype(np.float64))
    sigma = riskmetrics_at(universe, test, SEQ_LEN)
    thirds = np.quantile(sigma, [1 / 3, 2 / 3])
    calm, wild = sigma <= thirds[0], sigma > thirds[1]
    days = universe.dates[test + SEQ_LEN]
    tickers = universe.ticker_of(test)
    is_etf = etf[tickers]
    baseline = iv.riskmetrics_bounds(last, sigma)
    out = {"windows": int(len(test)), "har_coefficients": list(har), "methods": {}}
    for method in METHODS:
        calibration = iv.Calibration.fit(cal_actual, cal_windows[:, -1, CLOSE], cal_windows, method, har)
        bounds = calibration.bounds(last, windows)
        figures = {}
        for i, level in enumerate(iv.LEVELS):
            ours = iv.interval_score(bounds[2 * i], bounds[2 * i + 1], actual, level) / last
            base = iv.interval_score(baseline[2 * i], baseline[2 * i + 1], actual, level) / last
            inside = (actual >= bounds[2 * i]) & (actual <= bounds[2 * i + 1])
            by_group = {}
            for group, mask in (("all", np.ones(len(test), bool)), ("stocks", ~is_etf), ("etfs", is_etf)):
                if not mask.any():
                    continue
                order = np.unique(days[mask], return_inverse=True)[1]
                daily = np.bincount(order, ours[mask] - base[mask]) / np.bincount(order)
                stat, p = newey_west_dm(daily)
                per_ticker = [
                    ours[mask & (tickers == k)].mean() < base[mask & (tickers == k)].mean()
                    for k in np.unique(tickers[mask])
                ]
                by_group[group] = {
                    "n": int(mask.sum()),
                    "score_ratio": float(ours[mask].mean() / base[mask].mean()),
                    "coverage": float(inside[mask].mean()),
                    "calm": float(inside[mask & calm].mean()),
                    "wild": float(inside[mask & wild].mean()),
                    "dm": stat,
                    "dm_p": p,
                    "tickers_better": float(np.mean(per_ticker)),
                }
            figures[f"{round(level * 100)}"] = by_group
        out["methods"][method] = figures
    riskmetrics = {}
    for i, level in enumerate(iv.LEVELS):
        inside = (actual >= baseline[2 * i]) & (actual <= baseline[2 * i + 1])
        riskmetrics[f"{round(level * 100)}"] = {
            "coverage": float(inside.mean()),
            "calm": float(inside[calm].mean()),
            "wild": float(inside[wild].mean()),
        }
    out["riskmetrics"] = riskmetrics
    return out


def load(folder: Path) -> tuple[Universe, np.ndarray]:
    """The folder's tickers as a user's database holds them, and which are ETFs."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = store.connect(f"sqlite:///{tmp}/i.db")
        ingest(engine, [folder], settle=0)
        universe = load_universe(engine, list(stored_counts(engine)))
        with engine.connect() as conn:
            f = schema.source_files.c
            sources = dict(conn.execute(sa.select(f.ticker, f.path)).all())
        engine.dispose()
    etf = np.array(["/ETFs/" in sources.get(t, "") for t in universe.tickers], dtype=bool)
    return universe, etf


def print_tables(name: str, result: dict) -> None:
    print(f"\n### {name}\n")
    print(
        "| period | level | method | coverage | calm / wild | score vs RiskMetrics | DM (p) | tickers better | "
        "stocks | ETFs |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for period, r in result.items():
        for level in ("80", "95"):
            rm = r["riskmetrics"][level]
            print(
                f"| {period} | {level}% | RiskMetrics | {100 * rm['coverage']:.1f}% | "
                f"{100 * rm['calm']:.1f} / {100 * rm['wild']:.1f} | 1.000 | | | | |"
            )
            for method, figures in r["methods"].items():
                a = figures[level]["all"]
                stocks, etfs = figures[level].get("stocks"), figures[level].get("etfs")
                print(
                    f"| {period} | {level}% | conformal, {method} | {100 * a['coverage']:.1f}% | "
                    f"{100 * a['calm']:.1f} / {100 * a['wild']:.1f} | {a['score_ratio']:.3f} | "
                    f"{a['dm']:+.1f} ({a['dm_p']:.2g}) | {100 * a['tickers_better']:.0f}% | "
                    + (f"{stocks['score_ratio']:.3f} | " if stocks else "| ")
                    + (f"{etfs['score_ratio']:.3f} |" if etfs else "|")
                )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "interval_comparison.json"))
    args = ap.parse_args()
    results = {}
    for name, folder in (
        ("400 real tickers (../shared/universe)", SHARED / "universe"),
        ("ten shared tickers", SHARED / "data"),
    ):
        if not folder.is_dir():
            raise SystemExit(f"needs the real tickers in {folder}")
        started = time.perf_counter()
        universe, etf = load(folder)
        results[name] = {period: evaluate(universe, etf, bounds) for period, bounds in PERIODS.items()}
        print(f"{name}: {len(universe)} tickers, {time.perf_counter() - started:.0f} s", file=sys.stderr)
        print_tables(name, results[name])
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
