"""`make interval-end-to-end`: the 2017 period of the interval comparison, made
the way a user makes it, through the database, beside the benchmark's own figures.

    train --all (prices through 2016-12-30) -> export -> predict --from 2017-01-03 --to 2017-11-10 -> report

on the ten shared tickers, then `interval_comparison.evaluate` on the same
tickers and period (the default method, har60). The two differ where they must: the
trained model calibrates its conformal quantiles on its own validation
windows (the benchmark on the last 20% of each ticker's fitting windows),
fits the HAR on its training windows, and `report` starts RiskMetrics 250
sessions before the first as_of (the benchmark at each ticker's first
close). The script prints both, their differences, and fails (exit 1) when
coverage differs by more than 2 points or the score ratio by more than 0.02
at either level. Writes benchmarks/interval_end_to_end.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import interval_comparison as comparison  # noqa: E402  (benchmarks/interval_comparison.py)

from forecaster import intervals as iv  # noqa: E402
from forecaster.artifact.export import export  # noqa: E402
from forecaster.data.ingest import ingest  # noqa: E402
from forecaster.db import store  # noqa: E402
from forecaster.serving.nightly import predict  # noqa: E402
from forecaster.serving.report import build_report  # noqa: E402
from forecaster.training.config import TrainConfig  # noqa: E402
from forecaster.training.job import TrainJob, run_job  # noqa: E402

THROUGH, FIRST, LAST = "2016-12-30", "2017-01-03", "2017-11-10"
COVERAGE_GAP, RATIO_GAP = 0.02, 0.02


def through_the_database(folder: Path, work: Path, seed: int) -> dict:
    url = f"sqlite:///{work / 'forecaster.db'}"
    engine = store.connect(url)
    ingest(engine, [folder], settle=0)
    engine.dispose()
    job = TrainJob([], True, TrainConfig(seed=seed, device="cpu"), work / "model.pt", through=THROUGH)
    started = time.perf_counter()
    run_job(job, url)
    trained = time.perf_counter() - started
    model = export(work / "model.pt", work / "model.onnx").path
    engine = store.connect(url)
    predict(engine, model, start=FIRST, end=LAST, device="cpu")
    figures = build_report(engine, since=FIRST).intervals["overall"]
    engine.dispose()
    out = {"train_seconds": trained, "n": figures["n"]}
    for level in ("80", "95"):
        rm = figures["riskmetrics"]
        out[level] = {
            "coverage": figures[f"coverage{level}"],
            "score_ratio": figures[f"relative_score{level}"] / rm[f"relative_score{level}"],
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "interval_end_to_end.json"))
    args = ap.parse_args()
    folder = comparison.SHARED / "data"
    if not folder.is_dir():
        raise SystemExit(f"needs the real tickers in {folder}")
    with tempfile.TemporaryDirectory() as tmp:
        database = through_the_database(folder, Path(tmp), args.seed)
    universe, etf = comparison.load(folder)
    period = comparison.evaluate(universe, etf, comparison.PERIODS["2017"], network=False)
    bench = period["methods"][iv.DEFAULT_METHOD]
    result = {"database": database, "benchmark": {}, "agree": True}
    print("| level | | coverage | score vs RiskMetrics |\n|---|---|---:|---:|")
    for level in ("80", "95"):
        b = bench[level]["all"]
        d = database[level]
        result["benchmark"][level] = {"coverage": b["coverage"], "score_ratio": b["score_ratio"], "n": b["n"]}
        agree = (
            abs(d["coverage"] - b["coverage"]) <= COVERAGE_GAP and abs(d["score_ratio"] - b["score_ratio"]) <= RATIO_GAP
        )
        result["agree"] &= agree
        print(
            f"| {level}% | database ({database['n']} outcomes) | {100 * d['coverage']:.1f}% | {d['score_ratio']:.3f} |"
        )
        print(f"| {level}% | benchmark ({b['n']} windows) | {100 * b['coverage']:.1f}% | {b['score_ratio']:.3f} |")
    print(f"trained in {database['train_seconds']:.0f} s; {'agree' if result['agree'] else 'DISAGREE'}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
