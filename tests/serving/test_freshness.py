"""The daemon waits for the night's files before a scheduled run, on a fixed clock."""

import datetime as dt
import logging
import threading
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from helpers import append_next_day, cut_copy

from forecaster.data.ingest import ingest
from forecaster.lifecycle.config import DaemonConfig
from forecaster.lifecycle.jobs import NightlyJob
from forecaster.serving.freshness import freshness, session_to_await, wait_for_data

NY = ZoneInfo("America/New_York")
FIRE = dt.datetime(2017, 11, 8, 22, 0, tzinfo=NY)  # a Wednesday evening


class Clock:
    """A fixed clock that only moves when the code under test sleeps."""

    def __init__(self, start: dt.datetime, on_sleep=lambda n: None):
        self.at, self.slept, self.on_sleep = start, [], on_sleep

    def now(self, tz=None) -> dt.datetime:
        return self.at if tz is None else self.at.astimezone(tz)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.at += dt.timedelta(seconds=seconds)
        self.on_sleep(len(self.slept))


def night(shared_data, tmp_path, engine):
    """The ten tickers through 2017-11-07, then five of them with their 11-08 close."""
    data = tmp_path / "data"
    cut = cut_copy(shared_data, data, "2017-11-07")
    traded = sorted(name.split(".")[0] for name, rows in cut.items() if rows)
    append_next_day(data, cut, traded[:5])
    ingest(engine, [data])
    return data, cut, traded


def test_freshness_counts_the_previous_sessions_tickers(engine, shared_data, tmp_path):
    data, cut, traded = night(shared_data, tmp_path, engine)
    state = freshness(engine, "2017-11-08")
    with engine.connect() as conn:
        had = set(conn.exec_driver_sql("SELECT ticker FROM prices WHERE date = '2017-11-07'").scalars())
    assert (state.previous, state.expected, state.present) == ("2017-11-07", len(had), 5)
    assert state.missing == sorted(had - set(traded[:5]))


def test_it_waits_rechecking_until_enough_closes_have_arrived(engine, shared_data, tmp_path):
    data, cut, traded = night(shared_data, tmp_path, engine)
    clock = Clock(FIRE, on_sleep=lambda n: n == 2 and append_next_day(data, cut, traded[5:]))
    state = wait_for_data(
        engine,
        "2017-11-08",
        data=[data],
        min_share=0.9,
        deadline=FIRE + dt.timedelta(hours=2),
        recheck=dt.timedelta(minutes=5),
        now=clock.now,
        sleep=clock.sleep,
    )
    assert (state.share, state.checks, state.missing) == (1.0, 3, [])
    assert clock.slept == [300, 300]  # the files came during the second wait; the third check saw them
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT n_rows FROM price_dates WHERE date = '2017-11-08'").scalar() == 9


def test_at_the_deadline_the_job_scores_what_it_has_and_names_what_is_missing(
    engine, db_url, shared_data, tmp_path, tiny_model, caplog
):
    data, cut, traded = night(shared_data, tmp_path, engine)
    clock = Clock(FIRE)
    config = DaemonConfig(
        db_url=db_url,
        model=tiny_model,
        data=[data],
        device="cpu",
        min_fresh=0.9,
        wait_max=dt.timedelta(minutes=22),
        recheck=dt.timedelta(minutes=5),
    )
    job = NightlyJob(engine, config, threading.Event(), now=clock.now, sleep=clock.sleep)
    with caplog.at_level(logging.INFO, logger="forecaster.daemon"):
        job(scheduled=True)
    assert clock.slept == [300, 300, 300, 300, 120]  # never past the deadline
    late = ", ".join(traded[5:])
    assert f"deadline reached: scoring 2017-11-08 with 5 of 9 tickers; missing {late}" in caplog.text
    assert "waiting for 2017-11-08's data: 5 of 9 tickers have a close (56%, want 90%)" in caplog.text
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM predictions WHERE as_of = '2017-11-08'")).scalar() == 5


def test_a_complete_night_and_the_start_up_catch_up_do_not_wait(engine, db_url, shared_data, tmp_path, tiny_model):
    data, cut, traded = night(shared_data, tmp_path, engine)
    clock = Clock(FIRE)
    config = DaemonConfig(db_url=db_url, model=tiny_model, data=[data], device="cpu", min_fresh=0.9)
    job = NightlyJob(engine, config, threading.Event(), now=clock.now, sleep=clock.sleep)
    job(scheduled=False)  # the catch-up on start scores what is there
    append_next_day(data, cut, traded[5:])
    job(scheduled=True)  # everything has arrived: no wait, and the four late tickers are scored
    assert clock.slept == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM predictions WHERE as_of = '2017-11-08'")).scalar() == 9


def test_a_stop_ends_the_wait_at_once(engine, db_url, shared_data, tmp_path, tiny_model):
    data, cut, traded = night(shared_data, tmp_path, engine)
    stop = threading.Event()
    clock = Clock(FIRE, on_sleep=lambda n: stop.set())
    config = DaemonConfig(db_url=db_url, model=tiny_model, data=[data], device="cpu", min_fresh=0.9)
    NightlyJob(engine, config, stop, now=clock.now, sleep=clock.sleep)(scheduled=True)
    assert clock.slept == [300]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM runs")).scalar() == 0  # stopped: nothing started


def test_the_job_logs_a_failed_night_and_a_bug_and_keeps_going(
    engine, db_url, tiny_model, tmp_path, caplog, monkeypatch
):
    from forecaster.lifecycle import jobs

    config = DaemonConfig(db_url=db_url, model=tmp_path / "missing.onnx", device="cpu", min_fresh=0)
    job = NightlyJob(engine, config, threading.Event())
    with caplog.at_level(logging.INFO, logger="forecaster.daemon"):
        job(scheduled=False)  # a library error: one line, no traceback
        monkeypatch.setattr(jobs, "catch_up", lambda *a, **k: 1 / 0)
        job(scheduled=False)  # a bug: its traceback in the log
    failed, bug = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "nightly run failed: " in failed.getMessage() and "missing.onnx" in failed.getMessage()
    assert failed.exc_info is None
    assert bug.getMessage() == "nightly run failed with an unexpected error" and bug.exc_info[0] is ZeroDivisionError


def scored_through(engine, model, shared_data, tmp_path, last_date, scored):
    data = tmp_path / "data"
    cut_copy(shared_data, data, last_date)
    ingest(engine, [data])
    from forecaster.serving.nightly import predict

    predict(engine, model, device="cpu", as_of=scored)
    return data


def test_a_morning_fire_waits_for_the_session_owed_not_the_wall_clocks(
    engine, db_url, shared_data, tmp_path, tiny_model, caplog
):
    # Prices through Thu 2017-11-09, the model scored Wednesday's; the cron fires Friday 06:00.
    data = scored_through(engine, tiny_model, shared_data, tmp_path, "2017-11-09", "2017-11-08")
    clock = Clock(dt.datetime(2017, 11, 10, 6, 0, tzinfo=NY))
    config = DaemonConfig(db_url=db_url, model=tiny_model, data=[data], device="cpu", min_fresh=0.9)
    with caplog.at_level(logging.INFO, logger="forecaster.daemon"):
        NightlyJob(engine, config, threading.Event(), now=clock.now, sleep=clock.sleep)(scheduled=True)
    assert clock.slept == []  # Thursday's closes are there; Friday has not traded
    assert "deadline reached" not in caplog.text and "as_of 2017-11-09: 9 predictions" in caplog.text
    # The next morning fire owes Friday's session, which has not closed: nothing to wait for.
    clock.at = dt.datetime(2017, 11, 10, 6, 5, tzinfo=NY)
    with caplog.at_level(logging.INFO, logger="forecaster.daemon"):
        NightlyJob(engine, config, threading.Event(), now=clock.now, sleep=clock.sleep)(scheduled=True)
    assert clock.slept == [] and "nothing to wait for: the next session owed has not closed yet" in caplog.text


def test_data_that_lags_the_calendar_is_scored_without_waiting(
    engine, db_url, shared_data, tmp_path, tiny_model, caplog
):
    # A replay of history years later: the wall clock says 2026, the model owes 2017-11-09, whose files
    # never come: no wait (no --min-fresh 0 needed), nothing scored.
    data = scored_through(engine, tiny_model, shared_data, tmp_path, "2017-11-08", "2017-11-08")
    clock = Clock(dt.datetime(2026, 12, 1, 22, 0, tzinfo=NY))
    config = DaemonConfig(
        db_url=db_url, model=tiny_model, data=[data], device="cpu", min_fresh=0.9, wait_max=dt.timedelta(minutes=10)
    )
    with caplog.at_level(logging.INFO, logger="forecaster.daemon"):
        NightlyJob(engine, config, threading.Event(), now=clock.now, sleep=clock.sleep)(scheduled=True)
    assert clock.slept == [] and "nothing to wait for" in caplog.text and "scoring 2017-11-09" not in caplog.text
    # Once its closes start to arrive, that session is the one waited for, and scored.
    cut_copy(shared_data, data, "2017-11-09")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="forecaster.daemon"):
        NightlyJob(engine, config, threading.Event(), now=clock.now, sleep=clock.sleep)(scheduled=True)
    assert clock.slept == [] and "as_of 2017-11-09: 9 predictions" in caplog.text and "2026-12" not in caplog.text


def test_a_model_a_night_behind_waits_for_tonight_not_the_complete_night_it_missed(
    engine, db_url, shared_data, tmp_path, tiny_model, caplog
):
    # Last scored 11-07 (Tuesday's run failed, say); 11-08 is complete, 11-09 has begun arriving.
    data = scored_through(engine, tiny_model, shared_data, tmp_path, "2017-11-08", "2017-11-07")
    cut = cut_copy(shared_data, data, "2017-11-08")
    traded = sorted(name.split(".")[0] for name, rows in cut.items() if rows)
    append_next_day(data, cut, traded[:1])
    clock = Clock(dt.datetime(2017, 11, 9, 22, 0, tzinfo=NY), on_sleep=lambda n: append_next_day(data, cut))
    config = DaemonConfig(db_url=db_url, model=tiny_model, data=[data], device="cpu", min_fresh=0.9)
    with caplog.at_level(logging.INFO, logger="forecaster.daemon"):
        NightlyJob(engine, config, threading.Event(), now=clock.now, sleep=clock.sleep)(scheduled=True)
    assert "tonight's session: 2017-11-09 (1 of 9 tickers have a close" in caplog.text
    assert clock.slept == [300]  # it waited for 11-09's files, which then came
    assert "as_of 2017-11-08: 9 predictions" in caplog.text and "as_of 2017-11-09: 9 predictions" in caplog.text


def test_the_session_awaited_is_tonight_s_or_one_whose_files_are_arriving(engine, shared_data, tiny_model):
    """A vendor late with tonight's files is waited for; a session far behind
    that nothing has arrived for (a replay that ran out of history) is not."""
    from forecaster.artifact.model_file import file_sha256
    from forecaster.serving.nightly import predict

    ingest(engine, [shared_data])
    predict(engine, tiny_model, as_of="2017-11-08", device="cpu")
    model = file_sha256(tiny_model)
    assert session_to_await(engine, model, "2017-11-10") == "2017-11-10"  # closes arriving through Friday
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM prices WHERE date > '2017-11-08'"))
        conn.execute(sa.text("DELETE FROM price_dates WHERE date > '2017-11-08'"))
    assert session_to_await(engine, model, "2017-11-09") == "2017-11-09"  # tonight's files late: wait
    assert session_to_await(engine, model, "2017-11-10") is None  # Thursday's never came: no wait for it
