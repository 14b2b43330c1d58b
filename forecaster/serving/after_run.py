"""What a run leaves for those who watch it: the metrics file and the HTML
page, written after `predict` or a daemon's night from one health verdict.

One verdict, so the two never disagree (each judged on its own before, and the
page with the default stale share whatever the operator set), and a large
database reads its outcomes for the coverage once a night, not twice. A run's
own outcome never depends on them: what could not be written comes back as
a line to warn with."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from ..errors import ForecasterError


def write_after_run(
    engine: sa.Engine,
    *,
    calendar: str,
    stale_share: float,
    metrics_file: Path | None = None,
    html_file: Path | None = None,
    phases: dict[str, float] | None = None,
    failure: str | None = None,
) -> list[str]:
    """Write whichever of the two is asked for; what went wrong, one line per file."""
    from .page import write_report
    from .prometheus import write_health
    from .status import health

    asked = [(what, path) for what, path in (("HTML report", html_file), ("metrics file", metrics_file)) if path]
    if not asked:
        return []
    try:
        judged = health(engine, calendar=calendar, stale_share=stale_share)
    except (ForecasterError, sa.exc.SQLAlchemyError) as exc:  # a lost or locked database: neither can be written
        return [f"could not write the {what} {path}: {exc}" for what, path in asked]
    problems = [
        write_report(engine, html_file, judged, failure) if html_file else None,
        write_health(metrics_file, judged, phases) if metrics_file else None,
    ]
    return [p for p in problems if p]
