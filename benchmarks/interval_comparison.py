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
history, Gaussian: the baseline), and split conformal around the point with
the scale from: the EWMA/Parkinson blend and the HAR on the 20-row window
(the earlier defaults), har60 (the default: the HAR on 60 rows, fitted by
Student-t likelihood; forecaster/intervals.py), GJR-GARCH(1,1)-t per ticker
(`arch`), and the stacked LSTM that learns the spread
(benchmarks/interval_network.py; --no-network leaves it out). Every method is
scored on the same days: those whose ticker has the 60 rows har60 reads.

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
import warnings
from pathlib import Path

import interval_network
import numpy as np
import sqlalchemy as sa
from scipy.signal import lfilter

from forecaster import intervals as iv
from forecaster.data.ingest import ingest
from forecaster.data.universe import Universe, load_universe, stored_counts
from forecaster.data.windows import gather, reaching_back
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
METHODS = ("blend", "har", "har60")  # the library's (forecaster/intervals.py); GJR and the network are the benchmark's
CHUNK = 50_000  # windows gathered at a time


def windows_by_target(universe: Universe, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(first rows, target dates) of every window of every ticker."""
    starts = [np.arange(universe.starts[k], universe.starts[k + 1] - seq_len) for k in range(len(universe))]
    rows = np.concatenate(starts).astype(np.int64)
    return rows, universe.dates[rows + seq_len]


def clean(universe: Universe, rows: np.ndarray, seq_len: int) -> np.ndarray:
    """The windows that cross no flagged price (as training leaves them out)."""
    return rows[universe.free_of_flags(rows, seq_len)]


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


def sigma_of(universe: Universe, starts: np.ndarray, length: int, method: str, coefficients: tuple) -> np.ndarray:
    """The library's volatility (forecaster/intervals.py) for the `length`-row windows at `starts`, in chunks."""
    out = np.empty(len(starts))
    for i in range(0, len(starts), CHUNK):
        windows, _ = gather(universe, starts[i : i + CHUNK], length)
        out[i : i + CHUNK] = iv.window_volatility(windows.astype(np.float64), method, coefficients)
    return out


def fit_library(universe: Universe, method: str, fit_rows: np.ndarray) -> tuple:
    """A library method's coefficients, fitted as training fits them (on a seeded sample of training windows)."""
    if method not in iv.COEFFICIENTS:
        return ()
    length = iv.input_rows(method, SEQ_LEN)
    rows = fit_rows
    if len(rows) > iv.HAR_FIT_WINDOWS:
        rows = np.sort(np.random.default_rng(0).choice(rows, iv.HAR_FIT_WINDOWS, replace=False))
    starts, _ = reaching_back(universe, rows, SEQ_LEN, length, skip_flagged=True)
    windows, _ = gather(universe, starts, length)
    return iv.fit_coefficients(method, windows, universe.ohlc[starts + length])


def gjr_garch_t(universe: Universe, through: int) -> tuple[np.ndarray, dict]:
    """Per ticker, GJR-GARCH(1,1) with Student-t errors (`arch`) fitted on its
    returns through `through`, then run with those parameters over its whole
    history: (for each global row, the sigma forecast for the next day from
    returns up to that row; the fitted parameters' medians). A return into or
    out of a flagged price counts as no move."""
    from arch import arch_model

    closes = universe.ohlc[:, CLOSE].astype(np.float64)
    flagged = universe.flagged if universe.flagged is not None else np.zeros(len(closes), bool)
    sigma, fitted = np.full(len(closes), np.nan), []
    for k in range(len(universe)):
        span = universe.rows(k)
        r = np.diff(np.log(closes[span])) * 100  # percent, as arch is tuned for
        bad = flagged[span][1:] | flagged[span][:-1]  # return i runs from row i to row i + 1
        r[bad] = 0.0
        n_fit = int(np.sum(universe.dates[span][1:] <= through))
        if n_fit < 250:
            continue
        with warnings.catch_warnings():  # arch's advice on scaling and its optimiser's notes, per ticker
            warnings.simplefilter("ignore")
            model = arch_model(r, mean="Zero", vol="GARCH", p=1, o=1, q=1, dist="t", rescale=False)
            result = model.fit(disp="off", last_obs=n_fit)
        omega, alpha, gamma, beta = (result.params[name] for name in ("omega", "alpha[1]", "gamma[1]", "beta[1]"))
        fitted.append(result.params.to_numpy())
        shock = omega + (alpha + gamma * (r < 0)) * r * r
        variance = lfilter([1.0], [1.0, -beta], shock, zi=[beta * r[:n_fit].var()])[0]
        sigma[span.start + 1 : span.stop] = np.sqrt(variance) / 100  # the forecast made at each row's close
    names = ("omega", "alpha", "gamma", "beta", "nu")
    return sigma, dict(zip(names, np.median(np.array(fitted), axis=0).tolist(), strict=True)) if fitted else {}


def period_windows(universe: Universe, period: tuple[int, int, int]):
    """(fitting rows, calibration rows, test rows, their next and last closes,
    RiskMetrics' sigma on them) of one period: the windows every method is
    fitted, calibrated and scored on (test days: those with LONG_ROWS of history)."""
    through, first, last_day = period
    rows, targets = windows_by_target(universe, SEQ_LEN)
    kept = clean(universe, rows, SEQ_LEN)
    fit_rows, cal_rows = fit_and_calibration(universe, kept, universe.dates[kept + SEQ_LEN], through)
    test = rows[(targets >= first) & (targets <= last_day)]
    test = test[reaching_back(universe, test, SEQ_LEN, iv.LONG_ROWS)[1]]
    actual = universe.ohlc[test + SEQ_LEN, CLOSE].astype(np.float64)
    last = universe.ohlc[test + SEQ_LEN - 1, CLOSE].astype(np.float64)
    return fit_rows, cal_rows, test, actual, last, riskmetrics_at(universe, test, SEQ_LEN)


def evaluate(universe: Universe, etf: np.ndarray, period: tuple[int, int, int], network: bool = True) -> dict:
    """Every method over one period: calibrated on the last VAL_FRACTION of
    each ticker's fitting windows, scored on the days whose ticker has the
    LONG_ROWS of history the longest window reads (the same days for all)."""
    through = period[0]
    fit_rows, cal_rows, test, actual, last, sigma = period_windows(universe, period)
    scales, extra = {}, {}  # per method: (calibration rows kept, their scale, the test days' scale)
    for method in METHODS:
        length = iv.input_rows(method, SEQ_LEN)
        coefficients = fit_library(universe, method, fit_rows)
        cal_starts, cal_kept = reaching_back(universe, cal_rows, SEQ_LEN, length, skip_flagged=True)
        scales[method] = (
            cal_rows[cal_kept],
            sigma_of(universe, cal_starts, length, method, coefficients),
            sigma_of(universe, test + SEQ_LEN - length, length, method, coefficients),
        )
        if coefficients:
            extra[f"{method}_coefficients"] = list(coefficients)
    started = time.perf_counter()
    garch, extra["gjr_median_parameters"] = gjr_garch_t(universe, through)
    cal_garch = garch[cal_rows + SEQ_LEN - 1]
    usable = np.isfinite(cal_garch)
    scales["gjr-garch-t"] = (cal_rows[usable], cal_garch[usable], garch[test + SEQ_LEN - 1])
    print(f"  GJR-GARCH-t: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if network:
        started = time.perf_counter()
        long_fit, _ = reaching_back(universe, fit_rows, SEQ_LEN, iv.LONG_ROWS, skip_flagged=True)
        model, extra["network"] = interval_network.train(universe, long_fit)
        cal_starts, cal_kept = reaching_back(universe, cal_rows, SEQ_LEN, iv.LONG_ROWS, skip_flagged=True)
        scales["lstm"] = (
            cal_rows[cal_kept],
            interval_network.scale(model, universe, cal_starts),
            interval_network.scale(model, universe, test + SEQ_LEN - iv.LONG_ROWS),
        )
        extra["network"]["seconds"] = time.perf_counter() - started
    out = {"windows": int(len(test)), **extra, "methods": {}}
    for method, (cal, cal_scale, test_scale) in scales.items():
        cal_last = universe.ohlc[cal + SEQ_LEN - 1, CLOSE].astype(np.float64)
        cal_score = iv.scores(universe.ohlc[cal + SEQ_LEN, CLOSE].astype(np.float64), cal_last, cal_last, cal_scale)
        quantiles = [iv.conformal_quantile(cal_score, level) for level in iv.LEVELS]
        bounds = []
        for q in quantiles:
            half = np.nan_to_num(q * last * test_scale, nan=np.inf)  # no forecast (a young ticker's GARCH): no bound
            bounds += [last - half, last + half]
        out["methods"][method] = figures(universe, etf, test, actual, last, sigma, bounds)
    riskmetrics = {}
    calm, wild = thirds(sigma)
    baseline = iv.riskmetrics_bounds(last, sigma)
    for i, level in enumerate(iv.LEVELS):
        inside = (actual >= baseline[2 * i]) & (actual <= baseline[2 * i + 1])
        riskmetrics[f"{round(level * 100)}"] = {
            "coverage": float(inside.mean()),
            "calm": float(inside[calm].mean()),
            "wild": float(inside[wild].mean()),
        }
    out["riskmetrics"] = riskmetrics
    return out


def thirds(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The calm and the wild third of days, by RiskMetrics' sigma that evening."""
    cuts = np.quantile(sigma, [1 / 3, 2 / 3])
    return sigma <= cuts[0], sigma > cuts[1]


def figures(universe, etf, test, actual, last, sigma, bounds) -> dict:
    """Per level and group (all, stocks, ETFs): coverage, calm/wild coverage,
    the score ratio to RiskMetrics, Diebold-Mariano and the share of tickers better."""
    calm, wild = thirds(sigma)
    days = universe.dates[test + SEQ_LEN]
    tickers = universe.ticker_of(test)
    is_etf = etf[tickers]
    baseline = iv.riskmetrics_bounds(last, sigma)
    out = {}
    for i, level in enumerate(iv.LEVELS):
        ours = iv.interval_score(bounds[2 * i], bounds[2 * i + 1], actual, level) / last
        base = iv.interval_score(baseline[2 * i], baseline[2 * i + 1], actual, level) / last
        inside = (actual >= bounds[2 * i]) & (actual <= bounds[2 * i + 1])
        by_group = {}
        for group, mask in (("all", np.ones(len(test), bool)), ("stocks", ~is_etf), ("etfs", is_etf)):
            mask = mask & np.isfinite(ours)  # a day some method could not forecast is left out of its figures
            if not mask.any():
                continue
            order = np.unique(days[mask], return_inverse=True)[1]
            daily = np.bincount(order, ours[mask] - base[mask]) / np.bincount(order)
            stat, p = newey_west_dm(daily)
            mine = (mask & (tickers == k) for k in np.unique(tickers[mask]))
            per_ticker = [ours[m].mean() < base[m].mean() for m in mine]
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
        out[f"{round(level * 100)}"] = by_group
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
                    f"| {period} | {level}% | {method} | {100 * a['coverage']:.1f}% | "
                    f"{100 * a['calm']:.1f} / {100 * a['wild']:.1f} | {a['score_ratio']:.3f} | "
                    f"{a['dm']:+.1f} ({a['dm_p']:.2g}) | {100 * a['tickers_better']:.0f}% | "
                    + (f"{stocks['score_ratio']:.3f} | " if stocks else "| ")
                    + (f"{etfs['score_ratio']:.3f} |" if etfs else "|")
                )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "interval_comparison.json"))
    ap.add_argument("--no-network", action="store_true", help="leave out the LSTM (about 5 minutes a period)")
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
        results[name] = {
            period: evaluate(universe, etf, bounds, network=not args.no_network) for period, bounds in PERIODS.items()
        }
        print(f"{name}: {len(universe)} tickers, {time.perf_counter() - started:.0f} s", file=sys.stderr)
        print_tables(name, results[name])
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
