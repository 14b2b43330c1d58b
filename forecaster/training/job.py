"""One `forecaster train` job: pick tickers, train, write the checkpoint, the
metrics file and the plots, and say plainly how the model compares with naive."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sqlalchemy as sa

from .. import plots
from ..data import store
from ..data.prices import all_tickers as stored_tickers
from ..data.prices import load_series
from ..errors import DataError
from ..files import write_atomically
from ..tables import format_table
from . import checkpoint
from .config import TrainConfig
from .precision import bf16_support
from .train import compared_with_naive, train
from .windows import min_rows

MAX_TICKER_PLOTS = 20


@dataclass
class TrainJob:
    tickers: list[str]
    all_tickers: bool
    config: TrainConfig
    out: Path


@dataclass
class TrainOutcome:
    metrics: dict
    table: str
    verdict: str
    written: list[Path]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one-line facts about this machine's run


def run_training(engine: sa.Engine, job: TrainJob, *, progress: bool = False) -> TrainOutcome:
    warnings: list[str] = []
    stored = stored_tickers(engine)
    if not stored:
        raise DataError(
            f"the database {store.url_of(engine)} holds no prices: "
            "ingest some first (forecaster ingest PATH) or pass --data"
        )
    if job.all_tickers:
        series = load_series(engine, stored)
        short = [t for t, s in series.items() if len(s) < min_rows(job.config.seq_len)]
        for t in short:
            warnings.append(
                f"skipping {t}: {len(series.pop(t))} rows, fewer than {min_rows(job.config.seq_len)} needed"
            )
        if not series:
            raise DataError("no ticker in the database has enough history to train on")
    else:
        series = load_series(engine, job.tickers)

    result = train(series, job.config, progress=progress)
    warnings.extend(result.warnings)
    notes = [bf16_support(job.config.hidden, job.config.layers).line()] if result.precision == "bf16" else []
    out = Path(job.out)
    checkpoint.save(out, result.checkpoint)
    metrics = {**result.metrics, "config": asdict(job.config), "best_epoch": result.history["best_epoch"]}
    metrics_path = out.with_suffix(".metrics.json")
    write_atomically(metrics_path, lambda fh: fh.write((json.dumps(metrics, indent=2) + "\n").encode()))
    written = [out, metrics_path, plots.loss_curves(result.history, out.with_suffix(".loss.png"))]
    for ticker in list(result.predictions)[:MAX_TICKER_PLOTS]:
        p = result.predictions[ticker]
        m = result.metrics["tickers"][ticker]
        written.append(
            plots.forecast_vs_actual(
                ticker,
                p["dates"],
                p["actual"],
                p["predicted"],
                p["last"],
                out.with_suffix(f".test.{ticker}.png"),
                title=f"{ticker}: held-out next-day close (RMSE {m['test_rmse']:.3f} vs naive "
                f"{m['naive_rmse']:.3f}, ratio {m['ratio']:.3f})",
            )
        )
    if len(result.predictions) > MAX_TICKER_PLOTS:
        warnings.append(f"plotted the first {MAX_TICKER_PLOTS} of {len(result.predictions)} tickers")
    return TrainOutcome(metrics, held_out_table(result.metrics), verdict(result.metrics), written, warnings, notes)


def held_out_table(metrics: dict) -> str:
    """Per ticker: held-out days, RMSE and MAE beside naive's, their ratio, direction accuracy."""
    says = {"better": "", "level": "same as naive", "worse": "worse than naive"}
    rows = [
        (
            ticker,
            m["n_test"],
            f"{m['test_start']}..{m['test_end']}",
            m["test_rmse"],
            m["naive_rmse"],
            m["ratio"],
            m["test_mae"],
            m["naive_mae"],
            m["direction_accuracy"],
            says[compared_with_naive(m["ratio"])],
        )
        for ticker, m in metrics["tickers"].items()
    ]
    return format_table(
        ["ticker", "n_test", "test days", "rmse", "naive_rmse", "ratio", "mae", "naive_mae", "dir_acc", ""], rows
    )


def verdict(metrics: dict) -> str:
    o = metrics["overall"]
    summary = (
        f"mean RMSE ratio to naive over {o['n_tickers']} ticker(s): {o['mean_ratio']:.3f} "
        f"(median {o['median_ratio']:.3f}; below 1 beats naive)"
    )
    if o.get("is_naive"):
        return (
            "No epoch beat the naive forecast on validation, so the model kept its starting "
            f"weights and repeats the last close: it is the naive forecast. {summary}"
        )
    n, worse, level = o["n_tickers"], o["tickers_worse_than_naive"], o["tickers_level_with_naive"]
    better = n - worse - level
    if better == n:
        return f"The model beats the naive forecast on every ticker. {summary}"
    if worse == n:
        return f"The model is WORSE than the naive forecast on every ticker. {summary}"
    if level == n:
        return f"The model is level with the naive forecast on every ticker. {summary}"
    parts = [
        f"{count} {what}"
        for count, what in ((better, "better than"), (level, "level with"), (worse, "worse than"))
        if count
    ]
    return f"Of {n} tickers the model is {', '.join(parts)} the naive forecast. {summary}"
