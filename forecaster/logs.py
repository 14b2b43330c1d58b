"""The log: text for people, or one JSON object per line for machines.

`configure` sets the root handler once per process (the daemon, a batch
command). Our own records may carry `event` (a name such as run_finished)
and `fields` (plain numbers and strings) in `extra`; the JSON form writes
them as keys beside time, level and logger. Other libraries' INFO chatter
(the ONNX exporter, torch, APScheduler) stays out unless debug is asked.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

FORMATS = ("text", "json")
CHATTY = ("torch", "onnx", "onnxscript", "onnx_ir", "apscheduler")  # their warnings still show


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", "message"),
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(log_format: str = "text", debug: bool = False) -> None:
    """The root handler on stderr in `log_format`; INFO and up (DEBUG with debug)."""
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r}: choose {' or '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    handler.forecaster = True  # ours, replaced by the next configure; other handlers (a test's) stay
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "forecaster", False)] + [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


def json_logger(command: str, debug: bool = False) -> logging.Logger:
    """A batch command's logger once `--log-format json` is asked: every line
    on stderr an object, as the daemon logs them."""
    configure("json", debug)
    return logging.getLogger(f"forecaster.{command}")


def ingest_fields(report) -> dict:
    """An ingest's counts as log fields (data.ingest.IngestReport)."""
    names = ("files_read", "files_skipped", "files_unreadable", "rows_added", "rows_unchanged", "rows_rejected")
    return {name: getattr(report, name) for name in (*names, "rows_waiting")}


def run_fields(run) -> dict:
    """A nightly run's figures as log fields (serving.nightly.RunResult)."""
    return {
        "run_id": run.run_id,
        "model": run.model_id[:12],
        "as_of": run.as_of,
        "target_date": run.target_date,
        "device": run.device,
        "predictions": run.n_predictions,
        "already": run.n_already,
        "stale": len(run.stale),
        "late": len(run.late),
        "skipped": len(run.skipped),
        "flagged": len(run.flagged),
        "flagged_prices": len(run.flagged_prices),
        "seconds": round(run.seconds, 3),
    }


def log_health(log: logging.Logger, h) -> None:
    """The health a run ends with (serving.status.Health): its state and exit
    status as one `status` event, then each check that is not ok."""
    log.info(
        "status: %s (exit %d)",
        h.state,
        h.exit_code,
        extra={"event": "status", "fields": {"state": h.state, "exit_code": h.exit_code}},
    )
    for check in h.checks:
        if check.state != "ok":
            log.info("  %s %s: %s", check.state, check.name, check.said)
