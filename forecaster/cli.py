"""The `forecaster` command line: parse, call the library, print.

Defaults come from the library's own settings (the config modules), so a
changed default changes the command too. Heavy imports (torch, onnx,
onnxruntime) live inside the commands that need them, so `--help` is
instant and the scoring path never loads torch. Every option can also come
from the environment (see `option`).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import gc
import signal
import sys
import threading
from pathlib import Path

import click

from .artifact.config import DEFAULT_OPSET, DEFAULT_TOLERANCE
from .data.config import DEFAULT_CALENDAR, SETTLE_SECONDS
from .db.config import DEFAULT_DB_URL
from .devices import DEFAULT_DEVICE, DEVICES
from .errors import ForecasterError
from .lifecycle.config import GATES, DaemonConfig, RetrainConfig
from .serving.config import MODEL_CHAMPION
from .training.config import PRECISIONS, STEP_BUDGET, TUTORIAL_EPOCHS, TrainConfig

# Nothing a command leaves needs collecting at exit (open_store closes the
# database first): freezing what is alive skips the interpreter's final full
# collection over everything SQLAlchemy, NumPy and ONNX Runtime loaded, about
# 0.1 s of a nightly run's ~1.5 s.
atexit.register(gc.freeze)

TRAIN = TrainConfig()
RETRAIN = RetrainConfig()
SCALINGS = ("relative", "minmax")


def daemon_default(name: str):
    return next(f.default for f in dataclasses.fields(DaemonConfig) if f.name == name)


def option(*decls, command: str = "", **kwargs):
    """click.option whose environment variable is FORECASTER_<LONG NAME>, or
    FORECASTER_<COMMAND>_<LONG NAME> for an option whose meaning is the
    command's own (one variable name, one meaning: tests/test_cli.py)."""
    long_name = next(d for d in decls if d.startswith("--")).split("/")[0]
    prefix = f"FORECASTER_{command.upper().replace('-', '_')}_" if command else "FORECASTER_"
    kwargs.setdefault("envvar", prefix + long_name[2:].upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    return click.option(*decls, **kwargs)


db_option = option("--db", default=DEFAULT_DB_URL, show_default=True, metavar="URL", help="SQLAlchemy database URL.")
data_option = option(
    "--data",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Ingest new rows from these files/folders first (repeatable).",
)
tickers_option = option("--tickers", metavar="A,B", help="Comma-separated tickers, e.g. aaxj,a (any case).")
settle_option = option(
    "--settle",
    default=SETTLE_SECONDS,
    show_default=True,
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="Read a file's unterminated last line only once the file has been unchanged this long (before "
    "that a writer may be in the middle of it); 0: at once.",
)
tolerance_option = option(
    "--tolerance",
    default=DEFAULT_TOLERANCE,
    show_default=True,
    type=click.FloatRange(0),
    help="Largest relative difference allowed between the two implementations compared.",
)
quiet_option = option("--quiet", "-q", is_flag=True, help="Print only the result lines (for scripts).")
device_option = option(
    "--device",
    default=DEFAULT_DEVICE,
    show_default=True,
    type=click.Choice(DEVICES),
    help="auto: CUDA when ONNX Runtime can really use it, else CPU; cuda: fail "
    "unless CUDA is active; cpu: never try CUDA.",
)
model_option = option(
    "--model",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The exported ONNX model, or `champion`: the registry's champion, resolved at every run and "
    "scored with its challengers beside it (see `forecaster models`).",
)
shard_option = option(
    "--shard",
    metavar="K/N",
    help="Score only shard K of N (stable hash of the ticker), so N machines can split "
    "a universe and write into one database without overlap.",
)
calendar_option = option(
    "--calendar",
    default=DEFAULT_CALENDAR,
    show_default=True,
    help="Exchange calendar for the next trading day (exchange_calendars code).",
)


RETRAIN_OPTIONS = [
    option(
        "--gate-days",
        default=RETRAIN.gate_days,
        show_default=True,
        type=click.IntRange(1),
        help="Sessions the gate scores on: held back from the challenger (backtest), or nights "
        "of realised outcomes beside the champion (realized).",
    ),
    option(
        "--min-improvement",
        default=RETRAIN.min_improvement,
        show_default=True,
        type=click.FloatRange(0, 1, max_open=True),
        help="Promote only when the challenger's RMSE is at most the champion's x (1 - this); "
        "it must also be no worse than naive.",
    ),
    option(
        "--gate",
        default=RETRAIN.gate,
        show_default=True,
        type=click.Choice(GATES),
        help="backtest: score a challenger trained without the last gate days on them, decide at "
        "once; realized: register it, shadow-score it nightly, decide after gate-days nights.",
    ),
    option(
        "--models-dir",
        default=RETRAIN.models_dir,
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder for the challengers' checkpoints, ONNX files and plots.",
    ),
    option(
        "--train-device",
        command="retrain",
        default=RETRAIN.device,
        show_default=True,
        type=click.Choice(DEVICES),
        help="Where the challenger trains: auto: CUDA when torch can use it, else CPU; cuda: fail unless "
        "CUDA is usable.",
    ),
]


def retrain_options(func):
    """The options of a retrain, shared by `retrain` and `daemon --retrain-cron`."""
    for decorator in reversed(RETRAIN_OPTIONS):
        func = decorator(func)
    return func


def retrain_config(gate_days, min_improvement, gate, models_dir, train_device) -> RetrainConfig:
    return RetrainConfig(
        gate_days=gate_days, min_improvement=min_improvement, gate=gate, models_dir=models_dir, device=train_device
    )


def reports_errors(func):
    """Turn library errors into `Error: <one line>` and a non-zero exit
    (with --debug: the traceback, causes included). Anything else is a bug
    and keeps its traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ForecasterError as exc:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # e.g. an output folder that cannot be written
            raise click.ClickException(f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)) from None

    return wrapper


def open_store(url: str, *, read_only: bool = False):
    """The command's database, closed when the command ends (SQLite then
    checkpoints its WAL and removes it, so no -wal file is left beside it)."""
    from .db import store

    engine = store.connect(url, read_only=read_only)
    click.get_current_context().call_on_close(engine.dispose)
    return engine


def parse_tickers(text: str | None) -> list[str]:
    return [t.strip().lower() for t in (text or "").split(",") if t.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="forecaster")
@option("--debug", is_flag=True, help="On an error, show the full traceback (with its causes), not one line.")
def main(debug):
    """Next-day close forecasts from daily OHLC history: ingest prices, train a
    stacked LSTM, export it to ONNX, and score every night into SQL."""


# -- files -> prices -------------------------------------------------------


@main.command("sample-data")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@option("--n-tickers", default=5, show_default=True, type=click.IntRange(1), help="How many tickers.")
@option("--days", default=750, show_default=True, type=click.IntRange(1), help="Business days of history per ticker.")
@option("--seed", command="sample-data", default=0, show_default=True, type=int, help="Same seed, same files.")
@option(
    "--ar",
    default=0.0,
    show_default=True,
    type=click.FloatRange(-0.99, 0.99),
    help="AR(1) coefficient of daily log-returns (0: a pure random walk).",
)
@reports_errors
def sample_data(out_dir, n_tickers, days, seed, ar):
    """Write synthetic OHLC files to OUT_DIR/Stocks/<ticker>.us.txt (dataset layout)."""
    from .data.sample import write_sample_data

    paths = write_sample_data(out_dir, tickers=n_tickers, days=days, seed=seed, ar=ar)
    click.echo(f"wrote {len(paths)} files of {days} days to {out_dir / 'Stocks'}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@option(
    "--revise",
    multiple=True,
    metavar="TICKER",
    help="Accept the file of TICKER as the vendor's revised history (repeatable, or A,B): it replaces the "
    "stored rows, which are kept in price_revisions.",
)
@settle_option
@calendar_option
@db_option
@quiet_option
@reports_errors
def ingest(paths, revise, settle, calendar, db, quiet):
    """Load new rows from PATHS (*.txt / *.csv files; folders searched recursively).

    Unchanged files are skipped without being read; appended files cost only
    their new rows. Bad rows are set aside in `rejected_rows` with their file,
    line and reason; the good rows and other files still go in. Stored
    history is never overwritten, except by --revise.
    """
    from .data.ingest import ingest as run_ingest

    tickers = [t for given in revise for t in parse_tickers(given)]
    report = run_ingest(open_store(db), paths, progress=not quiet, revise=tickers, settle=settle, calendar=calendar)
    for line in report.problems:
        click.echo(f"unreadable: {line}", err=True)
    click.echo(report.summary())


# -- prices -> model -------------------------------------------------------


@main.command()
@tickers_option
@option("--all", "all_tickers", is_flag=True, help="Train on every ticker in the database.")
@option(
    "--out",
    command="train",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoint to write, e.g. exports/NAME.pt; metrics and plots go beside it.",
)
@data_option
@db_option
@option(
    "--seq-len", default=TRAIN.seq_len, show_default=True, type=click.IntRange(2), help="Days in each input window."
)
@option("--hidden", default=TRAIN.hidden, show_default=True, type=click.IntRange(1), help="LSTM hidden size.")
@option("--layers", default=TRAIN.layers, show_default=True, type=click.IntRange(1), help="Stacked LSTM layers.")
@option(
    "--epochs",
    default=TRAIN.epochs,
    type=click.IntRange(1),
    help=f"Passes over the training windows [default: {TUTORIAL_EPOCHS} when that is at most "
    f"{STEP_BUDGET:,} optimiser steps, else --steps {STEP_BUDGET:,}].",
)
@option(
    "--steps",
    default=TRAIN.steps,
    type=click.IntRange(1),
    help="A budget in optimiser steps instead of epochs (for large universes).",
)
@option(
    "--lr", default=TRAIN.lr, show_default=True, type=click.FloatRange(0, min_open=True), help="Adam learning rate."
)
@option(
    "--batch-size",
    default=TRAIN.batch_size,
    show_default=True,
    type=click.IntRange(0),
    help="Windows per optimiser step, all processes together; 0 = the whole training set (the tutorial's).",
)
@option(
    "--test-fraction",
    default=TRAIN.test_fraction,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Share of each ticker's latest windows held out for the test.",
)
@option(
    "--scaling",
    default=TRAIN.scaling,
    show_default=True,
    type=click.Choice(SCALINGS),
    help="relative: each window divided by its last close; minmax: per ticker/column to [-1, 1] "
    "fitted on training rows.",
)
@option(
    "--seed",
    command="train",
    default=TRAIN.seed,
    show_default=True,
    type=click.IntRange(0),
    help="Seed for weights and shuffling.",
)
@option(
    "--precision",
    default=TRAIN.precision,
    show_default=True,
    type=click.Choice(PRECISIONS),
    help="bf16: run the training forward pass in bfloat16 (faster on CPUs with AVX512-BF16/AMX; "
    "fp32 with a warning where the CPU cannot); weights and the exported model stay float32.",
)
@option(
    "--device",
    command="train",
    default=TRAIN.device,
    show_default=True,
    type=click.Choice(DEVICES),
    help="auto: CUDA when torch can use it, else CPU; cuda: fail unless CUDA is usable.",
)
@option(
    "--resume",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Carry on a stopped training from its NAME.state.pt (its own settings; other options ignored).",
)
@settle_option
@quiet_option
@reports_errors
def train(
    tickers,
    all_tickers,
    out,
    data,
    db,
    seq_len,
    hidden,
    layers,
    epochs,
    steps,
    lr,
    batch_size,
    test_fraction,
    scaling,
    seed,
    precision,
    device,
    resume,
    settle,
    quiet,
):
    """Fit one stacked LSTM on --tickers (or --all) and report held-out
    accuracy next to the naive forecast (tomorrow's close = today's close).

    Writes the checkpoint (--out), NAME.metrics.json, NAME.loss.png and
    NAME.test.<ticker>.png plots beside it (for many tickers: a summary and
    the best, median and worst few). The same command runs under
    `torchrun --nproc-per-node N -m forecaster train ...` as one DDP job; rank
    0 writes. SIGTERM or Ctrl-C save NAME.state.pt to resume from.
    """
    from .training.job import TrainJob, resume_job  # torch: only once the cheap checks passed

    state = None
    if resume:
        job, state = resume_job(resume)
        if click.get_current_context().get_parameter_source("db").name == "DEFAULT":
            db = state["job"].get("db") or db  # the database the stopped run trained on
            if "***" in db:
                raise click.UsageError("give --db: the stopped run's database URL has a password, not saved")
    else:
        if bool(tickers) == all_tickers:
            raise click.UsageError("give either --tickers A,B or --all")
        if out is None:
            raise click.UsageError("give --out NAME.pt (where the checkpoint goes)")
        config = dataclasses.replace(
            TRAIN,
            seq_len=seq_len,
            hidden=hidden,
            layers=layers,
            epochs=epochs,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            test_fraction=test_fraction,
            scaling=scaling,
            seed=seed,
            precision=precision,
            device=device,
        )
        job = TrainJob(tickers=parse_tickers(tickers), all_tickers=all_tickers, config=config, out=out)
    outcome = _train(job, state, data, db, quiet, settle)
    if outcome is None:  # another rank of a torchrun job: rank 0 reports
        return
    for line in outcome.warnings:
        click.echo(f"warning: {line}", err=True)
    for line in outcome.notes:
        click.echo(line, err=True)
    click.echo(outcome.table)
    click.echo(outcome.verdict)
    click.echo(f"wrote {', '.join(str(p) for p in outcome.written)}")


def _train(job, state, data, db, quiet, settle):
    """Join the torchrun job (if any), ingest on rank 0, train with SIGTERM/SIGINT saving a state."""
    from .training.distributed import join, leave
    from .training.job import run_training

    world = join(job.config.device)
    try:
        engine = open_store(db, read_only=not (data and world.is_main))  # without --data, training only reads
        if data and world.is_main:
            from .data.ingest import ingest as run_ingest

            click.echo(run_ingest(engine, data, progress=not quiet, settle=settle).summary(), err=quiet)
        world.barrier()  # the other ranks read what rank 0 ingested
        with stop_on_signals() as should_stop:
            return run_training(engine, job, world, progress=not quiet, should_stop=should_stop, resume=state, db=db)
    finally:
        leave(world)


@contextlib.contextmanager
def stop_on_signals():
    """SIGTERM and SIGINT ask the work to stop at its next safe point (yields the question)."""
    asked = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: asked.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield asked.is_set
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- model -> ONNX file ----------------------------------------------------


@main.command()
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(dir_okay=False, path_type=Path))
@option(
    "--out",
    command="export",
    type=click.Path(dir_okay=False, path_type=Path),
    help="ONNX file to write [default: CHECKPOINT with .onnx].",
)
@option("--opset", default=DEFAULT_OPSET, show_default=True, type=click.IntRange(14), help="ONNX opset version.")
@tolerance_option
@reports_errors
def export(checkpoint_path, out, opset, tolerance):
    """Write CHECKPOINT as one self-contained ONNX file, after checking it
    against torch on held-out windows; on a mismatch nothing is written."""
    from .artifact.export import export as run_export

    result = run_export(checkpoint_path, out or checkpoint_path.with_suffix(".onnx"), opset=opset, tolerance=tolerance)
    click.echo(f"wrote {result.path} (sha256 {result.sha256})")
    click.echo(
        f"ONNX Runtime vs torch on {result.n_checked} held-out windows: largest difference "
        f"{result.max_abs:.3g} (relative {result.max_rel:.3g})"
    )


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@tickers_option
@db_option
@option("--windows", default=256, show_default=True, type=click.IntRange(1), help="How many windows to check.")
@option("--seed", command="verify", default=0, show_default=True, type=int, help="Seed for the random windows.")
@tolerance_option
@reports_errors
def verify(model, tickers, db, windows, seed, tolerance):
    """Run MODEL in ONNX Runtime and the tutorial's LSTM equations (NumPy, with
    the file's own weights) on the same windows; print the largest difference.
    Exits non-zero above the tolerance.

    The windows are random, or with --tickers the latest stored ones of those
    tickers (from --db).
    """
    from .artifact.verify import verify as run_verify

    names = parse_tickers(tickers)
    result = run_verify(
        model,
        engine=open_store(db, read_only=True) if names else None,
        tickers=names,
        n_windows=windows,
        seed=seed,
        tolerance=tolerance,
    )
    click.echo(
        f"ONNX Runtime vs NumPy reference on {result.source}: largest difference "
        f"{result.max_abs:.3g} (relative {result.max_rel:.3g}), within {tolerance:g}"
    )


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
@reports_errors
def info(model, as_json):
    """Print what MODEL was trained on, its held-out metrics and its sha256."""
    import json

    from .artifact.model_file import describe

    meta = describe(model)
    if as_json:
        click.echo(json.dumps(meta, indent=2))
        return
    training = meta["training"]
    click.echo(f"model     {meta['path']}\nsha256    {meta['sha256']}\ncreated   {meta['created_at']}")
    click.echo(
        f"network   {meta['model_config']['layers']}x{meta['model_config']['hidden']} LSTM, "
        f"seq_len {meta['seq_len']}, features {', '.join(meta['features'])}"
    )
    click.echo(f"scaling   {meta['scaling']['method']}")
    click.echo(f"data      sha256 {training['data_sha256']}")
    for ticker, t in training["tickers"].items():
        m = meta["metrics"].get("tickers", {}).get(ticker, {})
        click.echo(
            f"  {ticker:<10} {t['first_date']}..{t['last_date']} ({t['rows']} rows, trained to "
            f"{t['train_end_date']})  held-out RMSE {m.get('test_rmse', float('nan')):.4f} vs naive "
            f"{m.get('naive_rmse', float('nan')):.4f}"
        )
    click.echo(f"versions  {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}")


# -- model + new prices -> predictions -------------------------------------


@main.command()
@model_option
@data_option
@option("--as-of", help="Score this date (YYYY-MM-DD) [default: the newest date in prices].")
@option("--from", "start", metavar="D1", help="Backfill: score every date with prices from D1...")
@option("--to", "end", metavar="D2", help="...to D2 (inclusive), each as of its own date.")
@settle_option
@device_option
@calendar_option
@shard_option
@db_option
@quiet_option
@reports_errors
def predict(model, data, as_of, start, end, settle, device, calendar, shard, db, quiet):
    """One nightly run: ingest new rows, score every ticker with a close on
    as_of and enough history, and write next-day predictions.

    Each as_of commits whole or not at all; a rerun adds nothing. Tickers
    without a close on as_of are reported as stale, not scored.
    """
    from .serving.nightly import predict as run_predict
    from .serving.shards import Shard

    if as_of and (start or end):
        raise click.UsageError("give --as-of or --from/--to, not both")
    part = Shard.parse(shard) if shard else None
    outcome = run_predict(
        open_store(db),
        model,
        as_of=as_of,
        start=start,
        end=end,
        data=data,
        device=device,
        calendar=calendar,
        progress=not quiet,
        shard=part,
        settle=settle,
    )
    if outcome.ingest and not quiet:
        click.echo(outcome.ingest.summary())
    for run_id in outcome.recovered:
        click.echo(f"marked abandoned run {run_id} as failed", err=True)
    for run in outcome.runs:
        click.echo(f"run {run.run_id} on {run.device} in {run.seconds:.2f}s: {run.message}")


@main.command()
@model_option
@data_option
@option(
    "--cron",
    default=daemon_default("cron"),
    show_default=True,
    help="When to run, as a crontab line (minute hour day month weekday).",
)
@option("--timezone", default=daemon_default("timezone"), show_default=True, help="Time zone of --cron.")
@option(
    "--misfire-grace",
    default=daemon_default("misfire_grace"),
    show_default=True,
    type=click.IntRange(1),
    help="Seconds a late run may still start (e.g. after a suspend).",
)
@option(
    "--lookback",
    default=daemon_default("lookback"),
    show_default=True,
    type=click.IntRange(0),
    help="Sessions back in which a ticker whose file arrived after its night was scored is still scored.",
)
@option(
    "--min-fresh",
    default=daemon_default("min_fresh"),
    show_default=True,
    type=click.FloatRange(0, 1),
    help="A scheduled run first waits until this share of the previous session's tickers have a close "
    "on the new session (0: do not wait).",
)
@option(
    "--wait-max",
    default=int(daemon_default("wait_max").total_seconds() // 60),
    show_default=True,
    type=click.IntRange(0),
    help="Minutes a scheduled run waits for the night's data; then it scores what has arrived and "
    "names what is missing.",
)
@option(
    "--recheck",
    default=int(daemon_default("recheck").total_seconds() // 60),
    show_default=True,
    type=click.IntRange(1),
    help="Minutes between ingests while waiting for the night's data.",
)
@option(
    "--retrain-cron",
    default=daemon_default("retrain_cron"),
    metavar="CRON",
    help='Also retrain on this schedule (crontab line, e.g. "0 6 * * 6"), never during a scoring run; '
    "needs --model champion.",
)
@option(
    "--lock-check",
    default=int(daemon_default("lock_check").total_seconds()),
    show_default=True,
    type=click.IntRange(1),
    metavar="SECONDS",
    help="How often the daemon checks that it still holds its one-per-database lock (a PostgreSQL lock is "
    "lost when the server restarts); one that lost it exits 75, to be started again.",
)
@retrain_options
@settle_option
@device_option
@calendar_option
@shard_option
@db_option
@reports_errors
def daemon(
    model,
    data,
    cron,
    timezone,
    misfire_grace,
    lookback,
    min_fresh,
    wait_max,
    recheck,
    retrain_cron,
    lock_check,
    gate_days,
    min_improvement,
    gate,
    models_dir,
    train_device,
    settle,
    device,
    calendar,
    shard,
    db,
):
    """Run `predict` on a schedule until stopped (SIGTERM/SIGINT exit 0).

    On start it catches up every as_of this model still owes: each date after
    its last succeeded run, and recent dates where a ticker's file arrived
    late. A scheduled run first waits for the night's files (--min-fresh).
    One daemon per database: a second one exits at once, naming the holder
    (with --shard: one daemon per shard). With --model champion and
    --retrain-cron it also retrains (as `forecaster retrain`) on schedule,
    one job at a time; a retrain missed while it was down runs on start.
    """
    if retrain_cron and str(model) != MODEL_CHAMPION:
        raise click.UsageError("--retrain-cron needs --model champion (a retrain replaces the champion)")
    import datetime as dt

    from .lifecycle.daemon import run_daemon
    from .serving.shards import Shard

    code = run_daemon(
        DaemonConfig(
            db_url=db,
            model=model,
            data=list(data),
            cron=cron,
            timezone=timezone,
            misfire_grace=misfire_grace,
            device=device,
            calendar=calendar,
            shard=Shard.parse(shard) if shard else None,
            lookback=lookback,
            min_fresh=min_fresh,
            wait_max=dt.timedelta(minutes=wait_max),
            recheck=dt.timedelta(minutes=recheck),
            retrain_cron=retrain_cron,
            retrain=retrain_config(gate_days, min_improvement, gate, models_dir, train_device),
            settle=settle,
            lock_check=dt.timedelta(seconds=lock_check),
        )
    )
    if code:
        sys.exit(code)


# -- keeping the model fresh: the registry -----------------------------------


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@option("--reason", required=True, command="promote", help="Why: recorded in the promotions table.")
@db_option
@reports_errors
def promote(model, reason, db):
    """Make MODEL (an exported ONNX file) the champion: the first one, or a
    manual override. The previous champion is retired; the decision is
    recorded in `promotions`. Warns when MODEL was worse than naive on its
    own held-out days."""
    from .lifecycle.promotion import promote as promote_model

    for line in promote_model(open_store(db), model, reason):
        click.echo(f"warning: {line}", err=True)
    click.echo(f"{model} is the champion; `--model champion` serves it from the next run")


@main.command()
@retrain_options
@db_option
@quiet_option
@reports_errors
def retrain(gate_days, min_improvement, gate, models_dir, train_device, db, quiet):
    """Train a challenger with the champion's settings and tickers (from its
    metadata), export and verify it, and judge it: promoted only when its
    RMSE on the gate days is no worse than naive's and than the champion's
    x (1 - --min-improvement); else recorded as rejected, with the numbers.
    SIGTERM or Ctrl-C stop it with nothing recorded."""
    from .db.schema import Decision
    from .lifecycle.retrain import retrain as run_retrain

    with stop_on_signals() as should_stop:
        outcomes = run_retrain(
            open_store(db),
            retrain_config(gate_days, min_improvement, gate, models_dir, train_device),
            progress=not quiet,
            should_stop=should_stop,
            say=lambda line: click.echo(line, err=True),
        )
    for o in outcomes:
        click.echo(f"{o.decision}: {o.path} ({(o.model_id or '')[:12]})")
    if any(o.decision == Decision.PROMOTED for o in outcomes):
        click.echo("the new champion serves from the next run (`forecaster predict --model champion` runs one now)")


@main.command()
@option("--json", "as_json", is_flag=True, command="models", help="Print JSON instead of a table.")
@db_option
@reports_errors
def models(as_json, db):
    """Every model that served, is scored in the shadows or was judged: its
    status, the day its training data ended, its last gate decision and
    ratio to naive there, and its realised ratio to naive since promotion."""
    import json

    from .lifecycle.promotion import models_table
    from .tables import format_table

    rows = models_table(open_store(db, read_only=True))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    columns = [
        "model_id",
        "status",
        "trained_through",
        "promoted_at",
        "decision",
        "gate_ratio",
        "realised_n",
        "realised_ratio",
        "path",
    ]
    click.echo(format_table(columns, [tuple(r[c][:12] if c == "model_id" else r[c] for c in columns) for r in rows]))


# -- questions asked of the predictions --------------------------------------


@main.command()
@option("--since", metavar="DATE", help="Only predictions made as of this date or later.")
@option("--ticker", help="Only this ticker.")
@option(
    "--model-id", help="Only this model: its sha256, or the first characters of it (as `forecaster models` prints)."
)
@option("--by-model", is_flag=True, help="Also one row per model, each on its own outcomes (challengers' included).")
@option(
    "--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write predicted vs actual closes as a PNG here."
)
@db_option
@reports_errors
def report(since, ticker, model_id, by_model, plot, db):
    """Realized accuracy of the served predictions (or of --model-id's) against
    the naive forecast: N, RMSE, MAE, naive RMSE, their ratio and direction
    accuracy, per ticker and overall; and of their 80% and 95% intervals
    against RiskMetrics': coverage, mean width and mean interval score (Winkler)."""
    from .evidence import DIRECTION_NOISE
    from .serving.report import build_report, plot_report
    from .tables import format_table

    rep = build_report(open_store(db, read_only=True), since=since, ticker=ticker, model_id=model_id, by_model=by_model)
    columns = ["n", "rmse", "mae", "naive_rmse", "ratio", "direction_accuracy"]
    if rep.per_model:
        rows = [(r["model_id"][:12], r["status"], *(r[c] for c in columns)) for r in rep.per_model]
        click.echo(format_table(["model_id", "status", *columns], rows))
        click.echo()
    if rep.overall["n"] == 0:
        what = f"of model {rep.model_id[:12]} " if rep.model_id else "served "
        click.echo(f"no {what}prediction has an outcome yet ({rep.pending} waiting for their next close)")
        return
    rows = [tuple(r[c] for c in ["ticker", *columns]) for r in rep.per_ticker]
    rows.append(tuple(["ALL"] + [rep.overall[c] for c in columns]))
    click.echo(format_table(["ticker", *columns], rows))
    click.echo(
        f"direction_accuracy: how often the stated move (up, down, none) was the actual one; a forecast within "
        f"{DIRECTION_NOISE:g} of the last close states none, so a naive model scores the share of unchanged days"
    )
    if rep.intervals:
        click.echo()
        click.echo(interval_table(rep.intervals))
    click.echo(f"{rep.pending} predictions still wait for their next close")
    if plot:
        click.echo(f"wrote {plot_report(rep, plot)}")


def interval_table(figures: dict) -> str:
    """Coverage, width and interval score of the intervals, beside RiskMetrics' (rm_), per ticker and overall."""
    from .tables import format_table

    def row(name, f):
        rm = f["riskmetrics"]
        return (
            name,
            f["n"],
            pct(f["coverage80"]),
            pct(rm["coverage80"]),
            pct(f["coverage95"]),
            pct(rm["coverage95"]),
            f["width80"],
            f["score80"],
            rm["score80"],
            f["score95"],
            rm["score95"],
            round(f["score_vs_riskmetrics"], 3),
        )

    def pct(x):
        return f"{100 * x:.1f}%"

    rows = [row(t, f) for t, f in figures["tickers"].items()] + [row("ALL", figures["overall"])]
    table = format_table(
        [
            "ticker",
            "n",
            "in80",
            "rm_in80",
            "in95",
            "rm_in95",
            "width80",
            "score80",
            "rm_score80",
            "score95",
            "rm_score95",
            "score_vs_rm",
        ],
        rows,
    )
    calm, wild = figures["thirds"]["calm"], figures["thirds"]["wild"]
    return (
        f"{table}\ncoverage in the calmest third of days {pct(calm['coverage80'])} / {pct(calm['coverage95'])}, "
        f"in the wildest third {pct(wild['coverage80'])} / {pct(wild['coverage95'])} (80% / 95%); "
        "score_vs_rm: interval score relative to the close, ours over RiskMetrics' (below 1 is better)"
    )


@main.command()
@click.argument("query")
@db_option
@option("--limit", default=50, show_default=True, type=click.IntRange(1), help="Rows to print at most.")
@reports_errors
def sql(query, db, limit):
    """Run a read-only SQL QUERY against the database and print the rows.

    Example: forecaster sql "select * from latest_predictions"
    """
    from .db.query import run_query
    from .tables import format_table

    columns, rows, more = run_query(open_store(db, read_only=True), query, limit=limit)
    click.echo(format_table(columns, rows))
    if more:
        click.echo(f"... (first {limit} rows shown)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
