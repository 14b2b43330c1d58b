"""`make flag-comparison`: training with and without the windows that cross a
flagged price (data/flags.py), on the real tickers of ../shared/universe.

Both runs train on the same database with the same seed and budget; the
held-out test keeps every window in both, so their figures compare. Prints
the final training and validation loss (each on its own windows), the
held-out ratio to naive (pooled and mean) and the interval score against
RiskMetrics with coverage, and writes benchmarks/flag_comparison.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import machine  # noqa: E402  (benchmarks/machine.py)
from bench import UNIVERSE, log, run_cli  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000, help="optimiser steps of each training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "flag_comparison.json"))
    args = ap.parse_args()
    if not (UNIVERSE / "Stocks").is_dir():
        raise SystemExit(f"needs the real tickers in {UNIVERSE}")
    results = {"machine": machine.describe(), "steps": args.steps, "seed": args.seed, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="forecaster-flags-") as tmp:
        db = f"sqlite:///{Path(tmp) / 'u.db'}"
        run_cli(["ingest", str(UNIVERSE), "--db", db, "--quiet"])
        for name, flag in (("skip_flagged", "--skip-flagged"), ("keep_flagged", "--keep-flagged")):
            out = Path(tmp) / f"{name}.pt"
            seconds, _ = run_cli(
                ["train", "--all", "--db", db, "--steps", str(args.steps), "--seed", str(args.seed), flag]
                + ["--out", str(out), "--quiet"]
            )
            metrics = json.loads(out.with_suffix(".metrics.json").read_text())
            history = torch.load(out, weights_only=True)["history"]
            o, iv = metrics["overall"], metrics["intervals"]["overall"]
            results["runs"][name] = {
                "seconds": seconds,
                "train_windows": o["train_windows"],
                "flagged_windows_skipped": o.get("flagged_windows_skipped", 0),
                "final_train_loss": history["train_loss"][-1],
                "best_val_loss": min(history["val_loss"]),
                "kept_step": o["kept_step"],
                "pooled_ratio": o["pooled_ratio"],
                "mean_ratio": o["mean_ratio"],
                "median_ratio": o["median_ratio"],
                "score_vs_riskmetrics": iv["score_vs_riskmetrics"],
                "coverage80": iv["coverage80"],
                "coverage95": iv["coverage95"],
            }
            log(f"{name}: {results['runs'][name]}")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    keys = list(next(iter(results["runs"].values())))
    print("| measure | " + " | ".join(results["runs"]) + " |")
    print("|---|" + "---:|" * len(results["runs"]))
    for key in keys:
        cells = [results["runs"][r][key] for r in results["runs"]]
        print(f"| {key} | " + " | ".join(f"{c:.4f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
