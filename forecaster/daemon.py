"""The nightly daemon: a thin APScheduler shell around nightly.catch_up().

* One daemon per database (and --shard), by an exclusive flock on a lock file
  beside the SQLite file, or a PostgreSQL advisory lock: either dies with the
  process, so a killed daemon never blocks the next one.
* On start it catches up every as_of the model still owes (from the `runs`
  ledger, not from APScheduler's memory), then waits for the cron schedule.
* SIGTERM/SIGINT: finish (or roll back) the run in progress, exit 0.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import os
import signal
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from . import store
from .calendar import DEFAULT_CALENDAR
from .errors import AlreadyRunning, ForecasterError
from .nightly import catch_up
from .shards import Shard

log = logging.getLogger("forecaster.daemon")


@dataclass
class DaemonConfig:
    db_url: str
    model: Path
    data: list[Path] = field(default_factory=list)
    cron: str = "0 22 * * 1-5"
    timezone: str = "America/New_York"
    misfire_grace: int = 3600  # APScheduler's default of 1 s silently drops a late run
    device: str = "auto"
    calendar: str = DEFAULT_CALENDAR
    shard: Shard | None = None
    lock_path: Path | None = None


CRONTAB_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab: 0 (and 7) is Sunday


def make_trigger(cron: str, timezone: str) -> CronTrigger:
    """A trigger for a crontab line. APScheduler 3's own from_crontab() reads
    weekday numbers with 0 = Monday, so "1-5" would mean Tuesday-Saturday;
    we turn crontab's weekday field into day names, which both agree on."""
    fields = cron.split()
    try:
        if len(fields) != 5:
            raise ValueError("expected 5 fields: minute hour day month weekday")
        minute, hour, day, month, weekday = fields
        return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                           day_of_week=crontab_weekdays(weekday), timezone=timezone)
    except (ValueError, KeyError, LookupError) as exc:
        raise ForecasterError(f"bad schedule {cron!r} / time zone {timezone!r}: {exc}") from None


def crontab_weekdays(field: str) -> str:
    """crontab's weekday field ("1-5", "0,6", "*/2", "mon-fri") as day names."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = 0, 6
        else:
            a, _, b = span.partition("-")
            first, last = _day_number(a), _day_number(b or a)
            if b and last == 0:
                last = 7  # "5-7" or "fri-sun": through Sunday
        days.update(d % 7 for d in range(first, last + 1, int(step or 1)))
    if not days:
        raise ValueError(f"weekday field {field!r} selects no day")
    return ",".join(CRONTAB_DAYS[d] for d in sorted(days))


def _day_number(token: str) -> int:
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token)
    if token[:3] in CRONTAB_DAYS:
        return CRONTAB_DAYS.index(token[:3])
    raise ValueError(f"bad weekday {token!r}")


def lock_path_for(db_url: str, shard: Shard | None = None) -> Path:
    """Beside the SQLite file; for other databases, one per URL in the temp folder."""
    url = sa.engine.make_url(db_url)
    suffix = "" if shard is None else f".shard{shard.k}of{shard.n}"
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database + f"{suffix}.daemon.lock")
    digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"forecaster-{digest}{suffix}.daemon.lock"


def _holder_note() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()} since {dt.datetime.now().isoformat(timespec='seconds')}"


@contextlib.contextmanager
def daemon_lock(engine: sa.Engine, config: DaemonConfig):
    """The one-daemon-per-database (and shard) rule: a PostgreSQL session
    advisory lock on PostgreSQL, else a flock on a file. Both die with the
    process, so a killed daemon never blocks the next one."""
    if engine.dialect.name != "postgresql":
        with single_instance(config.lock_path or lock_path_for(config.db_url, config.shard)):
            yield
        return
    name = "forecaster daemon" + ("" if config.shard is None else f" shard {config.shard}")
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:7], "big")
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            holder = conn.execute(sa.text(
                "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE :n"),
                {"n": f"{name} (%"}).scalar()
            note = holder[len(name) + 2:].rstrip(")") if holder else "an unknown session"
            raise AlreadyRunning(f"another daemon already runs on this database ({note})")
        conn.execute(sa.text("SELECT set_config('application_name', :a, false)"),
                     {"a": f"{name} ({_holder_note()})"[:63]})
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})


@contextlib.contextmanager
def single_instance(path: Path):
    """Hold an exclusive lock on `path` or raise AlreadyRunning naming the holder."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            raise AlreadyRunning(f"another daemon already runs on this database ({holder}); lock {path}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{_holder_note()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def run_daemon(config: DaemonConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    engine = store.connect(config.db_url)
    trigger = make_trigger(config.cron, config.timezone)
    stop = threading.Event()
    scheduler = BlockingScheduler(timezone=config.timezone)

    def nightly_job() -> None:
        try:
            outcome = catch_up(engine, config.model, data=config.data, device=config.device,
                               calendar=config.calendar, should_stop=stop.is_set, shard=config.shard)
        except ForecasterError as exc:  # tomorrow is another night: log and keep running
            log.error("nightly run failed: %s", exc)
            return
        if outcome.ingest:
            log.info("ingest: %s", outcome.ingest.summary())
        for run_id in outcome.recovered:
            log.warning("marked abandoned run %s as failed", run_id)
        if not outcome.runs:
            log.info("nothing owed: model %s is up to date", outcome.model_id[:12])
        for run in outcome.runs:
            log.info("run %s on %s in %.2fs: %s", run.run_id, run.device, run.seconds, run.message)

    def on_signal(signum, _frame) -> None:
        log.info("%s received: stopping after the run in progress", signal.Signals(signum).name)
        stop.set()
        if scheduler.running:
            scheduler.shutdown(wait=False)

    with daemon_lock(engine, config):
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log.info("daemon started: model %s, schedule %r (%s)", config.model, config.cron, config.timezone)
        nightly_job()  # catch up first
        if stop.is_set():
            return 0
        scheduler.add_job(nightly_job, trigger, id="nightly", coalesce=True, max_instances=1,
                          misfire_grace_time=config.misfire_grace)
        log.info("next run at %s", trigger.get_next_fire_time(None, dt.datetime.now(trigger.timezone)))
        scheduler.start()  # blocks until on_signal shuts it down
    log.info("daemon stopped")
    return 0
