"""The nightly daemon: a thin APScheduler shell around nightly.catch_up().

* One daemon per database (and --shard), by an exclusive flock on a lock file
  beside the SQLite file, or a PostgreSQL advisory lock: either dies with the
  process, so a killed daemon never blocks the next one.
* On start it catches up every as_of the model still owes (from the ledgers,
  not from APScheduler's memory, late files included), then follows the
  cron schedule. Both go through the same job, one at a time.
* A scheduled run first waits for the night's data (freshness.py).
* SIGTERM/SIGINT: the run in progress commits or rolls back, then exit 0;
  the lock is released only after the job has returned.
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
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from ..data import store
from ..data.calendar import last_session
from ..data.ingest import ingest
from ..errors import AlreadyRunningError, ForecasterError
from ..serving import registry
from ..serving.freshness import Freshness, wait_for_data
from ..serving.nightly import catch_up, names
from ..serving.shards import Shard
from .config import DaemonConfig

log = logging.getLogger("forecaster.daemon")


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
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=crontab_weekdays(weekday), timezone=timezone
        )
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
def daemon_lock(engine: sa.Engine, config: DaemonConfig) -> Iterator[None]:
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
            holder = conn.execute(
                sa.text("SELECT application_name FROM pg_stat_activity WHERE application_name LIKE :n"),
                {"n": f"{name} (%"},
            ).scalar()
            note = holder[len(name) + 2 :].rstrip(")") if holder else "an unknown session"
            raise AlreadyRunningError(f"another daemon already runs on this database ({note})")
        conn.execute(
            sa.text("SELECT set_config('application_name', :a, false)"), {"a": f"{name} ({_holder_note()})"[:63]}
        )
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})


@contextlib.contextmanager
def single_instance(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` or raise AlreadyRunningError naming the holder."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            raise AlreadyRunningError(f"another daemon already runs on this database ({holder}); lock {path}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{_holder_note()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class NightlyJob:
    """What the scheduler calls: (for a scheduled run) wait for the night's
    data, then catch up every owed as_of. Runs one at a time; `busy` is held
    while it runs, so shutdown can wait for it."""

    def __init__(
        self,
        engine: sa.Engine,
        config: DaemonConfig,
        stop: threading.Event,
        *,
        now=lambda tz: dt.datetime.now(tz),
        sleep=None,
    ):
        self.engine, self.config, self.stop = engine, config, stop
        self.now = now
        self.sleep = sleep or (lambda seconds: stop.wait(seconds))  # a signal ends the wait at once
        self.busy = threading.Lock()

    def __call__(self, scheduled: bool = True) -> None:
        with self.busy:
            try:
                if scheduled and self.config.min_fresh > 0:
                    self.wait_for_tonights_data()
                if not self.stop.is_set():
                    self.catch_up()
            except ForecasterError as exc:  # a lost database, a broken model: tomorrow is another night
                log.error("nightly run failed: %s", exc)
            except Exception:  # a bug: its traceback in the log, and the daemon keeps its schedule
                log.exception("nightly run failed with an unexpected error")

    def wait_for_tonights_data(self) -> Freshness | None:
        config, tz = self.config, ZoneInfo(self.config.timezone)
        started = self.now(tz)
        try:
            as_of = last_session(started.date(), config.calendar)
            state = wait_for_data(
                self.engine,
                as_of,
                data=config.data,
                min_share=config.min_fresh,
                deadline=started + config.wait_max,
                recheck=config.recheck,
                shard=config.shard,
                calendar=config.calendar,
                settle=config.settle,
                now=lambda: self.now(tz),
                sleep=self.sleep,
                should_stop=self.stop.is_set,
                on_check=lambda f: (
                    f.share < config.min_fresh
                    and log.info(
                        "waiting for %s's data: %d of %d tickers have a close (%.0f%%, want %.0f%%)",
                        f.as_of,
                        f.present,
                        f.expected,
                        100 * f.share,
                        100 * config.min_fresh,
                    )
                ),
            )
        except ForecasterError as exc:
            log.error("could not check tonight's data: %s", exc)
            return None
        if state.share < config.min_fresh and not self.stop.is_set():
            log.warning(
                "deadline reached: scoring %s with %d of %d tickers; missing %s",
                as_of,
                state.present,
                state.expected,
                names(state.missing),
            )
        return state

    def catch_up(self) -> None:
        config = self.config
        if config.data:  # first, so the log reads in the order things happen
            report = ingest(self.engine, config.data, calendar=config.calendar, settle=config.settle)
            log.info("ingest: %s", report.summary())
        outcome = catch_up(
            self.engine,
            config.model,
            device=config.device,
            calendar=config.calendar,
            should_stop=self.stop.is_set,
            shard=config.shard,
            lookback=config.lookback,
            on_run=lambda run: log.info("run %s on %s in %.2fs: %s", run.run_id, run.device, run.seconds, run.message),
        )
        for run_id in outcome.recovered:
            log.warning("marked abandoned run %s as failed", run_id)
        if not outcome.runs:
            log.info("nothing owed: model %s is up to date", outcome.model_id[:12])


class RetrainJob:
    """What the scheduler calls for --retrain-cron: one retrain (retrain.py),
    holding the nightly job's `busy` lock so the two never overlap. A failure
    or a stop leaves the champion serving."""

    def __init__(
        self,
        engine: sa.Engine,
        config: DaemonConfig,
        stop: threading.Event,
        busy: threading.Lock,
        after_promotion=lambda: None,
    ):
        self.engine, self.config, self.stop, self.busy = engine, config, stop, busy
        self.after_promotion = after_promotion

    def __call__(self) -> None:
        with self.busy:
            if self.stop.is_set():
                return
            try:
                from .retrain import retrain  # torch: only in a daemon that retrains

                outcomes = retrain(self.engine, self.config.retrain, should_stop=self.stop.is_set, say=log.info)
                for outcome in outcomes:
                    log.info("retrain: %s %s", outcome.decision, outcome.path)
                if any(o.decision == "promoted" for o in outcomes) and not self.stop.is_set():
                    # The new champion scores the newest day now, so latest_predictions has its figures.
                    self.after_promotion()
            except ForecasterError as exc:
                log.error("retrain failed, the champion keeps serving: %s", exc)
            except Exception:
                log.exception("retrain failed with an unexpected error; the champion keeps serving")

    def owed(self, trigger: CronTrigger, now: dt.datetime) -> bool:
        """Was a scheduled retrain missed (the daemon down at its time)? True
        when the last scheduled time in the past year is after the newest
        registered model was made."""
        last, at = None, trigger.get_next_fire_time(None, now - dt.timedelta(days=366))
        while at is not None and at <= now:
            last, at = at, trigger.get_next_fire_time(at, at + dt.timedelta(seconds=1))
        if last is None:
            return False
        newest = registry.newest_registered_at(self.engine)
        return newest is None or newest < last


def run_daemon(config: DaemonConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # our own lines say what ran; keep its warnings
    engine = store.connect(config.db_url)
    trigger = make_trigger(config.cron, config.timezone)
    stop = threading.Event()
    scheduler = BlockingScheduler(timezone=config.timezone)
    job = NightlyJob(engine, config, stop)
    retrain_trigger = make_trigger(config.retrain_cron, config.timezone) if config.retrain_cron else None
    retrain_job = RetrainJob(engine, config, stop, job.busy, after_promotion=job.catch_up)

    def on_signal(signum, _frame) -> None:
        log.info("%s received: stopping after the run in progress", signal.Signals(signum).name)
        stop.set()
        if scheduler.running:
            scheduler.shutdown(wait=False)

    def first_then_scheduled() -> None:
        job(scheduled=False)  # the catch-up on start: no waiting for tonight's data
        if retrain_trigger and not stop.is_set() and retrain_job.owed(retrain_trigger, dt.datetime.now(dt.UTC)):
            log.info("a scheduled retrain was missed: retraining now")
            retrain_job()
        for name, function, when in (("nightly", job, trigger), ("retrain", retrain_job, retrain_trigger)):
            if when is None or stop.is_set():
                continue
            scheduler.add_job(
                function, when, id=name, coalesce=True, max_instances=1, misfire_grace_time=config.misfire_grace
            )
            log.info("next %s at %s", name, when.get_next_fire_time(None, dt.datetime.now(when.timezone)))

    with daemon_lock(engine, config):
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log.info("daemon started: model %s, schedule %r (%s)", config.model, config.cron, config.timezone)
        scheduler.add_job(first_then_scheduled, id="catch-up")  # runs at once, in the job thread
        scheduler.start()  # blocks until on_signal shuts it down
        # shutdown(wait=False) returns while a job may still be writing: wait
        # for it (it stops after its current run) before giving up the lock.
        with job.busy:
            pass
    log.info("daemon stopped")
    return 0
