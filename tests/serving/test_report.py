"""`forecaster report`: what was served by default, by model when asked, every filter checked."""

import sqlalchemy as sa
from helpers import invoke, register_challenger

from forecaster.artifact.model_file import file_sha256
from forecaster.db import store
from forecaster.lifecycle import promotion
from forecaster.serving.nightly import predict
from forecaster.serving.report import build_report


def two_models_scored(db_url, sample_dir, tiny_model, other_tiny_model):
    engine = store.connect(db_url)
    promotion.promote(engine, tiny_model, "first")
    register_challenger(engine, other_tiny_model)
    predict(engine, "champion", data=[sample_dir], device="cpu", start="2017-10-16", end="2017-11-10")
    return engine


def test_report_counts_what_was_served_and_each_model_when_asked(db_url, sample_dir, tiny_model, other_tiny_model):
    engine = two_models_scored(db_url, sample_dir, tiny_model, other_tiny_model)
    with engine.connect() as conn:
        nights = conn.execute(sa.text("SELECT COUNT(DISTINCT as_of) FROM predictions")).scalar()
    served = build_report(engine)
    assert served.overall["n"] == 3 * (nights - 1)  # the champion's alone, not its shadow's too
    by_model = build_report(engine, by_model=True)
    assert {r["model_id"]: (r["status"], r["n"]) for r in by_model.per_model} == {
        file_sha256(tiny_model): ("champion", 3 * (nights - 1)),
        file_sha256(other_tiny_model): ("challenger", 3 * (nights - 1)),
    }
    assert by_model.overall["n"] == served.overall["n"]
    # The 12 characters `models` prints name a model, shadows and all.
    shadow = build_report(engine, model_id=file_sha256(other_tiny_model)[:12])
    assert shadow.model_id == file_sha256(other_tiny_model) and shadow.overall["n"] == 3 * (nights - 1)
    output = invoke("report", "--by-model", "--db", db_url).output
    assert file_sha256(other_tiny_model)[:12] in output and "challenger" in output


def test_every_filter_of_report_is_checked(db_url, sample_dir, tiny_model, other_tiny_model):
    two_models_scored(db_url, sample_dir, tiny_model, other_tiny_model)
    for args, said in [
        (["--since", "yesterday"], "Error: 'yesterday' is not a date (expected YYYY-MM-DD)\n"),
        (["--ticker", "zzz"], "Error: unknown ticker zzz: not in the database\n"),
        (["--model-id", "abc123"], "Error: no model's id starts with 'abc123' (forecaster models lists them)\n"),
        (["--model-id", "xyz"], "Error: 'xyz' is not a model id (a sha256 in hex, or its first characters)\n"),
        (["--model-id", ""], "Error: '' is not a model id (a sha256 in hex, or its first characters)\n"),
    ]:
        result = invoke("report", *args, "--db", db_url)
        assert (result.exit_code, result.output) == (1, said), args
    late = invoke("report", "--since", "2030-01-01", "--db", db_url)
    assert (late.exit_code, late.output) == (
        1,
        "Error: no prediction was made as of 2030-01-01 or later: the newest as_of is 2017-11-10\n",
    )
    with store.connect(db_url).begin() as conn:  # a ticker stored, but never scored
        conn.execute(
            sa.text(
                "INSERT INTO tickers (ticker, first_date, last_date, n_rows) "
                "VALUES ('idle', '2017-01-03', '2017-11-10', 200)"
            )
        )
    for args, said in [
        ([], "Error: no served prediction for idle\n"),
        (["--since", "2017-11-01"], "Error: no served prediction for idle as of 2017-11-01 or later\n"),
    ]:
        result = invoke("report", "--ticker", "idle", *args, "--db", db_url)
        assert (result.exit_code, result.output) == (1, said), args
    pending = invoke("report", "--since", "2017-11-10", "--db", db_url)  # made, not yet known
    assert pending.exit_code == 0 and pending.output.startswith("no served prediction has an outcome yet (3 waiting")


def test_a_naive_forecast_states_no_direction(db_url, sample_dir, tiny_model):
    """Predictions that are the last close give or take float rounding are
    right exactly on the days the close did not move."""
    engine = store.connect(db_url)
    predict(engine, tiny_model, data=[sample_dir], device="cpu", start="2017-10-16", end="2017-11-10")
    with engine.begin() as conn:  # make the stored forecasts naive, as a float32 model returns them
        conn.execute(sa.text("UPDATE predictions SET predicted_close = last_close * (1 + 4e-8)"))
        unchanged = conn.execute(
            sa.text(
                "SELECT AVG(CASE WHEN actual_close = last_close THEN 1.0 ELSE 0.0 END) FROM prediction_outcomes "
                "WHERE actual_close IS NOT NULL"
            )
        ).scalar()
    assert build_report(engine).overall["direction_accuracy"] == unchanged


def test_a_model_scored_aside_is_not_counted_as_served(db_url, sample_dir, tiny_model, other_tiny_model):
    engine = store.connect(db_url)
    promotion.promote(engine, tiny_model, "first")
    predict(engine, "champion", data=[sample_dir], device="cpu", start="2017-10-16", end="2017-11-10")
    served = build_report(engine).overall["n"]
    predict(engine, other_tiny_model, device="cpu", start="2017-10-16", end="2017-11-10")  # an experiment
    assert build_report(engine).overall["n"] == served
    # After a promotion the old champion's nights stay served; an experiment's stay aside.
    promotion.promote(engine, other_tiny_model, "now this one")
    assert build_report(engine).overall["n"] == served
    with engine.connect() as conn:
        twice = conn.execute(
            sa.text(
                "SELECT COUNT(*) FROM (SELECT ticker, as_of FROM prediction_outcomes WHERE served = 1 "
                "GROUP BY ticker, as_of HAVING COUNT(*) > 1) AS d"
            )
        ).scalar()
        newest = conn.execute(
            sa.text("SELECT DISTINCT model_id FROM prediction_outcomes WHERE served = 1 AND as_of = '2017-11-09'")
        ).all()
    assert twice == 0 and newest == [(file_sha256(tiny_model),)]
    # The new champion rescores the newest day: that day is now served by it, once.
    predict(engine, "champion", device="cpu", as_of="2017-11-10")
    with engine.connect() as conn:
        served_last = conn.execute(
            sa.text("SELECT DISTINCT model_id FROM prediction_outcomes WHERE served = 1 AND as_of = '2017-11-10'")
        ).all()
    assert served_last == [(file_sha256(other_tiny_model),)] and build_report(engine).pending == 3


def test_report_summaries_stay_numbers_with_a_flat_ticker_and_with_two_outcomes(db_url, sample_dir, tiny_model):
    """A ticker whose closes never move has no ratio (naive made no error): the
    table says n/a for it, names it, and the pooled ratio over all stays a number."""
    engine = store.connect(db_url)
    predict(engine, tiny_model, data=[sample_dir], device="cpu", start="2017-11-06", end="2017-11-10")
    with engine.begin() as conn:  # one ticker's closes, and the last closes stored with its forecasts, all one value
        flat = conn.execute(sa.text("SELECT MIN(ticker) FROM predictions")).scalar()
        conn.execute(sa.text("UPDATE prices SET close = 50 WHERE ticker = :t"), {"t": flat})
        conn.execute(sa.text("UPDATE predictions SET last_close = 50 WHERE ticker = :t"), {"t": flat})
    report = build_report(engine)
    by_ticker = {r["ticker"]: r for r in report.per_ticker}
    assert by_ticker[flat]["naive_rmse"] == 0 and by_ticker[flat]["pooled_ratio"] is None
    assert report.overall["pooled_ratio"] > 0
    output = invoke("report", "--db", db_url).output
    assert "nan" not in output.lower() and f"closes never moved, naive made no error): {flat}" in output
    assert "pooled ratio to naive, relative to the last close: " in output
    # Two outcomes per ticker: still numbers.
    two = build_report(engine, since="2017-11-08")
    assert {r["n"] for r in two.per_ticker} == {2} and two.overall["pooled_ratio"] > 0


def test_report_and_scoreboard_figures_are_plain_numbers_on_every_engine(any_db_url, sample_dir, tiny_model):
    """PostgreSQL's AVG of an integer or a numeric literal is a Decimal: the figures a
    user's script reads (and the page's JSON) are floats on both engines."""
    from forecaster.serving.registry import models_table

    engine = store.connect(any_db_url)
    promotion.promote(engine, tiny_model, "first")
    predict(engine, "champion", data=[sample_dir], device="cpu", start="2017-11-06", end="2017-11-10")
    report = build_report(engine)
    for row in [report.overall, *report.per_ticker]:
        figures = {k: v for k, v in row.items() if k != "ticker" and v is not None}
        assert {k: type(v) for k, v in figures.items()} == {k: (int if k == "n" else float) for k in figures}
        assert 0 <= row["direction_accuracy"] <= 1
    for model in models_table(engine):
        assert all(type(v) in (int, float, str, bool) for v in model.values() if v is not None), model
