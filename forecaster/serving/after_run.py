"""What a run leaves for those who watch it: the metrics file and the HTML
page, written after `predict` or a daemon's night.

Both come from one health verdict, judged once under the run's stale share,
so the two never disagree and a large database reads its outcomes for the
coverage once a night. The metrics file is written first: it is what alerts.
Neither can change the run's outcome: whatever goes wrong in one (a full
disk, a lost database, a bug) comes back as one line to warn with, and the
other is still written. A file that could not be written keeps its previous
version (both are replaced atomically)."""

from __future__ import annotations

import traceback
from pathlib import Path

import sqlalchemy as sa

from ..errors import ForecasterError, first_line, os_error_line


def write_after_run(
    engine: sa.Engine,
    *,
    calendar: str,
    stale_share: float,
    metrics_file: Path | None = None,
    html_file: Path | None = None,
    phases: dict[str, float] | None = None,
    failure: str | None = None,
    debug: bool = False,
) -> list[str]:
    """Write whichever of the two is asked for; what went wrong, one line per
    file (with `debug`, a bug's traceback after its line)."""
    from . import prometheus
    from .status import health

    if not (metrics_file or html_file):
        return []
    try:
        judged = health(engine, calendar=calendar, stale_share=stale_share)
    except Exception as exc:  # the database lost or locked, or a bug: neither file can be made
        said = _said(exc, debug)
        asked = (("metrics file", metrics_file), ("HTML report", html_file))
        return [f"could not write the {what} {path}: {said}" for what, path in asked if path]
    problems = []
    if metrics_file:
        try:
            prometheus.write(metrics_file, judged, phases)
        except Exception as exc:
            problems.append(f"could not write the metrics file {metrics_file}: {_said(exc, debug)}")
    if html_file:
        from . import page  # matplotlib and pandas (0.8 s): only for a night that draws the page

        try:
            page.write(html_file, page.gather(engine, failure=failure, after_run=True, judged=judged))
        except Exception as exc:
            problems.append(f"could not write the HTML report {html_file}: {_said(exc, debug)}")
    return problems


def _said(exc: Exception, debug: bool) -> str:
    """A library or OS error as it reads; anything else is a bug: its type, to
    search for, and with `debug` its traceback."""
    if isinstance(exc, OSError):
        return os_error_line(exc)
    if isinstance(exc, ForecasterError | sa.exc.SQLAlchemyError):
        return first_line(exc)
    said = f"unexpected {type(exc).__name__}: {first_line(exc)}"
    return f"{said}\n{''.join(traceback.format_exception(exc)).rstrip()}" if debug else said
