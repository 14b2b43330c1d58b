"""One `forecaster train` job: pick tickers, load their prices, train (alone
or as one rank of a torchrun job), then on rank 0 write the checkpoint, the
metrics file and the plots, and say plainly how the model compares with naive.
A stopped job leaves NAME.state.pt beside the checkpoint to resume from."""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sqlalchemy as sa

from .. import plots
from ..data.config import SETTLE_SECONDS
from ..data.ingest import ingest
from ..data.universe import Universe, load_universe, stored_counts
from ..db import schema, store
from ..db.config import DEFAULT_DB_URL
from ..errors import DataError
from ..evidence import compared_with_naive
from ..files import strict_json, write_atomically
from ..signals import stop_on_signals
from ..tables import format_table
from . import checkpoint
from .config import TrainConfig
from .distributed import World, join, leave
from .precision import bf16_support
from .split import min_rows
from .train import TrainResult, train_universe

MAX_TICKER_PLOTS = 20  # up to this many tickers each get a plot; beyond, a summary and a chosen few
CHOSEN_EACH = 2  # ...the best, the median and the worst ones by ratio
MAX_TABLE_ROWS = 30  # held-out table rows printed; all of them are in metrics.json


@dataclass
class TrainJob:
    tickers: list[str]
    all_tickers: bool
    config: TrainConfig
    out: Path
    through: str | None = None  # train on prices dated up to this day only (a retrain's challenger)

    def to_plain(self) -> dict:
        return {
            "tickers": self.tickers,
            "all_tickers": self.all_tickers,
            "config": asdict(self.config),
            "out": str(self.out),
            "through": self.through,
        }

    @classmethod
    def from_plain(cls, data: dict) -> TrainJob:
        return cls(
            list(data["tickers"]),
            bool(data["all_tickers"]),
            TrainConfig(**data["config"]),
            Path(data["out"]),
            data.get("through"),
        )


@dataclass
class TrainOutcome:
    metrics: dict
    table: str
    verdict: str
    written: list[Path]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one-line facts about this machine's run


def state_path(out: Path) -> Path:
    return Path(out).with_suffix(".state.pt")


def resume_job(state_file: Path, db_url: str | None = None) -> tuple[TrainJob, dict, str]:
    """(the job, its saved state, the database to read) of a stopped training:
    `db_url` when given, else the one the stopped run read (a URL with a
    password is not saved: then it must be given)."""
    state = checkpoint.load_state(state_file)
    saved = state["job"]
    if db_url is None:
        if saved.get("db_has_password"):
            raise DataError("give --db: the stopped run's database URL has a password, which is not saved")
        db_url = saved.get("db") or DEFAULT_DB_URL
    return TrainJob.from_plain(saved), state, db_url


def run_job(
    job: TrainJob,
    db_url: str,
    *,
    resume: dict | None = None,
    data: Iterable[str | Path] = (),
    progress: bool = False,
    settle: float = SETTLE_SECONDS,
    say: Callable[[str], None] = lambda line: None,
) -> TrainOutcome | None:
    """One `forecaster train`, alone or as one process of a torchrun job:
    join the job, ingest `data` on rank 0 (the others then read what it
    stored), and train with SIGTERM/SIGINT saving a state to resume from.
    The outcome on rank 0; None on the other ranks."""
    world = join(job.config.device)
    try:
        ingests = bool(data) and world.is_main
        engine = store.connect(db_url, read_only=not ingests)  # without --data, training only reads
        try:
            if ingests:
                say(ingest(engine, data, progress=progress, settle=settle).summary())
            world.barrier()
            with stop_on_signals() as should_stop:
                return run_training(
                    engine, job, world, progress=progress, should_stop=should_stop, resume=resume, db=db_url
                )
        finally:
            engine.dispose()
    finally:
        leave(world)


def run_training(
    engine: sa.Engine,
    job: TrainJob,
    world: World | None = None,
    *,
    progress: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    resume: dict | None = None,
    db: str | None = None,
    loaded: Universe | None = None,
    resumable: bool = True,
) -> TrainOutcome | None:
    """Train and, on rank 0, write and describe the result (None on the other ranks).
    `world`: this process's place in a torchrun job; by default it runs alone.
    `loaded`: the job's tickers' prices when the caller has read them already.
    `resumable`: a stop saves NAME.state.pt for `train --resume` (not for a
    retrain's challenger, which a resume could not finish as a retrain)."""
    world = world or join(job.config.device)
    started = time.perf_counter()
    tickers, warnings = choose_tickers(engine, job)
    snapshot = _snapshot(engine, world, tickers)
    tickers = snapshot["tickers"]
    universe = loaded if loaded is not None and loaded.tickers == sorted(tickers) else load_universe(engine, tickers)
    if snapshot["through"]:
        universe = universe.through(int(snapshot["through"].replace("-", "")))
    if world.distributed and world.any(universe.data_hash() != world.broadcast_text(universe.data_hash())):
        raise DataError(
            "the processes of this torchrun job read different prices (an ingest changed past days between "
            "their reads): train again"
        )
    if job.through:
        universe, dropped = _through(universe, job.through, job.config.seq_len)
        warnings.extend(dropped)
    read = time.perf_counter()
    result = train_universe(
        universe,
        job.config,
        world,
        progress=progress,
        should_stop=should_stop,
        state_path=state_path(job.out) if resumable else None,
        job={**job.to_plain(), **_saved_url(db)},
        resume=resume,
    )
    if not world.is_main:
        return None
    # Where the time went, and this process's peak memory: in metrics.json for benchmarks and users.
    result.metrics["timing"] = {
        "load_seconds": read - started,
        **result.timing,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    warnings.extend(result.warnings)
    notes = [bf16_support(job.config.hidden, job.config.layers).line()] if result.precision == "bf16" else []
    notes.append(
        f"trained {result.history['budget']} on {len(universe)} ticker(s), {world.size} process(es), "
        f"{world.device.type}"
    )
    if "stopped_early_at" in result.history:
        notes.append(
            f"stopped early at step {result.history['stopped_early_at']}: {job.config.patience} validation checks "
            "in a row without a step better beyond noise (--patience; 0 trains the whole budget)"
        )
    skipped = result.metrics["overall"].get("flagged_windows_skipped", 0)
    if skipped:
        notes.append(
            f"{skipped} training and validation windows left out: they cross a flagged price "
            "(price_flags; --keep-flagged keeps them)"
        )
    written = write_results(job, result)
    return TrainOutcome(
        result.metrics,
        held_out_table(result.metrics),
        verdict(result.metrics) + "\n" + intervals_line(result.metrics),
        written,
        warnings,
        notes,
    )


def _saved_url(db: str | None) -> dict:
    """How a stopped run remembers its database: the URL without its password, and whether it had one."""
    if not db:
        return {"db": None, "db_has_password": False}
    url = sa.engine.make_url(db)
    return {"db": url.render_as_string(hide_password=True), "db_has_password": url.password is not None}


def _snapshot(engine: sa.Engine, world: World, tickers: list[str]) -> dict:
    """What every process of a job trains on: rank 0's tickers, and its newest
    stored day (a torchrun job's ranks read the database one after another;
    an ingest between their reads must not give them different rows)."""
    if not world.distributed:
        return {"tickers": tickers, "through": None}
    mine = ""
    if world.is_main:
        with engine.connect() as conn:
            newest = conn.execute(sa.select(sa.func.max(schema.price_dates.c.date))).scalar()
        mine = json.dumps({"tickers": tickers, "through": newest})
    return json.loads(world.broadcast_text(mine))


def _through(universe: Universe, day: str, seq_len: int) -> tuple[Universe, list[str]]:
    """The prices up to `day`, without the tickers that had too little history by then."""
    universe = universe.through(int(day.replace("-", "")))
    needed = min_rows(seq_len)
    short = {k for k, n in enumerate(universe.counts) if n < needed}
    warnings = [
        f"skipping {universe.tickers[k]}: {universe.counts[k]} rows up to {day}, fewer than {needed} needed"
        for k in sorted(short)
    ]
    if len(short) == len(universe):
        raise DataError(f"no ticker has enough history up to {day} to train on")
    return universe.without(short), warnings


def choose_tickers(engine: sa.Engine, job: TrainJob) -> tuple[list[str], list[str]]:
    """(the tickers to train on, warnings): --all skips those with too little history."""
    counts = stored_counts(engine)
    if not counts:
        raise DataError(
            f"the database {store.url_of(engine)} holds no prices: "
            "ingest some first (forecaster ingest PATH) or pass --data"
        )
    if not job.all_tickers:
        return list(job.tickers), []
    needed = min_rows(job.config.seq_len)
    warnings = [f"skipping {t}: {n} rows, fewer than {needed} needed" for t, n in counts.items() if n < needed]
    chosen = [t for t, n in counts.items() if n >= needed]
    if not chosen:
        raise DataError("no ticker in the database has enough history to train on")
    return chosen, warnings


def write_results(job: TrainJob, result: TrainResult) -> list[Path]:
    """The checkpoint, NAME.metrics.json and the plots, beside --out."""
    out = Path(job.out)
    checkpoint.save(out, result.checkpoint)
    metrics = {**result.metrics, "config": asdict(job.config), "best_epoch": result.history["best_epoch"]}
    metrics_path = out.with_suffix(".metrics.json")
    write_atomically(metrics_path, lambda fh: fh.write((strict_json(metrics, indent=2) + "\n").encode()))
    written = [out, metrics_path, plots.loss_curves(result.history, out.with_suffix(".loss.png"))]
    ratios = {t: m["ratio"] for t, m in result.metrics["tickers"].items()}
    if len(ratios) > MAX_TICKER_PLOTS:
        written.append(plots.ratio_summary(ratios, out.with_suffix(".ratios.png")))
    for ticker in plotted(ratios):
        p, m = result.predictions[ticker], result.metrics["tickers"][ticker]
        dates = [result.universe.iso_date(r) for r in p["rows"]]
        written.append(
            plots.forecast_vs_actual(
                ticker,
                dates,
                p["actual"],
                p["predicted"],
                p["last"],
                out.with_suffix(f".test.{ticker}.png"),
                title=f"{ticker}: held-out next-day close (RMSE {m['test_rmse']:.3f} vs naive "
                f"{m['naive_rmse']:.3f}, ratio {m['ratio']:.3f})",
                bands=p.get("bounds"),
            )
        )
    return written


def plotted(ratios: dict[str, float]) -> list[str]:
    """Every ticker, or for a large universe the best, median and worst few by ratio."""
    if len(ratios) <= MAX_TICKER_PLOTS:
        return list(ratios)
    ranked = sorted(ratios, key=ratios.get)
    middle = len(ranked) // 2 - CHOSEN_EACH // 2
    return list(dict.fromkeys(ranked[:CHOSEN_EACH] + ranked[middle : middle + CHOSEN_EACH] + ranked[-CHOSEN_EACH:]))


def held_out_table(metrics: dict) -> str:
    """Per ticker: held-out days, RMSE and MAE beside naive's, their ratio, direction accuracy.
    For many tickers: the ones plotted (best, median, worst)."""
    says = {"better": "", "level": "same as naive", "worse": "worse than naive", "undefined": "flat: no ratio"}
    tickers = metrics["tickers"]
    shown = list(tickers) if len(tickers) <= MAX_TABLE_ROWS else plotted({t: m["ratio"] for t, m in tickers.items()})
    rows = [
        (
            t,
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
        for t, m in ((t, tickers[t]) for t in shown)
    ]
    table = format_table(
        ["ticker", "n_test", "test days", "rmse", "naive_rmse", "ratio", "mae", "naive_mae", "dir_acc", ""], rows
    )
    if len(shown) < len(tickers):
        table += (
            f"\n(the best, median and worst {CHOSEN_EACH} of {len(tickers)} tickers by ratio; "
            "all of them are in the metrics file)"
        )
    return table


def intervals_line(metrics: dict) -> str:
    """The held-out intervals in one line, beside RiskMetrics'."""
    o = metrics["intervals"]["overall"]
    rm = o["riskmetrics"]
    ratio = o["score_vs_riskmetrics"]
    method = metrics["intervals"]["calibration"]["method"]
    return (
        f"Intervals ({method}) on held-out days: 80% covered {100 * o['coverage80']:.1f}% (RiskMetrics "
        f"{100 * rm['coverage80']:.1f}%), 95% covered {100 * o['coverage95']:.1f}% "
        f"({100 * rm['coverage95']:.1f}%); "
        + (
            f"interval score {ratio:.3f} x RiskMetrics' (below 1 is better)"
            if ratio is not None
            else "no interval score ratio (no close moved)"
        )
    )


def verdict(metrics: dict) -> str:
    o = metrics["overall"]
    summary = _ratio_summary_text(o)
    if o.get("is_naive"):
        return (
            f"No {o.get('unit', 'epoch')} beat the naive forecast on validation beyond noise, so the model kept "
            f"its starting weights and repeats the last close: it is the naive forecast. {summary}"
        )
    better, worse, level = o["tickers_better_than_naive"], o["tickers_worse_than_naive"], o["tickers_level_with_naive"]
    n = better + worse + level
    if n and better == n:
        return f"The model beats the naive forecast on every ticker. {summary}"
    if n and worse == n:
        return f"The model is WORSE than the naive forecast on every ticker. {summary}"
    if n and level == n:
        return f"The model is level with the naive forecast on every ticker. {summary}"
    parts = [
        f"{count} {what}"
        for count, what in ((better, "better than"), (level, "level with"), (worse, "worse than"))
        if count
    ]
    return f"Of {n} tickers with a ratio the model is {', '.join(parts) or 'none of'} the naive forecast. {summary}"


def _ratio_summary_text(o: dict) -> str:
    """The held-out ratios in words, always numbers with their meaning (evidence.ratio_summary)."""
    undefined = o["tickers_undefined_ratio"]
    said = f"pooled RMSE ratio to naive, relative to the last close, over {o['n_tickers']} ticker(s): " + (
        f"{o['pooled_ratio']:.3f}" if o["pooled_ratio"] is not None else "undefined (no close ever moved)"
    )
    if o["mean_ratio"] is not None:
        said += f"; mean per ticker {o['mean_ratio']:.3f}, median {o['median_ratio']:.3f}"
    said += "; below 1 beats naive"
    if undefined:
        more = f" and {len(undefined) - 10} more" if len(undefined) > 10 else ""
        said += (
            f". {len(undefined)} ticker(s) have no ratio (their held-out closes never moved, so naive made no "
            f"error) and are left out of the mean and median: {', '.join(undefined[:10])}{more}"
        )
    return said
