"""`forecaster status`: every exit status from a real database on a fixed
clock, the binomial band, and the metrics file as Prometheus parses it."""

import datetime as dt
import json
import os
import stat

import pytest
import sqlalchemy as sa
from helpers import invoke

from forecaster.db import store
from forecaster.lifecycle import promotion
from forecaster.serving.nightly import predict
from forecaster.serving.status import EXIT_CODES, coverage_band, health

EVENING = dt.datetime(2017, 11, 10, 23, 0, tzinfo=dt.UTC)  # after the close of Friday 2017-11-10


def scored(engine, model, data, end="2017-11-10", calibrated=True):
    """The champion scored every night from 2017-10-02 to `end`; with
    `calibrated`, its intervals made to hold on 4 sessions in 5 at 80% and
    19 in 20 at 95% (a calibrated model's coverage, whatever the tiny model's)."""
    promotion.promote(engine, model, "first")
    predict(engine, "champion", data=[data], device="cpu", start="2017-10-02", end=end)
    if calibrated:
        with engine.begin() as conn:
            days = [d for (d,) in conn.execute(sa.text("SELECT DISTINCT as_of FROM predictions ORDER BY as_of"))]
            for i, day in enumerate(days):
                wide80, wide95 = i % 5 != 0, i % 20 != 0
                conn.execute(
                    sa.text(
                        "UPDATE predictions SET lo80 = last_close * :lo80, hi80 = last_close * :hi80, "
                        "lo95 = last_close * :lo95, hi95 = last_close * :hi95 WHERE as_of = :d"
                    ),
                    {
                        "d": day,
                        "lo80": 0.5 if wide80 else 1.0 - 1e-9,
                        "hi80": 2.0 if wide80 else 1.0 + 1e-9,
                        "lo95": 0.4 if wide95 else 1.0 - 1e-9,
                        "hi95": 2.5 if wide95 else 1.0 + 1e-9,
                    },
                )


@pytest.mark.slow
def test_a_healthy_night_exits_0(any_engine, shared_data, tiny_model):
    scored(any_engine, tiny_model, shared_data)
    h = health(any_engine, at=EVENING)
    assert (h.state, h.exit_code) == ("ok", 0), [vars(c) for c in h.checks]
    assert h.owed_session == "2017-11-10" and h.last_success["as_of"] == "2017-11-10" and h.data_lag_sessions == 0
    assert h.coverage["80"]["20"]["in_band"] and h.coverage["95"]["20"]["in_band"]
    assert h.retired == 1  # actx stopped trading in 2017-10


@pytest.mark.slow
def test_a_missed_night_is_failed_and_a_late_vendor_is_waiting(any_engine, shared_data, tiny_model):
    scored(any_engine, tiny_model, shared_data, end="2017-11-09")  # 2017-11-10's closes stored, never scored
    missed = health(any_engine, at=EVENING)
    assert (missed.state, missed.exit_code) == ("failed", 4)
    assert "no successful run for 2017-11-10 (the last success scored 2017-11-09)" in missed.checks[1].said
    # Monday evening, Monday's files not in: retry later (EX_TEMPFAIL), whatever else is wrong.
    late = health(any_engine, at=dt.datetime(2017, 11, 13, 23, 0, tzinfo=dt.UTC))
    assert (late.state, late.exit_code, late.data_lag_sessions) == ("waiting", 75, 1)
    # Before Friday's close, Thursday is owed: scored, so healthy.
    assert health(any_engine, at=dt.datetime(2017, 11, 10, 15, 0, tzinfo=dt.UTC)).exit_code == 0


def coverage_read_whole(engine, model, window):
    """The coverage of the newest `window` sessions with outcomes of the model's served predictions, from every
    stored outcome."""
    with engine.connect() as conn:
        first = conn.execute(
            sa.text(
                "SELECT MIN(as_of) FROM (SELECT DISTINCT as_of FROM prediction_outcomes "
                "WHERE model_id = :m AND served = 1 AND in80 IS NOT NULL ORDER BY as_of DESC LIMIT :n) AS recent"
            ),
            {"n": window, "m": model},
        ).scalar()
        query = "SELECT COUNT(DISTINCT as_of), COUNT(*), AVG(in80) FROM prediction_outcomes WHERE served = 1 "
        query += "AND model_id = :m AND in80 IS NOT NULL AND as_of >= :f"
        found = conn.execute(sa.text(query), {"f": first, "m": model}).one()
        return tuple(float(x) for x in found)  # PostgreSQL's AVG of integers is a Decimal


@pytest.mark.slow
def test_coverage_is_read_from_the_newest_runs_and_from_every_outcome_when_they_hold_too_few(
    any_engine, shared_data, tiny_model
):
    """Coverage asks for the sessions of the model's last runs first, all only
    when those hold too few outcomes, and the realised ratio for the sessions
    of the runs since promotion: the figures are those of every outcome."""
    scored(any_engine, tiny_model, shared_data)  # 30 sessions: 20 found among the newest runs', 60 not
    for unknown in (None, "2017-10-20"):  # then the outcomes of the newest 15 sessions unknown
        if unknown:
            with any_engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM prices WHERE date > :d"), {"d": unknown})
        h = health(any_engine, at=EVENING)
        for window in ("20", "60"):
            c = h.coverage["80"][window]
            assert (c["sessions"], c["outcomes"], c["coverage"]) == pytest.approx(
                coverage_read_whole(any_engine, h.model_id, int(window))
            )
    assert h.coverage["80"]["20"]["sessions"] == 14  # 2017-10-02..2017-10-19: every session with an outcome
    with any_engine.connect() as conn:  # the realised ratio, read with an as_of bound, is that of every outcome
        ratio = conn.execute(
            sa.text(
                "SELECT sqrt(AVG((error / last_close) * (error / last_close))) / "
                "sqrt(AVG((naive_error / last_close) * (naive_error / last_close))) "
                "FROM prediction_outcomes WHERE served = 1 AND actual_close IS NOT NULL"
            )
        ).scalar()
    assert h.realised_ratio == pytest.approx(float(ratio)) and float(ratio) != pytest.approx(1.0)


@pytest.mark.slow
def test_coverage_drift_and_stale_tickers_are_degraded(engine, shared_data, tiny_model):
    scored(engine, tiny_model, shared_data, calibrated=False)  # the tiny model's random intervals
    drift = health(engine, at=EVENING)
    assert drift.exit_code == EXIT_CODES["degraded"] == 3
    assert any(c.name == "coverage80_20" and c.state == "degraded" for c in drift.checks)
    with engine.begin() as conn:  # two tickers' Friday closes gone: 2 of 9 stale
        conn.execute(sa.text("DELETE FROM prices WHERE date = '2017-11-10' AND ticker IN ('aaxj', 'a')"))
    stale = health(engine, at=EVENING, stale_share=0.05)
    check = next(c for c in stale.checks if c.name == "stale")
    assert check.state == "degraded" and sorted(stale.stale) == ["a", "aaxj"]
    assert next(c for c in health(engine, at=EVENING, stale_share=0.5).checks if c.name == "stale").state == "ok"


def test_the_coverage_band_flags_what_a_calibrated_interval_rarely_shows():
    low, high = coverage_band(0.80, 60)
    assert low <= 0.78 <= high and not low <= 0.70 <= high  # the example
    assert coverage_band(0.95, 20)[1] == 1.0  # 20 of 20 held: no alarm at 95%


@pytest.mark.slow
def test_status_cli_exit_status_json_and_metrics_file(db_url, shared_data, tiny_model, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    engine = store.connect(db_url)
    scored(engine, tiny_model, shared_data)
    metrics = tmp_path / "node" / "forecaster.prom"
    metrics.parent.mkdir()
    result = invoke("status", "--at", "2017-11-10T23:00", "--json", "--metrics-file", metrics, "--db", db_url)
    assert result.exit_code == 0, result.output
    said = json.loads(result.output)
    assert (said["state"], said["exit_code"], said["owed_session"]) == ("ok", 0, "2017-11-10")
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("forecaster_health_status", ())] == 0
    assert samples[("forecaster_data_lag_sessions", ())] == 0
    model = said["model_id"][:12]
    assert samples[("forecaster_predictions", (("model", model),))] == said["last_success"]["n_predictions"]
    coverage = ("forecaster_interval_coverage_ratio", (("level", "80"), ("model", model), ("window", "20")))
    assert samples[coverage] == pytest.approx(said["coverage"]["80"]["20"]["coverage"])
    assert [p.name for p in metrics.parent.iterdir()] == ["forecaster.prom"]  # no temporary file left
    late = invoke("status", "--at", "2017-11-13T23:00", "--db", db_url)
    assert late.exit_code == 75 and late.output.startswith("WAITING (exit 75)")
    bad = invoke("status", "--at", "tonight", "--db", db_url)
    assert bad.exit_code == 2 and "is not a moment" in bad.output


@pytest.mark.slow
def test_predict_exits_with_the_health_of_the_session_it_scored(db_url, shared_data, tiny_model):
    """A replay of 2017 is healthy (judged for the session it scored, not for
    today); a date whose files are not in yet is 75; stale tickers beyond the
    share are degraded, and the check says why."""
    engine = store.connect(db_url)
    replay = invoke("predict", "--model", tiny_model, "--data", shared_data, "--as-of", "2017-11-09", "--db", db_url)
    assert replay.exit_code == 0, replay.output
    early = invoke("predict", "--model", tiny_model, "--as-of", "2017-11-13", "--db", db_url)
    assert early.exit_code == 75 and "no prices stored for 2017-11-13" in early.output
    for never in ("2017-11-11", "2017-11-23", "2099-01-02"):  # a Saturday, Thanksgiving, next century: not "retry"
        assert invoke("predict", "--model", tiny_model, "--as-of", never, "--db", db_url).exit_code == 1, never
    tonight = invoke("predict", "--model", tiny_model, "--db", db_url)  # the newest stored, judged for itself
    assert tonight.exit_code == 0 and "waiting" not in tonight.output
    with engine.begin() as conn:  # two tickers' Friday closes gone: 2 of 9 stale
        conn.execute(sa.text("DELETE FROM prices WHERE date = '2017-11-10' AND ticker IN ('aaxj', 'a')"))
    stale = invoke("predict", "--model", tiny_model, "--as-of", "2017-11-10", "--db", db_url)
    assert stale.exit_code == 3 and "degraded stale: 2 ticker(s) without a close on 2017-11-10" in stale.output
    lenient = ("--stale-share", "0.5", "--as-of", "2017-11-10", "--log-format", "json")
    again = invoke("predict", "--model", tiny_model, *lenient, "--db", db_url)
    [status] = [json.loads(line) for line in again.output.splitlines() if '"event": "status"' in line]
    assert again.exit_code == status["exit_code"] == 0 and status["state"] == "ok"


def test_a_run_that_could_not_read_its_model_fails_the_night_and_keeps_the_last_success(
    engine, shared_data, tiny_model
):
    from forecaster.errors import ForecasterError

    predict(engine, tiny_model, data=[shared_data], device="cpu", start="2017-11-06", end="2017-11-09")  # no champion
    with pytest.raises(ForecasterError):
        predict(engine, tiny_model.parent / "gone.onnx", device="cpu", as_of="2017-11-10")
    h = health(engine, at=EVENING)
    run = next(c for c in h.checks if c.name == "run")
    assert h.exit_code == 4 and h.last_success["as_of"] == "2017-11-09"
    assert "no successful run for 2017-11-10 (the last success scored 2017-11-09)" in run.said
    assert h.last_run["status"] == "failed" and "gone.onnx" in h.last_run["message"] and "gone.onnx" in run.said


@pytest.mark.slow
def test_predict_writes_the_metrics_file_with_its_run_s_phases(db_url, sample_dir, tiny_model, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    metrics = tmp_path / "forecaster.prom"
    done = invoke("predict", "--model", tiny_model, "--data", sample_dir, "--metrics-file", metrics, "--db", db_url)
    assert done.exit_code == 0, done.output
    [family] = [
        f for f in text_string_to_metric_families(metrics.read_text()) if f.name == "forecaster_run_duration_seconds"
    ]
    phases = {s.labels["phase"]: s.value for s in family.samples}
    assert set(phases) == {"total", "ingest", "score", "write"} and all(v >= 0 for v in phases.values())
    assert phases["score"] + phases["write"] <= phases["total"] + 1.0  # the ledger counts whole seconds
    # Readable by node_exporter, running as another user: the umask's mode, not mkstemp's 0600.
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o666 & ~umask
    # One night of outcomes is no 60-session coverage: no such sample until the window is full.
    families = text_string_to_metric_families(metrics.read_text())
    assert [s for f in families if f.name == "forecaster_interval_coverage_ratio" for s in f.samples] == []


@pytest.mark.slow
def test_a_promotion_serves_the_night_by_the_previous_champion_and_a_rerun_keeps_the_night_s_run(
    db_url, shared_data, tiny_model, other_tiny_model
):
    engine = store.connect(db_url)
    scored(engine, tiny_model, shared_data)
    night = health(engine, at=EVENING).last_success
    predict(engine, "champion", device="cpu", as_of="2017-11-10")  # a rerun: adds nothing
    again = health(engine, at=EVENING)
    assert again.last_success["run_id"] == night["run_id"] and again.last_success["n_predictions"] > 0
    promotion.promote(engine, other_tiny_model, "by hand")  # the new champion has not scored 2017-11-10
    promoted = health(engine, at=EVENING)
    run = next(c for c in promoted.checks if c.name == "run")
    assert run.state == "ok" and "has not scored yet" in run.said and f"run {night['run_id']}" in run.said
    assert promoted.exit_code in (0, 3)  # not failed: latest_predictions still serves the night
    with engine.begin() as conn:  # one of 9 stale: degraded at 5%, not at 50%
        conn.execute(sa.text("DELETE FROM prices WHERE date = '2017-11-10' AND ticker = 'aaxj'"))
    assert any(c.name == "stale" and c.state == "degraded" for c in health(engine, at=EVENING).checks)
    assert not any(c.name == "stale" and c.state != "ok" for c in health(engine, at=EVENING, stale_share=0.5).checks)
