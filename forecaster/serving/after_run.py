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

from ..errors import ForecasterError, first_line


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
    """Write whichever of the two is asked for, the metrics file first (what
    alerts); what went wrong, one line per file. Whatever goes wrong, a bug
    included, is said and leaves the other file and the run's outcome alone."""
    from . import page, prometheus
    from .status import health

    def metrics(judged) -> None:
        prometheus.write(metrics_file, judged, phases)

    def report(judged) -> None:
        page.write(html_file, page.gather(engine, failure=failure, after_run=True, judged=judged))

    files = (("metrics file", metrics_file, metrics), ("HTML report", html_file, report))
    asked = [(what, path, write) for what, path, write in files if path]
    if not asked:
        return []
    try:
        judged = health(engine, calendar=calendar, stale_share=stale_share)
    except Exception as exc:  # a lost or locked database (or a bug): neither can be written
        return [f"could not write the {what} {path}: {_said(exc)}" for what, path, _ in asked]
    problems = []
    for what, path, write in asked:
        try:
            write(judged)
        except Exception as exc:
            problems.append(f"could not write the {what} {path}: {_said(exc)}")
    return problems


def _said(exc: Exception) -> str:
    """A library error as it reads; anything else (a bug) with its type, to search for."""
    known = isinstance(exc, ForecasterError | sa.exc.SQLAlchemyError | OSError)
    return first_line(exc) if known else f"unexpected {type(exc).__name__}: {first_line(exc)}"
