"""Commands on files -> prices: sample-data, ingest."""

from __future__ import annotations

from pathlib import Path

import click

from ..data.config import SAMPLE_DAYS, SAMPLE_TICKERS
from ..errors import DataError
from .base import (
    calendar_option,
    db_option,
    debugging,
    log_format_option,
    main,
    open_store,
    option,
    parse_tickers,
    quiet_option,
    reports_errors,
    settle_option,
)


@main.command("sample-data")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@option("--n-tickers", default=SAMPLE_TICKERS, show_default=True, type=click.IntRange(1), help="How many tickers.")
@option(
    "--days",
    default=SAMPLE_DAYS,
    show_default=True,
    type=click.IntRange(1),
    help="Business days of history per ticker.",
)
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
    from ..data.sample import write_sample_data

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
@log_format_option
@db_option
@quiet_option
@reports_errors
def ingest(paths, revise, settle, calendar, log_format, db, quiet):
    """Load new rows from PATHS (*.txt / *.csv files; folders searched recursively).

    Unchanged files are skipped without being read; appended files cost only
    their new rows. Bad rows are set aside in `rejected_rows` with their file,
    line and reason; the good rows and other files still go in. Stored
    history is never overwritten, except by --revise.
    """
    from ..data.ingest import ingest as run_ingest

    tickers = [t for given in revise for t in parse_tickers(given)]
    progress = not quiet and log_format == "text"
    report = run_ingest(open_store(db), paths, progress=progress, revise=tickers, settle=settle, calendar=calendar)
    if log_format == "json":
        from .. import logs

        log = logs.json_logger("ingest", debugging())
        for line in report.problems:
            log.warning("unreadable: %s", line, extra={"event": "file_unreadable"})
        log.info(report.summary(), extra={"event": "ingest_finished", "fields": logs.ingest_fields(report)})
    else:
        for line in report.problems:
            click.echo(f"unreadable: {line}", err=True)
        click.echo(report.summary())
    refused = [r for r in report.revisions if r.refused]
    if refused:  # the rest was stored; a revision asked for and not made is a failure scripts must see
        raise DataError(f"{len(refused)} revision(s) refused: {', '.join(r.ticker for r in refused)}")
