"""Commands for whoever runs it: is it healthy?"""

from __future__ import annotations

from pathlib import Path

import click

from .base import (
    at_option,
    calendar_option,
    db_option,
    job_option,
    main,
    metrics_file_option,
    open_store,
    option,
    reports_errors,
    stale_share_option,
)


@main.command()
@job_option
@option("--json", "as_json", command="status", is_flag=True, help="Print the whole health as one JSON object.")
@at_option
@stale_share_option
@metrics_file_option
@calendar_option
@db_option
@reports_errors
def status(as_json, at, stale_share, metrics_file, calendar, db):
    """Is it healthy? The served model's last run against the session the
    exchange calendar says is owed, the data's age, stale tickers, rows set
    aside and prices flagged by the last ingest, realised accuracy and
    interval coverage (20 and 60 sessions, against a binomial band), the
    challengers and the last gate decision. Read-only.

    Exit status: 0 healthy; 3 degraded (stale share above --stale-share,
    coverage out of band); 4 failed (no successful run for the owed session
    although its closes are stored); 75 waiting (the owed session's closes
    are not stored yet: retry later, sysexits.h's EX_TEMPFAIL).
    """
    from ..serving import prometheus
    from ..serving.status import describe, health

    h = health(open_store(db, read_only=True), at=at, calendar=calendar, stale_share=stale_share)
    if metrics_file:
        prometheus.write(Path(metrics_file), h)
    click.echo(h.to_json() if as_json else describe(h))
    raise SystemExit(h.exit_code)
