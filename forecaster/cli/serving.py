"""Commands on model + new prices -> predictions, and the questions asked of them: predict, daemon, report, sql."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from ..db.config import SQL_ROW_LIMIT
from ..errors import first_line
from ..lifecycle.config import DaemonConfig
from ..serving.config import MODEL_CHAMPION
from .base import (
    at_option,
    calendar_option,
    daemon_default,
    data_option,
    db_option,
    debugging,
    device_option,
    html_option,
    job_option,
    log_format_option,
    main,
    metrics_file_option,
    model_option,
    open_store,
    option,
    quiet_option,
    reports_errors,
    retrain_config,
    retrain_options,
    settle_option,
    shard_option,
    stale_share_option,
)


def warn(problem: str | None, log_format: str) -> None:
    """A side file that could not be written: a warning line, or a JSON event."""
    if not problem:
        return
    if log_format == "json":
        from .. import logs

        logs.json_logger("predict", debugging()).warning(problem, extra={"event": "warning"})
    else:
        click.echo(f"warning: {problem}", err=True)


@main.command()
@job_option
@model_option
@data_option
@option("--as-of", help="Score this date (YYYY-MM-DD) [default: the newest date in prices].")
@option("--from", "start", metavar="D1", help="Backfill: score every date with prices from D1...")
@option("--to", "end", metavar="D2", help="...to D2 (inclusive), each as of its own date.")
@settle_option
@device_option
@calendar_option
@shard_option
@stale_share_option
@metrics_file_option
@html_option
@log_format_option
@db_option
@quiet_option
@reports_errors
def predict(
    model,
    data,
    as_of,
    start,
    end,
    settle,
    device,
    calendar,
    shard,
    stale_share,
    metrics_file,
    html,
    log_format,
    db,
    quiet,
):
    """One nightly run: ingest new rows, score every ticker with a close on
    as_of and enough history, and write next-day predictions.

    Each as_of commits whole or not at all; a rerun adds nothing. Tickers
    without a close on as_of are reported as stale, not scored.

    Exit status: the data, run and stale checks of `forecaster status`
    (coverage is left to status and --metrics-file), judged for the session
    scored (--as-of's, the newest of a backfill), not for today: a replay of
    history passes. 0 healthy; 3 degraded (stale share above --stale-share);
    75 an --as-of whose files are not in yet (retry later); 1 an error (a
    failed run is recorded in `runs`). For 75 when tonight's files are late,
    run `daemon --once` (it waits for them) or `status` after the run.
    """
    from ..serving.nightly import predict as run_predict
    from ..serving.status import health

    if as_of and (start or end):
        raise click.UsageError("give --as-of or --from/--to, not both")

    engine = open_store(db)
    outcome, failure = None, None
    try:
        outcome = run_predict(
            engine,
            model,
            as_of=as_of,
            start=start,
            end=end,
            data=data,
            device=device,
            calendar=calendar,
            progress=not quiet and log_format == "text",
            shard=shard,
            settle=settle,
        )
    except Exception as exc:
        failure = first_line(exc)
        raise
    finally:  # a failed run is news for the metrics and the report too
        if metrics_file or html:
            from ..serving.after_run import write_after_run
            from ..serving.prometheus import run_phases

            for problem in write_after_run(
                engine,
                calendar=calendar,
                stale_share=stale_share,
                metrics_file=metrics_file,
                html_file=html,
                phases=run_phases(outcome),
                failure=failure,
                debug=debugging(),
            ):
                warn(problem, log_format)
    # Judged for the session asked for (the newest a backfill or a plain run
    # scored), not from the exchange calendar's clock: that would import the
    # calendar library into every night (0.4 s), and a late vendor is the
    # freshness wait's to catch (`daemon --once` exits 75).
    asked = as_of or max((run.as_of for run in outcome.runs), default=None)
    h = health(
        engine,
        calendar=calendar,
        stale_share=stale_share,
        owed=asked,
        model_id=outcome.model_id,
        shard=shard,
        outcomes=False,  # the nightly path stays cheap: coverage is status's (and the metrics file's)
    )
    if log_format == "json":  # the same lines, as the daemon logs them
        from .. import logs

        log = logs.json_logger("predict", debugging())
        if outcome.ingest:
            fields = logs.ingest_fields(outcome.ingest)
            log.info("ingest: %s", outcome.ingest.summary(), extra={"event": "ingest_finished", "fields": fields})
        for run_id in outcome.recovered:
            log.warning("marked abandoned run %s as failed", run_id, extra={"event": "run_recovered"})
        for run in outcome.runs:
            log.info(run.message, extra={"event": "run_finished", "fields": logs.run_fields(run)})
        logs.log_health(log, h)
    else:
        if outcome.ingest and not quiet:
            click.echo(outcome.ingest.summary())
        for run_id in outcome.recovered:
            click.echo(f"marked abandoned run {run_id} as failed", err=True)
        for run in outcome.runs:
            click.echo(f"run {run.run_id} on {run.device} in {run.seconds:.2f}s: {run.message}")
        for check in h.checks:
            if check.state != "ok":
                click.echo(f"{check.state} {check.name}: {check.said}", err=True)
    if h.exit_code:
        sys.exit(h.exit_code)


@main.command()
@job_option
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
@option(
    "--once",
    is_flag=True,
    help="Do what the daemon does at start and at its next fire (wait for tonight's data, catch up, score, "
    "retrain if owed), once, then exit with the status of `forecaster status` (0, 3, 4 or 75).",
)
@stale_share_option
@metrics_file_option
@html_option
@log_format_option
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
    once,
    stale_share,
    metrics_file,
    html,
    log_format,
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

    from ..lifecycle.daemon import run_daemon, run_once

    code = (run_once if once else run_daemon)(
        DaemonConfig(
            db_url=db,
            model=model,
            data=list(data),
            cron=cron,
            timezone=timezone,
            misfire_grace=misfire_grace,
            device=device,
            calendar=calendar,
            shard=shard,
            lookback=lookback,
            min_fresh=min_fresh,
            wait_max=dt.timedelta(minutes=wait_max),
            recheck=dt.timedelta(minutes=recheck),
            retrain_cron=retrain_cron,
            retrain=retrain_config(gate_days, min_improvement, gate, models_dir, train_device),
            settle=settle,
            lock_check=dt.timedelta(seconds=lock_check),
            metrics_file=metrics_file,
            html_file=html,
            log_format=log_format,
            stale_share=stale_share,
            debug=debugging(),
        )
    )
    if code:
        sys.exit(code)


@main.command()
@option("--since", metavar="DATE", help="Only predictions made as of this date or later.")
@option("--ticker", multiple=True, help="Only this ticker (repeatable); --plot draws each one asked.")
@option(
    "--model-id", help="Only this model: its sha256, or the first characters of it (as `forecaster models` prints)."
)
@option("--by-model", is_flag=True, help="Also one row per model, each on its own outcomes (challengers' included).")
@option(
    "--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write predicted vs actual closes as a PNG here."
)
@html_option
@stale_share_option
@at_option
@calendar_option
@db_option
@reports_errors
def report(since, ticker, model_id, by_model, plot, html, stale_share, at, calendar, db):
    """Realized accuracy of the served predictions (or of --model-id's) against
    the naive forecast: N, RMSE, MAE, naive RMSE, their ratio and direction
    accuracy, per ticker and overall; and of their 80% and 95% intervals
    against RiskMetrics': coverage, mean width and mean interval score (Winkler).

    With --html, the night as a page for a browser instead: the health (as
    `status` judges it, --stale-share too), the forecasts for the next session
    (sortable, filterable), a chart per --ticker (default: the widest and
    narrowest bands tonight and the last night's largest misses), coverage
    over time beside RiskMetrics', and the models and gate decisions; over the
    last 120 sessions unless --since.
    """
    from ..evidence import DIRECTION_NOISE
    from ..serving.report import build_report, interval_table, plot_report
    from ..tables import format_table

    engine = open_store(db, read_only=True)
    if html:
        from ..serving import page

        if model_id or by_model or plot:
            raise click.UsageError(
                "--html draws the served predictions: give it without --model-id, --by-model, --plot"
            )
        night = page.gather(
            engine, tickers=list(ticker), since=since, calendar=calendar, at=at, stale_share=stale_share
        )
        click.echo(f"wrote {page.write(html, night)}: {len(night.forecasts)} forecasts, {len(night.charts)} charts")
        return
    rep = build_report(engine, since=since, ticker=ticker, model_id=model_id, by_model=by_model)
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
    flat = [r["ticker"] for r in rep.per_ticker if r["n"] and not r["naive_rmse"]]
    pooled = rep.overall["pooled_ratio"]
    click.echo(
        "pooled ratio to naive, relative to the last close: "
        + (f"{pooled:.4f}" if pooled is not None else "undefined (no close moved)")
        + (f"; no ratio (closes never moved, naive made no error): {', '.join(flat)}" if flat else "")
    )
    click.echo(
        f"direction_accuracy: how often the stated move (up, down, none) was the actual one; a forecast within "
        f"{DIRECTION_NOISE:g} of the last close states none, so a naive model scores the share of unchanged days"
    )
    if rep.intervals:
        click.echo()
        click.echo(interval_table(rep.intervals))
    if rep.flagged_prices:
        click.echo(
            f"{sum(rep.flagged_prices.values())} outcomes had a flagged price in their window (price_flags: a split, "
            "bad print or jump): " + ", ".join(f"{t} {n}" for t, n in rep.flagged_prices.items())
        )
    click.echo(f"{rep.pending} predictions still wait for their next close")
    if plot:
        drawn = plot_report(rep, plot, list(ticker))
        which = "" if ticker else f" ({', '.join(drawn)}: the ticker with most outcomes; --ticker chooses)"
        click.echo(f"wrote {', '.join(map(str, drawn.values()))}{which}")


@main.command()
@click.argument("query")
@db_option
@option("--limit", default=SQL_ROW_LIMIT, show_default=True, type=click.IntRange(1), help="Rows to print at most.")
@option(
    "--format",
    "output",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="table for people; csv (a header line, then the rows) or json (one array of objects) for programs. "
    "Rows beyond --limit are said on stderr.",
)
@reports_errors
def sql(query, db, limit, output):
    """Run a read-only SQL QUERY against the database and print the rows.

    Example: forecaster sql "select * from latest_predictions"
    """
    from ..db.query import run_query
    from ..tables import format_rows

    columns, rows, more = run_query(open_store(db, read_only=True), query, limit=limit)
    click.echo(format_rows(columns, rows, output), nl=output == "table")
    if more:
        click.echo(f"... (first {limit} rows shown)", err=output != "table")


@main.command("datasette-metadata")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@db_option
@reports_errors
def datasette_metadata(out, db):
    """Write Datasette's metadata for an SQLite database to OUT: what each
    table, view and column holds, and the README's questions as canned
    queries. Then browse it read-only (pip install 'forecaster[browse]'):

        datasette -i forecaster.db --metadata OUT
    """
    from sqlalchemy.engine import make_url

    from ..db.catalog import datasette_metadata as metadata
    from ..files import strict_json, write_atomically

    url = make_url(db)
    if url.get_backend_name() != "sqlite" or not url.database:
        raise click.BadParameter("Datasette opens SQLite files: give an sqlite:///PATH URL", param_hint="--db")
    if not Path(url.database).is_file():
        raise click.BadParameter(f"{url.database}: no such database file", param_hint="--db")
    text = strict_json(metadata(Path(url.database).stem), indent=2).encode() + b"\n"
    write_atomically(out, lambda fh: fh.write(text))
    click.echo(f"wrote {out}: datasette -i {url.database} --metadata {out}")
