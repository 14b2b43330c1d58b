"""The health as Prometheus metrics: node_exporter's textfile-collector format.

Written atomically (a temporary file in the same folder, then a rename), so
the collector never reads half a file; no timestamps in the samples (the
collector stamps them). Names carry the `forecaster_` prefix and base units.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ..files import write_atomically
from .status import EXIT_CODES, Health

# name -> (type, help)
METRICS = {
    "forecaster_health_status": (
        "gauge",
        "The exit status of forecaster status: 0 ok, 3 degraded, 4 failed, 75 waiting",
    ),
    "forecaster_last_success_timestamp_seconds": ("gauge", "When the served model's last successful run finished"),
    "forecaster_last_success_as_of_timestamp_seconds": ("gauge", "The session the last successful run scored"),
    "forecaster_run_duration_seconds": (
        "gauge",
        "The served model's last run: total from the runs ledger; ingest, score and write as measured by "
        "the process that ran it",
    ),
    "forecaster_predictions": ("gauge", "Predictions written by the served model's last successful run"),
    "forecaster_stale_tickers": ("gauge", "Tickers of the previous session without a close on the owed one"),
    "forecaster_retired_tickers": ("gauge", "Tickers without a close for more than 5 sessions"),
    "forecaster_rows_set_aside_total": ("counter", "Rows ever set aside by ingest (rejected_rows)"),
    "forecaster_data_lag_sessions": ("gauge", "Sessions between the newest stored close and the newest closed session"),
    "forecaster_interval_coverage_ratio": ("gauge", "Realised interval coverage of the served model's outcomes"),
    "forecaster_realised_ratio_to_naive": (
        "gauge",
        "Served RMSE over naive's, relative to the last close, since promotion",
    ),
}


def render(h: Health, phases: dict[str, float] | None = None) -> str:
    """The text of the metrics file; `phases`: seconds of the run just made
    (ingest, score, write), when the process writing the file made it."""
    samples: dict[str, list[tuple[dict, float]]] = {name: [] for name in METRICS}
    model = {"model": (h.model_id or "")[:12]}
    samples["forecaster_health_status"].append(({}, EXIT_CODES[h.state]))
    if h.last_success:
        finished = h.last_success["finished_at"] or h.last_success["started_at"]
        samples["forecaster_last_success_timestamp_seconds"].append((model, _epoch(finished)))
        samples["forecaster_last_success_as_of_timestamp_seconds"].append((model, _epoch(h.last_success["as_of"])))
        samples["forecaster_predictions"].append((model, h.last_success["n_predictions"] or 0))
    if h.last_run and h.last_run["finished_at"]:
        seconds = _epoch(h.last_run["finished_at"]) - _epoch(h.last_run["started_at"])
        samples["forecaster_run_duration_seconds"].append(({**model, "phase": "total"}, seconds))
    for phase, seconds in (phases or {}).items():
        if seconds is not None:
            samples["forecaster_run_duration_seconds"].append(({**model, "phase": phase}, seconds))
    samples["forecaster_stale_tickers"].append(({}, len(h.stale)))
    samples["forecaster_retired_tickers"].append(({}, h.retired))
    samples["forecaster_rows_set_aside_total"].append(({}, h.rows_set_aside_total))
    if h.data_lag_sessions is not None:
        samples["forecaster_data_lag_sessions"].append(({}, h.data_lag_sessions))
    for level, windows in h.coverage.items():
        for window, c in windows.items():
            if not c["complete"]:  # 5 of 8 held on a first night is no alarm: as status judges it
                continue
            samples["forecaster_interval_coverage_ratio"].append(
                ({**model, "level": level, "window": window}, c["coverage"])
            )
    if h.realised_ratio is not None:
        samples["forecaster_realised_ratio_to_naive"].append((model, h.realised_ratio))
    lines = []
    for name, (kind, text) in METRICS.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for labels, value in samples[name]:
            label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            lines.append(f"{name}{{{label_text}}} {float(value)!r}" if label_text else f"{name} {float(value)!r}")
    return "\n".join(lines) + "\n"


def write(path: Path, h: Health, phases: dict[str, float] | None = None) -> None:
    text = render(h, phases)
    write_atomically(Path(path), lambda fh: fh.write(text.encode()))


def _epoch(iso: str) -> float:
    moment = dt.datetime.fromisoformat(iso)
    if moment.tzinfo is None:  # a date (as_of): its midnight, UTC
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def run_phases(outcome) -> dict[str, float] | None:
    """The phases of a predict outcome's last run (serving.nightly.PredictOutcome), for `write`."""
    if outcome is None or not outcome.runs:
        return {"ingest": outcome.ingest_seconds} if outcome is not None and outcome.ingest_seconds else None
    return {"ingest": outcome.ingest_seconds, **outcome.runs[-1].phases}
