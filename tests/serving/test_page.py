"""The HTML report: its figures are the library's (report, status, the views),
and it works in a real browser (Debian's chromium, driven by selenium),
offline, sorted and filtered; predict and the daemon rewrite it."""

import datetime as dt
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from helpers import invoke, offline_chromium

from forecaster.data.config import DEFAULT_CALENDAR
from forecaster.data.ingest import ingest
from forecaster.db import store
from forecaster.errors import DataError
from forecaster.lifecycle import promotion
from forecaster.serving import page
from forecaster.serving.nightly import predict
from forecaster.serving.report import build_report, rolling
from forecaster.serving.status import health

EVENING = dt.datetime(2017, 11, 10, 23, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def scored_db(tmp_path_factory, tiny_model) -> Path:
    """The shared tickers scored by a champion every night from 2017-09-01 to 2017-11-10 (made once)."""
    from conftest import SHARED_DATA

    path = tmp_path_factory.mktemp("page") / "scored.db"
    engine = store.connect(f"sqlite:///{path}")
    ingest(engine, [SHARED_DATA])
    promotion.promote(engine, tiny_model, "first")
    predict(engine, "champion", device="cpu", start="2017-09-01", end="2017-11-10")
    engine.dispose()
    return path


@pytest.fixture
def db(scored_db, tmp_path) -> str:
    """A copy of the scored database, for a test to change."""
    copy = tmp_path / "forecaster.db"
    shutil.copy(scored_db, copy)
    return f"sqlite:///{copy}"


@pytest.fixture(scope="module")
def browser():
    driver = offline_chromium()
    yield driver
    driver.quit()


def table_rows(driver) -> list[list[str]]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#forecast-table tbody tr:not([hidden])')]"
        ".map(tr => [...tr.cells].map(td => td.textContent))"
    )


def column(driver, heading: str) -> int:
    return [th.text.split(" ")[0] for th in driver.find_elements("css selector", "#forecast-table th")].index(heading)


@pytest.mark.slow
def test_the_page_shows_the_library_s_own_figures(db):
    """No second source of truth: the forecasts are latest_predictions, the
    coverage and ratio build_report's, the state status's."""
    engine = store.connect(db)
    night = page.gather(engine, at=EVENING)
    text = page.render(night)
    with engine.connect() as conn:
        latest = conn.execute(sa.text("SELECT ticker, predicted_close FROM latest_predictions ORDER BY ticker")).all()
    data = json.loads(re.search(r'id="forecast-data" type="application/json">(.*?)</script>', text).group(1))
    assert [(r["ticker"], r["predicted_close"]) for r in data["rows"]] == [(t, round(p, 4)) for t, p in latest]
    rep = build_report(engine, since=night.since)
    assert night.since == "2017-09-01" and night.report.overall["n"] == rep.overall["n"] > 0
    assert f'id="pooled-ratio">{rep.overall["pooled_ratio"]:.4f}<' in text
    assert f'id="coverage80">{100 * rep.intervals["overall"]["coverage80"]:.1f}%<' in text
    assert f'id="score-ratio">{rep.intervals["overall"]["score_vs_riskmetrics"]:.3f}<' in text
    state = health(engine, at=EVENING)
    assert f'id="state">{state.state.upper()} (exit {state.exit_code})' in text
    # The rolling windows add up to the whole: 60 sessions of a 50-session history is all of it.
    whole = rolling(rep.intervals["sessions"], 10_000)[-1]
    assert whole["coverage80"] == pytest.approx(rep.intervals["overall"]["coverage80"])
    assert whole["rm_coverage95"] == pytest.approx(rep.intervals["overall"]["riskmetrics"]["coverage95"])
    assert whole["score_vs_riskmetrics"] == pytest.approx(rep.intervals["overall"]["score_vs_riskmetrics"])
    # The default charts: the widest and narrowest bands tonight, the last night's misses.
    assert {"widest 80% band tonight", "narrowest 80% band tonight"} <= set(night.chosen_why.values())
    assert any(why == "largest misses of 2017-11-09" for why in night.chosen_why.values())
    assert set(night.charts) == set(night.chosen_why) and all(svg.startswith("<svg") for svg in night.charts.values())
    with pytest.raises(DataError, match="unknown ticker nope"):
        page.gather(engine, tickers=["NOPE", "aaxj"])


@pytest.mark.slow
def test_after_a_promotion_the_header_names_the_run_and_model_that_serve(db, other_tiny_model):
    engine = store.connect(db)
    served = health(engine, at=EVENING).last_success
    promotion.promote(engine, other_tiny_model, "by hand")
    text = page.render(page.gather(engine, at=EVENING))
    assert "no successful run yet" not in text and "Forecasts as of <b>2017-11-10</b>" in text
    assert f"by model <code>{served['model_id'][:12]}</code>" in text


@pytest.mark.slow
def test_the_page_in_a_browser_offline_sorted_filtered_and_drawn(db, tmp_path, browser):
    from matplotlib.image import imread

    result = invoke("report", "--html", tmp_path / "night.html", "--at", "2017-11-10T23:00", "--db", db)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "night.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing to fetch
    browser.get((tmp_path / "night.html").as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    # No request left the page (a resource would show even when it failed).
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    with store.connect(db).connect() as conn:
        tickers = conn.execute(sa.text("SELECT ticker FROM latest_predictions ORDER BY ticker")).scalars().all()
    assert [r[0] for r in table_rows(browser)] == tickers  # one row per prediction of the night, by ticker
    predicted = column(browser, "predicted")
    heading = browser.find_elements("css selector", "#forecast-table th")[predicted]
    heading.click()
    values = [float(r[predicted]) for r in table_rows(browser)]
    assert values == sorted(values) and len(values) == len(tickers)
    heading.click()
    assert [float(r[predicted]) for r in table_rows(browser)] == sorted(values, reverse=True)
    box = browser.find_element("id", "filter")
    box.send_keys("aa")
    assert sorted(r[0] for r in table_rows(browser)) == [t for t in tickers if "aa" in t]
    assert browser.find_element("id", "shown").text == f"{sum('aa' in t for t in tickers)} of {len(tickers)} tickers"
    box.clear()
    box.send_keys("out_of_range")  # a flag
    flagged = [r for r in table_rows(browser)]
    assert flagged and all("out_of_range" in r[-1] for r in flagged)
    # Every chart drawn: an SVG with lines in the DOM, and pixels that are not all one colour.
    charts = browser.find_elements("css selector", "figure.chart")
    assert len(charts) == text.count('<figure class="chart"') >= 5
    for chart in charts:
        assert chart.find_elements("css selector", "svg path")
        browser.execute_script("arguments[0].scrollIntoView()", chart)
        pixels = imread(io.BytesIO(chart.screenshot_as_png))
        assert np.ptp(pixels[..., :3]) > 0.5, chart.get_attribute("data-ticker") or "coverage"


@pytest.mark.slow
def test_predict_rewrites_the_page_and_a_failed_run_says_so_at_the_top(db, tmp_path, tiny_model):
    html = tmp_path / "site" / "night.html"
    with store.connect(db).begin() as conn:  # tonight's run not made yet
        conn.execute(sa.text("DELETE FROM predictions WHERE as_of = '2017-11-10'"))
        conn.execute(sa.text("DELETE FROM runs WHERE as_of = '2017-11-10'"))
    done = invoke("predict", "--model", "champion", "--as-of", "2017-11-10", "--html", html, "--db", db)
    assert done.exit_code == 0, done.output
    first = html.read_text()
    assert "Forecasts as of <b>2017-11-10</b>" in first and 'id="failure"' not in first
    failed = invoke("predict", "--model", tmp_path / "gone.onnx", "--as-of", "2017-11-10", "--html", html, "--db", db)
    assert failed.exit_code == 1
    said = html.read_text()
    assert 'id="failure"' in said and "The last run FAILED" in said and "gone.onnx" in said
    assert [p.name for p in html.parent.iterdir()] == ["night.html"]  # replaced whole, no temporary file left
    # `report --html` later still says the last run failed; a good run after it clears the banner.
    invoke("report", "--html", html, "--db", db)
    assert "The last run FAILED" in html.read_text()
    assert invoke("predict", "--model", "champion", "--as-of", "2017-11-10", "--html", html, "--db", db).exit_code == 0
    assert 'id="failure"' not in html.read_text()
    invoke("report", "--html", html, "--db", db)
    assert 'id="failure"' not in html.read_text()


def test_the_failure_banner_names_the_error_and_a_page_without_outcomes_says_what_to_do(engine):
    night = page.gather(engine, failure="the database is locked")
    text = page.render(night)
    assert "The last run FAILED: the database is locked" in text
    assert "No prediction has an outcome yet" in text and "no successful run yet" in text


@pytest.mark.slow
def test_after_a_run_the_page_and_the_metrics_file_carry_one_verdict_under_the_operator_s_stale_share(
    db, tmp_path, monkeypatch
):
    """Judged once for both (a large database reads its outcomes once), and the
    page under the run's --stale-share, as the metrics file (it took the default)."""
    from prometheus_client.parser import text_string_to_metric_families

    from forecaster.serving import status
    from forecaster.serving.after_run import write_after_run

    engine = store.connect(db)
    with engine.begin() as conn:  # two tickers' Friday closes gone: 2 of 9 stale
        conn.execute(sa.text("DELETE FROM prices WHERE date = '2017-11-10' AND ticker IN ('aaxj', 'a')"))
    verdicts = []

    def judged_that_evening(engine, **settings):  # the clock of the night scored, not today's
        verdicts.append(health(engine, at=EVENING, **settings))
        return verdicts[-1]

    monkeypatch.setattr(status, "health", judged_that_evening)
    html, metrics = tmp_path / "night.html", tmp_path / "forecaster.prom"
    for share, stale_state in ((0.05, "degraded"), (0.5, "ok")):
        files = {"metrics_file": metrics, "html_file": html}
        assert write_after_run(engine, calendar=DEFAULT_CALENDAR, stale_share=share, **files) == []
        verdict = verdicts[-1]
        assert next(c.state for c in verdict.checks if c.name == "stale") == stale_state
        text = html.read_text()
        assert f'id="state">{verdict.state.upper()} (exit {verdict.exit_code})' in text
        assert f'<li class="{stale_state}"><b>stale</b> {stale_state}:' in text
        [status_metric] = [
            s.value
            for f in text_string_to_metric_families(metrics.read_text())
            for s in f.samples
            if s.name == "forecaster_health_status"
        ]
        assert status_metric == verdict.exit_code
    assert len(verdicts) == 2  # one verdict a run, for both files


def test_a_page_that_cannot_be_made_leaves_the_metrics_file_and_the_run_alone(db, tmp_path, monkeypatch):
    """A bug in the page's code is said in one line: the metrics file (what
    alerts) is still written, and predict exits with its run's own status."""

    def broken(*args, **kwargs):
        raise ValueError("a bug in the page")

    monkeypatch.setattr(page, "gather", broken)
    html, metrics = tmp_path / "night.html", tmp_path / "forecaster.prom"
    done = invoke(
        "predict", "--model", "champion", "--as-of", "2017-11-10", "--html", html, "--metrics-file", metrics, "--db", db
    )
    assert done.exit_code == 0, done.output
    assert f"could not write the HTML report {html}: unexpected ValueError: a bug in the page" in done.stderr
    assert "forecaster_health_status" in metrics.read_text() and not html.exists()
    assert "Traceback" not in done.stderr
    debugged = invoke("--debug", "predict", "--model", "champion", "--as-of", "2017-11-10", "--html", html, "--db", db)
    assert debugged.exit_code == 0 and "Traceback (most recent call last)" in debugged.stderr
    assert 'raise ValueError("a bug in the page")' in debugged.stderr


@pytest.mark.slow
def test_the_daemon_rewrites_the_page_after_each_night(db, tmp_path, tiny_model):
    """daemon --once in a real process, with the job file's key."""
    html = tmp_path / "night.html"
    job = tmp_path / "job.toml"
    job.write_text(f'html = "{html}"\nmin-fresh = 0\ndevice = "cpu"\nmodel = "champion"\n')
    done = subprocess.run(
        [sys.executable, "-m", "forecaster", "daemon", "--once", "--job", job, "--db", db],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 75, done.stderr[-2000:]  # years-old data: tonight's files are not in
    assert "Forecasts as of <b>2017-11-10</b>" in html.read_text()
    database = Path(db.removeprefix("sqlite:///"))  # closed at exit, as every command leaves it: no WAL beside it
    assert not database.with_name(database.name + "-wal").exists() and database.exists()


@pytest.mark.slow
def test_thousands_of_rows_are_all_in_the_table_and_shown_a_page_at_a_time(tmp_path, browser):
    from forecaster.serving.status import Health

    rows = [
        {
            "ticker": f"t{i:04d}",
            "as_of": "2017-11-10",
            "target_date": "2017-11-13",
            "last_close": 10.0 + i,
            "predicted_close": 10.0 + i + (i % 7) / 10,
            **{c: 10.0 + i + d for c, d in (("lo80", -1), ("hi80", 1), ("lo95", -2), ("hi95", 2))},
            "sessions_behind": 0,
            "model_id": "0" * 64,
            "flags": "out_of_range" if i % 100 == 0 else None,
        }
        for i in range(3000)
    ]
    night = page.Night(
        "2017-11-10T23:00:00+00:00", Health("x", "2017-11-10", "2017-11-10", 0, None), None, rows, None, None
    )
    browser.get(page.write(tmp_path / "many.html", night).as_uri())
    count = "return document.querySelectorAll('#forecast-table tbody tr').length"
    assert browser.execute_script(count) == 3000 and len(table_rows(browser)) == 250
    assert browser.find_element("id", "shown").text == "3000 of 3000 tickers (the first 250 shown)"
    browser.find_elements("css selector", "#forecast-table th")[column(browser, "predicted")].click()
    browser.find_elements("css selector", "#forecast-table th")[column(browser, "predicted")].click()
    assert table_rows(browser)[0][0] == "t2999"  # the dearest first, from all 3000, not from the page shown
    browser.find_element("id", "filter").send_keys("out_of")
    assert len(table_rows(browser)) == 30 and not browser.find_element("id", "show-all").is_displayed()
    browser.find_element("id", "filter").clear()
    browser.find_element("id", "filter").send_keys(" ")  # an input event: the filter emptied
    browser.find_element("id", "show-all").click()
    assert len(table_rows(browser)) == 3000
