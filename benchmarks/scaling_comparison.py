"""Which scaling (and batch size) gives the best held-out ratio to naive?

Trains one model per shared ticker for each variant and prints the
model RMSE / naive RMSE on held-out days. Run: make scaling-comparison
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from forecaster.data.ingest import ingest
from forecaster.data.prices import all_tickers, load_series
from forecaster.db import store
from forecaster.training.train import TrainConfig, train

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(SHARED))
    ap.add_argument(
        "--variants",
        default="scaling=relative;scaling=minmax",
        help="';'-separated variants, each a ','-separated list of TrainConfig "
        "fields, e.g. 'scaling=relative,batch_size=0;scaling=minmax'",
    )
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--out", help="also write the table as JSON here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        engine = store.connect(f"sqlite:///{tmp}/bench.db")
        ingest(engine, [args.data])
        tickers = all_tickers(engine)
        series = load_series(engine, tickers)
        results = {}
        for variant in args.variants.split(";"):
            fields = {k: _typed(k, v) for k, v in (kv.split("=") for kv in variant.split(","))}
            ratios, seconds = {}, 0.0
            for t in tickers:
                start = time.perf_counter()
                r = train({t: series[t]}, TrainConfig(**{"epochs": args.epochs, **fields}))
                seconds += time.perf_counter() - start
                ratios[t] = r.metrics["tickers"][t]["ratio"]
            results[variant] = {
                "ratios": ratios,
                "mean_ratio": float(np.mean(list(ratios.values()))),
                "seconds": seconds,
            }
            print(
                f"done {variant}: mean ratio {results[variant]['mean_ratio']:.4f} in {seconds:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    variants = list(results)
    print("| ticker | " + " | ".join(variants) + " |")
    print("|---|" + "---|" * len(variants))
    for t in tickers:
        print(f"| {t} | " + " | ".join(f"{results[v]['ratios'][t]:.3f}" for v in variants) + " |")
    print("| **mean** | " + " | ".join(f"**{results[v]['mean_ratio']:.3f}**" for v in variants) + " |")
    print("| seconds (10 tickers) | " + " | ".join(f"{results[v]['seconds']:.0f}" for v in variants) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


def _typed(name: str, value: str):
    """Cast a command-line value to the type of TrainConfig's field default."""
    return type(getattr(TrainConfig(), name))(value)


if __name__ == "__main__":
    sys.exit(main())
