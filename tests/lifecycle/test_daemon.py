"""The daemon in real subprocesses (short timeouts, no sleeping on the schedule),
and its cron schedule against a fixed clock."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from zoneinfo import ZoneInfo

import pytest
from helpers import start_daemon, wait_for

from forecaster.data.ingest import ingest
from forecaster.lifecycle.schedule import last_fire_before, make_trigger
from forecaster.serving.nightly import predict

NY = ZoneInfo("America/New_York")


def runs(engine):
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql("SELECT as_of, status, n_predictions FROM runs ORDER BY run_id")]


@pytest.fixture
def stocked(any_engine, shared_data):
    ingest(any_engine, [shared_data])
    return any_engine


@pytest.mark.slow
def test_catch_up_then_refuse_a_second_daemon_then_stop_on_sigterm(stocked, any_db_url, tiny_model, tmp_path):
    predict(stocked, tiny_model, as_of="2017-11-07", device="cpu")  # the last night that ran
    first = start_daemon(any_db_url, tiny_model, tmp_path / "first.log")
    try:
        log = wait_for(tmp_path / "first.log", "next nightly at", first)
        # The three missed nights were scored once each, in order.
        assert runs(stocked) == [
            ("2017-11-07", "succeeded", 9),
            ("2017-11-08", "succeeded", 9),
            ("2017-11-09", "succeeded", 9),
            ("2017-11-10", "succeeded", 9),
        ]
        assert "as_of 2017-11-10: 9 predictions for 2017-11-13" in log

        second = subprocess.run(
            [sys.executable, "-m", "forecaster", "daemon", "--model", str(tiny_model), "--db", any_db_url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert f"another daemon already runs on this database (pid {first.pid} on" in second.stderr

        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0
        assert "SIGTERM received" in (tmp_path / "first.log").read_text()
    finally:
        if first.poll() is None:
            first.kill()


@pytest.mark.slow
def test_a_killed_daemon_does_not_block_the_next_one(stocked, any_db_url, tiny_model, tmp_path):
    first = start_daemon(any_db_url, tiny_model, tmp_path / "a.log")
    wait_for(tmp_path / "a.log", "next nightly at", first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    second = start_daemon(any_db_url, tiny_model, tmp_path / "b.log")
    try:
        log = wait_for(tmp_path / "b.log", "next nightly at", second)
        assert "nothing owed" in log  # the first one had already scored the newest night
        assert runs(stocked) == [("2017-11-10", "succeeded", 9)]
        second.send_signal(signal.SIGINT)
        assert second.wait(timeout=15) == 0
    finally:
        if second.poll() is None:
            second.kill()


def fire_times(cron, start, n=4, tz="America/New_York"):
    trigger = make_trigger(cron, tz)
    out, now = [], start
    for _ in range(n):
        now = trigger.get_next_fire_time(None, now)
        out.append(now)
        now = now + dt.timedelta(seconds=1)
    return out


def test_weekday_evenings_skip_the_weekend():
    friday_noon = dt.datetime(2026, 11, 27, 12, 0, tzinfo=NY)
    times = fire_times("0 22 * * 1-5", friday_noon, 3)
    assert [t.strftime("%a %H:%M") for t in times] == ["Fri 22:00", "Mon 22:00", "Tue 22:00"]


def test_the_dst_week_keeps_22_00_local():
    # US clocks move forward on Sunday 2026-03-08: 22:00 local is 03:00 UTC before, 02:00 after.
    friday = dt.datetime(2026, 3, 6, 12, 0, tzinfo=NY)
    times = fire_times("0 22 * * 1-5", friday, 3)
    assert [t.strftime("%Y-%m-%d %H:%M") for t in times] == ["2026-03-06 22:00", "2026-03-09 22:00", "2026-03-10 22:00"]
    utc = [t.astimezone(dt.UTC).hour for t in times]
    assert utc == [3, 2, 2]


@pytest.mark.parametrize(
    "field, names",
    [
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0,6", "sun,sat"),
        ("7", "sun"),
        ("5-7", "sun,fri,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("mon-fri", "mon,tue,wed,thu,fri"),
        ("*", "*"),
    ],
)
def test_crontab_weekday_numbers_mean_what_cron_means(field, names):
    from forecaster.lifecycle.schedule import crontab_weekdays

    assert crontab_weekdays(field) == names


def test_a_bad_schedule_is_a_clear_error():
    from forecaster.errors import ForecasterError

    with pytest.raises(ForecasterError, match="bad schedule"):
        make_trigger("not a cron", "America/New_York")


@pytest.mark.slow
def test_sigterm_in_the_middle_of_a_run_waits_for_it_then_exits_0(stocked, any_db_url, tiny_model, tmp_path):
    # Months owed: the catch-up runs in the scheduler's job thread, as every
    # scheduled run does, and the signal arrives while it writes.
    predict(stocked, tiny_model, as_of="2017-06-01", device="cpu")
    daemon = start_daemon(any_db_url, tiny_model, tmp_path / "d.log")
    try:
        wait_for(tmp_path / "d.log", " on cpu in ", daemon)  # the first run of the catch-up is logged
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    lines = (tmp_path / "d.log").read_text().splitlines()
    signalled = next(i for i, line in enumerate(lines) if "SIGTERM received" in line)
    runs_logged = [i for i, line in enumerate(lines) if " on cpu in " in line]
    assert "daemon stopped" in lines[-1]  # after every run line: the job had returned
    assert len([i for i in runs_logged if i > signalled]) <= 1  # at most the run in progress finished
    statuses = dict(Counter(status for _, status, _ in runs(stocked)))
    assert "running" not in statuses
    assert statuses["succeeded"] == 1 + len(runs_logged) < 100  # it stopped early, every run whole


@pytest.mark.slow
def test_a_daemon_whose_postgresql_lock_died_with_a_server_restart_exits_and_the_next_one_serves(
    shared_data, tiny_model, tmp_path
):
    from conftest import pg_server

    from forecaster.db import store

    with pg_server() as server:
        url = server.new_database()
        ingest(store.connect(url), [shared_data])
        first = start_daemon(url, tiny_model, tmp_path / "first.log", "--lock-check", "1")
        try:
            wait_for(tmp_path / "first.log", "next nightly at", first)
            server.restart()  # the advisory lock dies with the daemon's connection
            assert first.wait(timeout=60) == 75  # EX_TEMPFAIL: its service manager starts it again
        finally:
            if first.poll() is None:
                first.kill()
        assert "lost its one-per-database lock" in (tmp_path / "first.log").read_text()
        # The next daemon takes the lock and serves; SIGTERM with the server gone still exits 0.
        second = start_daemon(url, tiny_model, tmp_path / "second.log")
        try:
            wait_for(tmp_path / "second.log", "next nightly at", second)
            server.stop()
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0
        finally:
            if second.poll() is None:
                second.kill()
        assert (tmp_path / "second.log").read_text().splitlines()[-1].endswith("daemon stopped")


def test_a_failing_start_up_leaves_the_schedules_standing(db_url, engine, shared_data, tiny_model, monkeypatch, caplog):
    """The start-up's retrain check hits a database error: logged, and the
    nightly and retrain schedules still stand (the daemon is not left idle)."""
    import logging
    import threading
    from pathlib import Path

    from forecaster.errors import DatabaseError
    from forecaster.lifecycle import daemon, jobs
    from forecaster.lifecycle.config import DaemonConfig

    ingest(engine, [shared_data])

    def owed(*_):
        raise DatabaseError("server closed the connection unexpectedly")

    monkeypatch.setattr(jobs.RetrainJob, "owed", owed)
    scheduled = []
    real_start = daemon.BlockingScheduler.start

    def start(scheduler, *args, **kwargs):  # stop once the start-up work has run
        scheduled.extend(job.id for job in scheduler.get_jobs())
        threading.Thread(target=lambda: (seen.append(finished.wait(60)), os.kill(os.getpid(), signal.SIGTERM))).start()
        return real_start(scheduler, *args, **kwargs)

    finished, seen = threading.Event(), []
    monkeypatch.setattr(daemon.BlockingScheduler, "start", start)
    monkeypatch.setattr(daemon.log, "info", lambda msg, *a: (msg % a).startswith("next retrain") and finished.set())
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    config = DaemonConfig(db_url=db_url, model=Path(tiny_model), device="cpu", retrain_cron="0 6 * * 6", lock_path=None)
    try:
        with caplog.at_level(logging.INFO):
            assert daemon.run_daemon(config) == 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert seen == [True]  # the start-up work finished and logged the schedules
    assert {"nightly", "retrain", "start-up"} <= set(scheduled)
    assert "the start-up retrain check failed; the schedules stand" in caplog.text


@pytest.mark.slow
def test_a_daemon_whose_lock_connection_hangs_counts_the_lock_as_lost(shared_data, tiny_model, tmp_path):
    """A server that stops answering (frozen, or a network cut without a
    reset) must not freeze the daemon: the lock check gives up and it exits."""
    import time

    import psycopg
    import sqlalchemy as sa
    from conftest import pg_server

    from forecaster.data.ingest import ingest as load
    from forecaster.db import store
    from forecaster.lifecycle.locks import CHECK_TIMEOUT

    with pg_server() as server:
        url = server.new_database()
        load(store.connect(url), [shared_data])
        daemon = start_daemon(url, tiny_model, tmp_path / "d.log", "--lock-check", "1")
        frozen = None
        try:
            wait_for(tmp_path / "d.log", "next nightly at", daemon)
            name = sa.engine.make_url(url).database
            with psycopg.connect(host=str(server.root), user="postgres", dbname=name, autocommit=True) as conn:
                frozen = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'forecaster daemon (%'"
                ).fetchone()[0]
            os.kill(frozen, signal.SIGSTOP)  # the lock's backend stops answering
            started = time.monotonic()
            assert daemon.wait(timeout=CHECK_TIMEOUT + 45) == 75
            assert time.monotonic() - started >= CHECK_TIMEOUT - 1  # it waited for an answer, then gave up
        finally:
            if frozen:
                os.kill(frozen, signal.SIGCONT)
            if daemon.poll() is None:
                daemon.kill()
        assert "lost its one-per-database lock" in (tmp_path / "d.log").read_text()


@pytest.mark.slow
def test_once_catches_up_scores_and_exits_with_the_status(engine, db_url, shared_data, tiny_model, tmp_path):
    """--once in a real process: the missed nights scored, the metrics file
    written, and the exit status status's: 75 on history years old (the
    newest closed session's files are not in)."""
    ingest(engine, [shared_data])
    predict(engine, tiny_model, as_of="2017-11-08", device="cpu")
    metrics = tmp_path / "forecaster.prom"
    command = [sys.executable, "-m", "forecaster", "daemon", "--model", str(tiny_model), "--once"]
    done = subprocess.run(
        [*command, "--min-fresh", "0", "--device", "cpu", "--metrics-file", str(metrics), "--db", db_url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 75, done.stderr[-2000:]
    assert [r[0] for r in runs(engine)] == ["2017-11-08", "2017-11-09", "2017-11-10"]
    assert "status: waiting (exit 75)" in done.stderr and "forecaster_health_status 75.0" in metrics.read_text()
    # The same in JSON: every line an object, one run_finished per run, no exporter chatter.
    predict(engine, tiny_model, as_of="2017-11-08", device="cpu")  # nothing owed now: delete the two runs' rows
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM predictions WHERE as_of > '2017-11-08'")
        conn.exec_driver_sql("DELETE FROM runs WHERE as_of > '2017-11-08'")
    done = subprocess.run(
        [*command, "--min-fresh", "0", "--device", "cpu", "--log-format", "json", "--db", db_url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    events = [json.loads(line) for line in done.stderr.splitlines()]
    finished = [e for e in events if e["event"] == "run_finished"]
    assert [(e["as_of"], e["predictions"], e["stale"]) for e in finished] == [
        ("2017-11-09", 9, 1),
        ("2017-11-10", 9, 1),
    ]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in events)
    [status] = [e for e in events if e["event"] == "status"]
    assert status["exit_code"] == done.returncode == 75 and status["state"] == "waiting"


def test_the_last_fire_steps_through_the_hour_a_dst_fall_back_repeats():
    """01:30 New York happens twice on 2026-11-01 (EDT, then EST): both are
    fires, and looking back across them ends (it once looped for ever)."""
    sunday = make_trigger("30 1 * * 0", "America/New_York")
    at = dt.datetime(2026, 11, 1, 7, 0, tzinfo=dt.UTC)
    assert last_fire_before(sunday, at) == dt.datetime(2026, 11, 1, 6, 30, tzinfo=dt.UTC)  # the EST one
    assert last_fire_before(sunday, at - dt.timedelta(hours=1)) == dt.datetime(2026, 11, 1, 5, 30, tzinfo=dt.UTC)
    every_minute = make_trigger("* * * * *", "America/New_York")
    assert last_fire_before(every_minute, at, within=dt.timedelta(days=1)) == at
