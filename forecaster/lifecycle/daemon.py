"""The nightly daemon: the wiring of the jobs (jobs.py) to their schedules
(schedule.py) under the one-daemon lock (locks.py), in APScheduler.

* Both schedules are added before anything runs, so a failure of the
  start-up work (the catch-up, a retrain owed) is logged and the schedule
  still stands; a schedule that cannot be made stops the daemon at once,
  non-zero.
* On start it catches up every as_of the model still owes (from the ledgers,
  not from APScheduler's memory, late files included), then runs a retrain
  missed while it was down, then follows the schedules. Every job first
  checks that the lock is still this daemon's (a PostgreSQL lock dies with
  its connection when the server restarts), and so does a check every
  `lock_check`: a daemon that lost it exits EXIT_LOCK_LOST, for its service
  manager to start it again.
* SIGTERM/SIGINT: the run in progress commits or rolls back, then exit 0;
  the lock is released only after the job has returned.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading

from apscheduler.schedulers.blocking import BlockingScheduler

from .. import logs
from ..db import store
from .config import DaemonConfig
from .jobs import NightlyJob, RetrainJob
from .locks import DaemonLock, daemon_lock
from .schedule import make_trigger

log = logging.getLogger("forecaster.daemon")

EXIT_LOCK_LOST = 75  # sysexits EX_TEMPFAIL: start again later (systemd's Restart=on-failure does)


def run_daemon(config: DaemonConfig) -> int:
    """Run until stopped; the exit status (0 after a signal)."""
    logs.configure(config.log_format, config.debug)  # our own lines say what ran; others' warnings only
    schedules = {"nightly": make_trigger(config.cron, config.timezone)}
    if config.retrain_cron:
        schedules["retrain"] = make_trigger(config.retrain_cron, config.timezone)
    engine = store.connect(config.db_url)
    stop = threading.Event()
    scheduler = BlockingScheduler(timezone=config.timezone)
    nightly = NightlyJob(engine, config, stop)
    retrain = RetrainJob(engine, config, stop, nightly.busy, after_promotion=nightly.catch_up)
    jobs = {"nightly": nightly, "retrain": retrain}
    lost = threading.Event()

    def shut_down() -> None:
        stop.set()
        if scheduler.running:
            scheduler.shutdown(wait=False)

    def on_signal(signum, _frame) -> None:
        log.info("%s received: stopping after the run in progress", signal.Signals(signum).name)
        shut_down()

    def still_ours(lock: DaemonLock) -> bool:
        if lock.held():
            return True
        if not lost.is_set():
            lost.set()
            log.error(
                "this daemon lost its one-per-database lock (the database server restarted?): exiting with %d "
                "so that another daemon cannot score beside it; start it again",
                EXIT_LOCK_LOST,
            )
        shut_down()
        return False

    def watch(lock: DaemonLock) -> None:
        """Between jobs too: a lost lock is noticed within lock_check, not at the next fire."""
        while not stop.wait(config.lock_check.total_seconds()):
            if not still_ours(lock):
                return

    def guarded(lock: DaemonLock, job):
        def run() -> None:
            if not stop.is_set() and still_ours(lock):
                job()

        return run

    def start_up() -> None:
        nightly(scheduled=False)  # the catch-up on start: no waiting for tonight's data
        try:
            now = dt.datetime.now(dt.UTC)
            if "retrain" in schedules and not stop.is_set() and retrain.owed(schedules["retrain"], now):
                log.info("a scheduled retrain was missed: retraining now")
                retrain()
        except Exception:  # the schedules stand whatever happens here
            log.exception("the start-up retrain check failed; the schedules stand")
        for name, trigger in schedules.items():
            log.info("next %s at %s", name, trigger.get_next_fire_time(None, dt.datetime.now(trigger.timezone)))

    try:
        with daemon_lock(engine, config.db_url, config.shard, config.lock_path) as lock:
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            log.info("daemon started: model %s, schedule %r (%s)", config.model, config.cron, config.timezone)
            for name, trigger in schedules.items():
                scheduler.add_job(
                    guarded(lock, jobs[name]),
                    trigger,
                    id=name,
                    coalesce=True,
                    max_instances=1,
                    misfire_grace_time=config.misfire_grace,
                )
            threading.Thread(target=watch, args=(lock,), name="lock-check", daemon=True).start()
            scheduler.add_job(guarded(lock, start_up), id="start-up")  # at once, in the job thread
            scheduler.start()  # blocks until shut_down()
            # shutdown(wait=False) returns while a job may still be writing: wait
            # for it (it stops after its current run) before giving up the lock.
            with nightly.busy:
                pass
    finally:
        engine.dispose()  # SQLite checkpoints its WAL and removes it: no -wal file left beside the database
    log.info("daemon stopped")
    return EXIT_LOCK_LOST if lost.is_set() else 0


def run_once(config: DaemonConfig) -> int:
    """What the daemon does at start and at its next fire, once, under the
    same lock: wait for tonight's data (the freshness rules), catch up and
    score, retrain if a retrain is owed; then the exit status of
    `forecaster status` (0 healthy, 3 degraded, 4 failed, 75 waiting).
    For cron lines, systemd timers, tests and first tries."""
    from ..serving.status import health

    logs.configure(config.log_format, config.debug)
    engine = store.connect(config.db_url)
    stop = threading.Event()
    nightly = NightlyJob(engine, config, stop)
    retrain = RetrainJob(engine, config, stop, nightly.busy, after_promotion=nightly.catch_up)

    def on_signal(signum, _frame) -> None:
        log.info("%s received: stopping after the run in progress", signal.Signals(signum).name)
        stop.set()

    try:
        with daemon_lock(engine, config.db_url, config.shard, config.lock_path):
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            nightly(scheduled=True)
            if config.retrain_cron and not stop.is_set():
                trigger = make_trigger(config.retrain_cron, config.timezone)
                if retrain.owed(trigger, dt.datetime.now(dt.UTC)):
                    log.info("a scheduled retrain is owed: retraining now")
                    retrain()
        h = health(engine, calendar=config.calendar, stale_share=config.stale_share)
    finally:
        engine.dispose()  # as in run_daemon: no -wal file left beside the database
    logs.log_health(log, h)
    return h.exit_code
