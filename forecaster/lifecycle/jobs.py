"""The two jobs the daemon schedules, as plain callables: the nightly run
(wait for the night's files, then score every as_of owed) and the retrain.
They share one lock, `busy`, so they never overlap, and shutdown waits on it.
Every failure is logged and the daemon keeps its schedule."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger

from .. import logs
from ..artifact.model_file import file_sha256
from ..data.calendar import last_closed_session
from ..data.ingest import ingest
from ..db.schema import Decision
from ..errors import ForecasterError, first_line
from ..serving import registry
from ..serving.freshness import Freshness, session_to_await, wait_for_data
from ..serving.nightly import catch_up, names
from .config import DaemonConfig
from .schedule import last_fire_before

log = logging.getLogger("forecaster.daemon")


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
        now: Callable[[dt.tzinfo], dt.datetime] = lambda tz: dt.datetime.now(tz),
        sleep: Callable[[float], object] | None = None,
    ):
        self.engine, self.config, self.stop = engine, config, stop
        self.now = now
        self.sleep = sleep or (lambda seconds: stop.wait(seconds))  # a signal ends the wait at once
        self.busy = threading.Lock()
        self.last_outcome = None  # the newest catch-up's (its run's phases go to the metrics file)

    def __call__(self, scheduled: bool = True) -> None:
        with self.busy:
            failure = None
            try:
                if scheduled and self.config.min_fresh > 0:
                    self.wait_for_tonights_data()
                if not self.stop.is_set():
                    self.catch_up()
            except ForecasterError as exc:  # a lost database, a broken model: tomorrow is another night
                log.error("nightly run failed: %s", exc, extra={"event": "failed"})
                failure = str(exc)
            except Exception as exc:  # a bug: its traceback in the log, and the daemon keeps its schedule
                log.exception("nightly run failed with an unexpected error", extra={"event": "failed"})
                failure = f"unexpected error: {first_line(exc)}"
            from ..serving.after_run import write_after_run
            from ..serving.prometheus import run_phases

            config = self.config
            for problem in write_after_run(
                self.engine,
                calendar=config.calendar,
                stale_share=config.stale_share,
                metrics_file=config.metrics_file,
                html_file=config.html_file,
                phases=run_phases(self.last_outcome),
                failure=failure,
                debug=config.debug,
            ):
                log.warning("%s", problem, extra={"event": "warning"})  # as predict says it: the night stands

    def served_model_id(self) -> str:
        """The sha256 of the model this daemon serves now (the champion is looked up)."""
        if str(self.config.model) == registry.CHAMPION:
            return registry.champion(self.engine).model_id
        return file_sha256(self.config.model)

    def wait_for_tonights_data(self) -> Freshness | None:
        """Wait (up to --wait-max) for the session this model owes next, if it has closed by now."""
        config, tz = self.config, ZoneInfo(self.config.timezone)
        started = self.now(tz)
        try:
            if config.data:  # the closes that have arrived decide which session is awaited
                ingest(self.engine, config.data, calendar=config.calendar, settle=config.settle)
            closed = last_closed_session(started, config.calendar)
            as_of = session_to_await(self.engine, self.served_model_id(), closed, config.shard, config.calendar)
            if as_of is None:
                log.info(
                    "nothing to wait for: the next session owed has not closed yet, or it is older than the newest "
                    "closed one (%s) and none of its files has arrived",
                    closed,
                )
                return None
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
                    f.checks == 1
                    and log.info(
                        "tonight's session: %s (%d of %d tickers have a close, %.0f%% wanted)",
                        f.as_of,
                        f.present,
                        f.expected,
                        100 * config.min_fresh,
                    ),
                    f.share < config.min_fresh
                    and log.info(
                        "waiting for %s's data: %d of %d tickers have a close (%.0f%%, want %.0f%%)",
                        f.as_of,
                        f.present,
                        f.expected,
                        100 * f.share,
                        100 * config.min_fresh,
                    ),
                ),
            )
        except (ForecasterError, OSError) as exc:
            log.error("could not check tonight's data: %s", exc)
            return None
        if state.share < config.min_fresh and not self.stop.is_set():
            if state.present:
                log.warning(
                    "deadline reached: scoring %s with %d of %d tickers; missing %s",
                    as_of,
                    state.present,
                    state.expected,
                    names(state.missing),
                )
            else:  # nothing to score for it: the catch-up scores what is owed before it, if anything
                log.warning(
                    "deadline reached: no close arrived for %s (0 of %d tickers); it is not scored tonight",
                    as_of,
                    state.expected,
                )
        return state

    def catch_up(self) -> None:
        config = self.config
        ingest_seconds = None
        if config.data:  # first, so the log reads in the order things happen
            started = time.perf_counter()
            report = ingest(self.engine, config.data, calendar=config.calendar, settle=config.settle)
            ingest_seconds = time.perf_counter() - started
            fields = logs.ingest_fields(report)
            log.info("ingest: %s", report.summary(), extra={"event": "ingest_finished", "fields": fields})
        self.last_outcome = outcome = catch_up(
            self.engine,
            config.model,
            device=config.device,
            calendar=config.calendar,
            should_stop=self.stop.is_set,
            shard=config.shard,
            lookback=config.lookback,
            on_run=lambda run: log.info(
                "run %s on %s in %.2fs: %s",
                run.run_id,
                run.device,
                run.seconds,
                run.message,
                extra={"event": "run_finished", "fields": logs.run_fields(run)},
            ),
        )
        outcome.ingest_seconds = ingest_seconds
        for run_id in outcome.recovered:
            log.warning("marked abandoned run %s as failed", run_id)
        if not outcome.runs:
            log.info("nothing owed: model %s is up to date", outcome.model_id[:12])


class RetrainJob:
    """What the scheduler calls for --retrain-cron: one retrain (retrain.py),
    holding the nightly job's `busy` lock so the two never overlap. A failure
    or a stop leaves the champion serving; after a promotion the new
    champion scores at once (`after_promotion`)."""

    def __init__(
        self,
        engine: sa.Engine,
        config: DaemonConfig,
        stop: threading.Event,
        busy: threading.Lock,
        after_promotion: Callable[[], None] = lambda: None,
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
            except ForecasterError as exc:
                log.error("retrain failed, the champion keeps serving: %s", exc)
                return
            except Exception:
                log.exception("retrain failed with an unexpected error; the champion keeps serving")
                return
            for outcome in outcomes:
                log.info("retrain: %s %s", outcome.decision, outcome.path)
            if not any(o.decision == Decision.PROMOTED for o in outcomes) or self.stop.is_set():
                return
            try:  # the promotion is committed; the new champion scores the newest day now
                self.after_promotion()
                log.info("the new champion has scored: latest_predictions shows its forecasts")
            except ForecasterError as exc:
                log.error("the new champion is promoted, but its first scoring run failed: %s", exc)
            except Exception:
                log.exception("the new champion is promoted, but its first scoring run failed unexpectedly")

    def owed(self, trigger: CronTrigger, now: dt.datetime) -> bool:
        """Was a scheduled retrain missed (the daemon down at its time)? True
        when the last scheduled time in the past year is after the newest
        registered model was made."""
        last = last_fire_before(trigger, now)
        if last is None:
            return False
        newest = registry.newest_registered_at(self.engine)
        return newest is None or newest < last
