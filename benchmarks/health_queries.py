"""`make health-queries`: what `forecaster status` (and a daemon's metrics
file) costs on a database of many stored predictions.

Builds TICKERS x SESSIONS of prices, one served run per session and a
prediction per ticker and run (2,000 x 500: 1,000,000 predictions, 230 MB),
the model promoted before the last fifth of its runs, then times
health(outcomes=True) beside the queries that read every stored outcome
(the coverage's sessions and the realised ratio as they were asked before
2026-12-02), in the same process: their ratio carries between machines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import machine
import numpy as np
import pandas as pd

from forecaster.db import store
from forecaster.serving.status import COVERAGE_WINDOWS, health

WHOLE = {  # every outcome read (the cost before), for the baseline
    "coverage sessions": "SELECT MIN(as_of) FROM (SELECT DISTINCT as_of FROM prediction_outcomes "
    "WHERE model_id = 'm' AND served = 1 AND in80 IS NOT NULL ORDER BY as_of DESC LIMIT {window}) AS recent",
    "realised ratio": "SELECT AVG(o.error * o.error) FROM prediction_outcomes o JOIN runs r ON r.run_id = o.run_id "
    "WHERE o.model_id = 'm' AND o.served = 1 AND o.actual_close IS NOT NULL AND r.started_at >= '{since}'",
}


def build(db: Path, tickers: int, sessions: int) -> str:
    """The database; returns the promotion time."""
    store.connect(f"sqlite:///{db}").dispose()
    days = [f"{d:%Y-%m-%d}" for d in pd.bdate_range(end="2017-11-10", periods=sessions + 1)]
    names = [f"t{k:04d}" for k in range(tickers)]
    closes = 50 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, (tickers, len(days))), axis=1))
    con = sqlite3.connect(db)
    con.executemany(
        "INSERT INTO prices (ticker, date, open, high, low, close, volume) VALUES (?, ?, ?, ?, ?, ?, 1000)",
        ((n, d, c, c * 1.01, c * 0.99, c) for k, n in enumerate(names) for d, c in zip(days, closes[k], strict=True)),
    )
    con.executemany("INSERT INTO price_dates (date, n_rows) VALUES (?, ?)", ((d, tickers) for d in days))
    con.executemany(
        "INSERT INTO tickers (ticker, first_date, last_date, n_rows, judged_through) VALUES (?, ?, ?, ?, ?)",
        ((n, days[0], days[-1], len(days), days[-1]) for n in names),
    )
    promoted_after = sessions * 4 // 5
    since = f"{days[promoted_after]}T22:00:00+00:00"
    con.execute(
        "INSERT INTO models (model_id, path, created_at, metadata, status, promoted_at) "
        "VALUES ('m', 'm.onnx', '2015-01-01', '{}', 'champion', ?)",
        (since,),
    )
    con.execute(
        "INSERT INTO promotions (decided_at, model_id, decision, reason, after_run_id) "
        "VALUES (?, 'm', 'promoted', 'benchmark', ?)",
        (since, promoted_after),
    )
    con.executemany(
        "INSERT INTO runs (run_id, started_at, finished_at, status, as_of, model_id, device, n_predictions) "
        "VALUES (?, ?, ?, 'succeeded', ?, 'm', 'cpu', ?)",
        ((i + 1, f"{d}T22:00:00+00:00", f"{d}T22:01:00+00:00", d, tickers) for i, d in enumerate(days[:-1])),
    )
    rows = (
        (i + 1, n, d, days[i + 1], c * 1.001, c, c * 0.987, c * 1.013, c * 0.98, c * 1.02)
        for i, d in enumerate(days[:-1])
        for n, c in zip(names, closes[:, i], strict=True)
    )
    con.executemany(
        "INSERT INTO predictions (run_id, model_id, ticker, as_of, target_date, predicted_close, last_close, "
        "lo80, hi80, lo95, hi95) VALUES (?, 'm', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    con.commit()
    con.close()
    return since


def seconds(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickers", type=int, default=2000, help="tickers, each predicted every session")
    ap.add_argument("--sessions", type=int, default=500, help="sessions of runs and predictions")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions (the median is shown)")
    args = ap.parse_args()
    print(machine.describe(), file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "h.db"
        since = build(db, args.tickers, args.sessions)
        engine = store.connect(f"sqlite:///{db}")
        at = dt.datetime(2017, 11, 13, 12, tzinfo=dt.UTC)
        ours = seconds(lambda: health(engine, at=at, calendar="XNYS"), args.reps)
        con = sqlite3.connect(db)
        queries = [WHOLE["coverage sessions"].format(window=w) for w in COVERAGE_WINDOWS]
        coverage = sum(seconds(lambda q=q: con.execute(q).fetchall(), args.reps) for q in queries)
        realised = seconds(lambda: con.execute(WHOLE["realised ratio"].format(since=since)).fetchall(), args.reps)
        before = coverage + realised
        print(
            f"{args.tickers} tickers x {args.sessions} sessions ({args.tickers * args.sessions:,} predictions): "
            f"health(outcomes=True) {ours:.2f} s; reading every outcome, its coverage sessions "
            f"{coverage:.2f} s ({len(queries)} windows) and its realised ratio {realised:.2f} s "
            f"(together {before:.2f} s, {before / ours:.1f}x health today)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
