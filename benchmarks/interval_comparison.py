"""`make interval-comparison`: which interval method, measured side by side.

One model on the ten shared tickers (the default settings), its validation
windows as the calibration set and its test windows (held-out days, in time
order) as the evaluation, exactly the days a walk-forward backfill scores:

  conformal + a volatility from the window: EWMA of close-to-close returns,
      Parkinson's high-low range, or their blend (forecaster/intervals.py);
  the same + adaptive conformal inference (Gibbs & Candes 2021), the miss
      level updated after every realised outcome, pooled over tickers;
  RiskMetrics: EWMA variance over the whole history, lambda 0.94, Gaussian.

Coverage at 80% and 95%, the gap between the calmest and the wildest third of
days (by RiskMetrics' volatility that morning), and the mean interval score
relative to the last close (Winkler; lower is better), also as a ratio to
RiskMetrics'. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from forecaster import intervals as iv
from forecaster.data.ingest import ingest
from forecaster.data.universe import load_universe, stored_counts
from forecaster.data.windows import gather
from forecaster.db import store
from forecaster.features import CLOSE
from forecaster.training.config import TrainConfig
from forecaster.training.distributed import World
from forecaster.training.evaluate import predict_windows
from forecaster.training.split import index_windows
from forecaster.training.train import train_universe

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ACI_GAMMA = 0.005


def per_window(universe, rows, seq_len, predicted):
    windows, actual = gather(universe, rows, seq_len)
    return windows.astype(np.float64), actual.astype(np.float64), windows[:, -1, CLOSE].astype(np.float64), predicted


def riskmetrics_for(universe, rows, seq_len) -> np.ndarray:
    """RiskMetrics' volatility at each window's last day, from its ticker's whole history up to then."""
    closes = universe.ohlc[:, CLOSE]
    out = np.empty(len(rows))
    tickers = universe.ticker_of(rows)
    for k in np.unique(tickers):
        span = universe.rows(int(k))
        vol = iv.riskmetrics_volatility(closes[span])
        mine = tickers == k
        out[mine] = vol[rows[mine] + seq_len - 1 - span.start]
    return out


def aci(scores_val: np.ndarray, scores_test: np.ndarray, order: np.ndarray, level: float) -> np.ndarray:
    """Per test window (in time order), the score quantile adaptive conformal inference uses."""
    alpha_target, alpha = 1 - level, 1 - level
    q = np.empty(len(scores_test))
    for i in order:
        q[i] = iv.conformal_quantile(scores_val, float(np.clip(1 - alpha, 0.0, 0.999)))
        miss = scores_test[i] > q[i]
        alpha += ACI_GAMMA * (alpha_target - miss)
    return q


def evaluate(name, bounds, actual, last, calm, wild, reference=None) -> dict:
    s = iv.summary(bounds, actual, last)
    row = {"method": name, **s}
    for tag, i in (("80", 0), ("95", 1)):
        lo, hi = bounds[2 * i], bounds[2 * i + 1]
        inside = (actual >= lo) & (actual <= hi)
        row[f"gap{tag}"] = abs(inside[calm].mean() - inside[wild].mean())
    if reference:
        row["vs_riskmetrics"] = (s["relative_score80"] + s["relative_score95"]) / (
            reference["relative_score80"] + reference["relative_score95"]
        )
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED))
    args = ap.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        engine = store.connect(f"sqlite:///{tmp}/i.db")
        ingest(engine, [args.data])
        universe = load_universe(engine, list(stored_counts(engine)))
    config = TrainConfig()
    world = World(0, 1, __import__("torch").device("cpu"))
    result = train_universe(universe, config, world)
    index = index_windows(universe, config.seq_len, config.test_fraction, config.val_fraction)
    seq = config.seq_len
    val = per_window(universe, index.val, seq, predict_windows(result.model, universe, index.val, seq, world.device))
    test = per_window(universe, index.test, seq, predict_windows(result.model, universe, index.test, seq, world.device))
    windows, actual, last, predicted = test
    rm_vol = riskmetrics_for(universe, index.test, seq)
    thirds = np.quantile(rm_vol, [1 / 3, 2 / 3])
    calm, wild = rm_vol <= thirds[0], rm_vol > thirds[1]
    reference = evaluate(
        "RiskMetrics (EWMA 0.94, Gaussian)", iv.riskmetrics_bounds(last, rm_vol), actual, last, calm, wild
    )
    rows = [reference]
    order = np.argsort(universe.dates[index.test + seq], kind="stable")  # time order across tickers
    for method in iv.METHODS:
        cal = iv.Calibration.fit(val[1], val[3], val[2], iv.window_volatility(val[0], method), method)
        vol = iv.window_volatility(windows, method)
        rows.append(
            evaluate(
                f"conformal, {method} volatility", cal.bounds(predicted, windows), actual, last, calm, wild, reference
            )
        )
        s_val = iv.scores(val[1], val[3], val[2], iv.window_volatility(val[0], method))
        s_test = iv.scores(actual, predicted, last, vol)
        bounds = []
        for level in iv.LEVELS:
            q = aci(s_val, s_test, order, level)
            half = q * last * vol
            bounds += [predicted - half, predicted + half]
        rows.append(
            evaluate(
                f"conformal, {method} volatility + ACI (gamma {ACI_GAMMA})", bounds, actual, last, calm, wild, reference
            )
        )
    print(
        f"ten shared tickers, one model, {len(actual)} held-out days; calibrated on {len(val[1])} validation "
        f"windows; {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    print(
        "| method | coverage 80 | coverage 95 | calm-wild gap 80 | gap 95 | score 80 (% of close) | "
        "score 95 | vs RiskMetrics |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['method']} | {100 * r['coverage80']:.1f}% | {100 * r['coverage95']:.1f}% | "
            f"{100 * r['gap80']:.1f} | {100 * r['gap95']:.1f} | {100 * r['relative_score80']:.3f} | "
            f"{100 * r['relative_score95']:.3f} | {r.get('vs_riskmetrics', 1.0):.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
