"""Should a promoted challenger be refit on the gate days before it serves?

`forecaster retrain` trains its challenger on prices that stop `gate_days`
sessions before the newest, and judges it on those sessions. Once it passes,
it could serve as it is (the file the gate scored), or be refit on every
stored price (60 more sessions, unseen by any gate). This measures what the
refit buys, on the ten real tickers, at several points in time ("folds"):

  today    = the session before the evaluation window
  as-is    = trained on prices up to today - gate_days (what the gate judged)
  refit    = trained on prices up to today
  evaluate = the next `eval_days` sessions after today, point-in-time,
             RMSE relative to the last close, pooled, beside naive

Each variant is trained with several seeds, so the refit's effect can be set
beside the run-to-run noise of training itself.
Run: make refit-comparison
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from forecaster.data.ingest import ingest
from forecaster.data.universe import iso_day, load_universe, stored_counts
from forecaster.data.windows import gather
from forecaster.db import store
from forecaster.features import CLOSE
from forecaster.lifecycle.gate import target_rows
from forecaster.training.config import TrainConfig
from forecaster.training.distributed import World
from forecaster.training.model import predict
from forecaster.training.split import min_rows
from forecaster.training.train import train_universe

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def relative_rmse(model, universe, first: int, last: int, seq_len: int) -> tuple[float, float, int]:
    """(model RMSE, naive RMSE, n) over targets dated in [first, last], relative to the last close
    (the rows and windows the promotion gate scores)."""
    rows = target_rows(universe, seq_len, first, last)
    windows, actual = gather(universe, rows - seq_len, seq_len)
    predicted = predict(model, windows).numpy().astype(np.float64)
    previous = universe.ohlc[rows - 1, CLOSE].astype(np.float64)

    def rms(x):
        return float(np.sqrt(np.mean(np.square(x / previous))))

    return rms(predicted - actual), rms(previous - actual), len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED))
    ap.add_argument("--gate-days", type=int, default=60)
    ap.add_argument("--eval-days", type=int, default=60)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        engine = store.connect(f"sqlite:///{tmp}/refit.db")
        ingest(engine, [args.data])
        config = TrainConfig(device="cpu")
        tickers = [t for t, n in stored_counts(engine).items() if n >= min_rows(config.seq_len) + args.gate_days * 4]
        universe = load_universe(engine, tickers)
    sessions = np.unique(universe.dates)
    world = World(0, 1, __import__("torch").device("cpu"))
    print(
        f"{len(tickers)} tickers: {', '.join(tickers)}; gate {args.gate_days} sessions, "
        f"evaluated on the next {args.eval_days}\n"
    )
    print("| fold: evaluated on | variant | trained up to | RMSE / naive per seed | mean | seconds |")
    print("|---|---|---|---|---|---|")
    effects, noise = [], []
    for fold in range(args.folds):
        end = len(sessions) - 1 - fold * args.eval_days
        first, last = int(sessions[end - args.eval_days + 1]), int(sessions[end])
        today = end - args.eval_days
        ratios = {}
        for name, through in (("as-is", today - args.gate_days), ("refit", today)):
            history = universe.through(int(sessions[through]))
            ratios[name], started = [], time.perf_counter()
            for seed in range(args.seeds):
                result = train_universe(history, TrainConfig(device="cpu", seed=seed), world)
                rmse, naive, n = relative_rmse(result.model, universe, first, last, config.seq_len)
                ratios[name].append(rmse / naive)
                print(f"fold {fold} {name} seed {seed}: {rmse / naive:.4f} on {n}", file=sys.stderr, flush=True)
            seconds = (time.perf_counter() - started) / args.seeds
            print(
                f"| {iso_day(first)}..{iso_day(last)} | {name} | {iso_day(sessions[through])} | "
                + ", ".join(f"{r:.4f}" for r in ratios[name])
                + f" | {statistics.mean(ratios[name]):.4f} | {seconds:.0f} |"
            )
        effects.append(statistics.mean(ratios["refit"]) - statistics.mean(ratios["as-is"]))
        noise.extend(abs(a - b) for a, b in zip(ratios["as-is"], ratios["as-is"][1:], strict=False))
        noise.extend(abs(a - b) for a, b in zip(ratios["refit"], ratios["refit"][1:], strict=False))
    print(
        f"\nrefit minus as-is, mean ratio per fold: {', '.join(f'{e:+.4f}' for e in effects)}; "
        f"seed-to-seed difference (same data): mean {statistics.mean(noise) if noise else float('nan'):.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
