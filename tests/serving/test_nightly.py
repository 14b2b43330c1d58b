"""Nightly runs on the real tickers: two nights, reruns, backfill, devices."""

import re

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from helpers import append_next_day, cut_copy

from forecaster.artifact.model_file import load_model
from forecaster.cli import main
from forecaster.data.calendar import next_trading_day
from forecaster.db import store
from forecaster.errors import DataError, DeviceError
from forecaster.serving.nightly import owed_dates, predict


def rows(engine, sql, **params):
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def test_two_nights_on_real_data(any_engine, shared_data, tiny_model, tmp_path):
    data = tmp_path / "data"
    cut = cut_copy(shared_data, data, "2017-11-08")

    night1 = predict(any_engine, tiny_model, data=[data], device="cpu")
    [run1] = night1.runs
    assert (run1.as_of, run1.target_date, run1.n_predictions) == ("2017-11-08", "2017-11-09", 9)
    assert run1.stale == ["actx"] and night1.ingest.rows_added == 29_116 - 18  # 9 tickers x 2 days cut

    append_next_day(data, cut)
    night2 = predict(any_engine, tiny_model, data=[data], device="cpu")
    [run2] = night2.runs
    assert night2.ingest.rows_added == 9 and night2.ingest.files_skipped == 1  # actx unchanged
    assert (run2.as_of, run2.target_date, run2.n_predictions) == ("2017-11-09", "2017-11-10", 9)

    again = predict(any_engine, tiny_model, data=[data], device="cpu").runs[0]
    assert (again.n_predictions, again.n_already) == (0, 9)
    assert "9 already stored by an earlier run of this model" in again.message

    # One prediction per fresh ticker per night, none for actx, all in succeeded runs.
    assert rows(any_engine, "SELECT as_of, COUNT(*) FROM predictions GROUP BY as_of ORDER BY as_of") == [
        ("2017-11-08", 9),
        ("2017-11-09", 9),
    ]
    assert rows(any_engine, "SELECT COUNT(*) FROM predictions WHERE ticker = 'actx'") == [(0,)]
    assert rows(any_engine, "SELECT status, n_predictions, device FROM runs ORDER BY run_id") == [
        ("succeeded", 9, "cpu"),
        ("succeeded", 9, "cpu"),
        ("succeeded", 0, "cpu"),
    ]

    # Outcomes join the next stored close: aaxj closed 76.24 on 2017-11-09 (from the file).
    [(actual_date, actual, last, error, naive_error, predicted)] = rows(
        any_engine,
        "SELECT actual_date, actual_close, last_close, error, naive_error, predicted_close "
        "FROM prediction_outcomes WHERE ticker = 'aaxj' AND as_of = '2017-11-08'",
    )
    expected_close = float(
        next(
            line
            for line in (shared_data / "ETFs/aaxj.us.txt").read_text().splitlines()
            if line.startswith("2017-11-09")
        ).split(",")[4]
    )
    assert (actual_date, actual) == ("2017-11-09", expected_close)
    assert error == pytest.approx(predicted - actual) and naive_error == pytest.approx(last - actual)
    # The latest night's prediction is pending (its next close is not stored yet).
    assert rows(
        any_engine, "SELECT actual_close FROM prediction_outcomes WHERE ticker='aaxj' AND as_of='2017-11-09'"
    ) == [(None,)]
    assert rows(any_engine, "SELECT as_of FROM latest_predictions WHERE ticker = 'aaxj'") == [("2017-11-09",)]


def price_scans(db_path, statements):
    """The statements whose SQLite plan reads the whole prices table (a SCAN of
    it or of an alias of it), with the plan's line: a night's cost would grow
    with years of history instead of with tickers."""
    import sqlite3

    found = []
    with sqlite3.connect(db_path) as con:
        for sql in statements:
            if not re.match(r"\s*(SELECT|WITH|INSERT|UPDATE|DELETE)", sql, re.IGNORECASE):
                continue
            names = {"prices", *re.findall(r"\bprices\s+(?:AS\s+)?(\w+)", sql, re.IGNORECASE)}
            for *_, detail in con.execute("EXPLAIN QUERY PLAN " + sql):
                words = detail.split()
                if words[0] == "SCAN" and words[1] in names - {"AS", "WHERE", "JOIN", "ON"}:
                    found.append((detail, " ".join(sql.split())[:300]))
    return found


def test_a_night_seeks_prices_by_key_and_never_scans_them(tmp_path, shared_data, tiny_model):
    """Every statement of a night (ingest, flags, catch-up, scoring, the health
    verdict), as SQLite plans it without statistics, as a fresh database has none."""
    from forecaster.serving.nightly import catch_up
    from forecaster.serving.status import health

    data, db = tmp_path / "data", tmp_path / "night.db"
    cut = cut_copy(shared_data, data, "2017-11-07")
    engine = store.connect(f"sqlite:///{db}")
    predict(engine, tiny_model, data=[data], device="cpu")
    statements = []
    sa.event.listen(engine, "connect", lambda dbapi, _: dbapi.set_trace_callback(statements.append))
    engine.dispose()  # new connections, traced (SQLite gives each statement with its values)
    append_next_day(data, cut)
    assert catch_up(engine, tiny_model, data=[data], device="cpu").runs[0].n_predictions == 9
    append_next_day(data, cut)
    assert predict(engine, tiny_model, data=[data], device="cpu").runs[0].n_predictions == 9
    health(engine, owed="2017-11-09", outcomes=False)
    assert any("FROM prices" in sql for sql in statements)  # the trace saw the night's reads
    assert price_scans(db, statements) == []


@pytest.mark.slow
def test_backfill_is_point_in_time(any_engine, shared_data, tiny_model):
    from forecaster.data.ingest import ingest

    ingest(any_engine, [shared_data])
    outcome = predict(any_engine, tiny_model, start="2017-10-02", end="2017-10-06", device="cpu")
    assert [r.as_of for r in outcome.runs] == ["2017-10-02", "2017-10-03", "2017-10-04", "2017-10-05", "2017-10-06"]
    # actx trades thinly: no row on 10-02 or 10-03, its last row on 10-04.
    assert [r.n_predictions for r in outcome.runs] == [9, 9, 10, 9, 9]
    assert [r.stale for r in outcome.runs] == [["actx"], ["actx"], [], ["actx"], ["actx"]]
    # Each prediction's last close is the close on its own as_of, not the newest one.
    mismatched = rows(
        any_engine,
        "SELECT COUNT(*) FROM predictions p JOIN prices x "
        "ON x.ticker = p.ticker AND x.date = p.as_of WHERE x.close != p.last_close",
    )
    assert mismatched == [(0,)] and rows(any_engine, "SELECT COUNT(*) FROM predictions") == [(46,)]
    assert outcome.runs[-1].target_date == "2017-10-09"  # Friday -> Monday


def test_point_in_time_ignores_later_rows(any_engine, shared_data, tiny_model):
    from forecaster.data.ingest import ingest

    ingest(any_engine, [shared_data])
    model = load_model(tiny_model, "cpu")
    run = predict(any_engine, tiny_model, as_of="2017-06-01", device="cpu").runs[0]
    [(last_close, predicted)] = rows(
        any_engine, "SELECT last_close, predicted_close FROM predictions WHERE ticker='aaxj'"
    )
    [(close,)] = rows(any_engine, "SELECT close FROM prices WHERE ticker='aaxj' AND date='2017-06-01'")
    window = np.array(
        rows(
            any_engine,
            "SELECT open, high, low, close FROM prices WHERE ticker='aaxj' AND date <= '2017-06-01' "
            f"ORDER BY date DESC LIMIT {model.input_rows}",  # the 60 rows the har60 intervals read
        )[::-1],
        dtype=np.float32,
    )
    assert last_close == close and run.target_date == "2017-06-02"
    predicted_then, _, bounds_then = model.score_with_intervals(window[None])
    assert predicted == pytest.approx(predicted_then[0], rel=1e-6)
    [stored] = rows(any_engine, "SELECT lo80, hi80, lo95, hi95 FROM predictions WHERE ticker='aaxj'")
    assert stored == pytest.approx([b[0] for b in bounds_then], rel=1e-6)


@pytest.mark.parametrize(
    "as_of, target",
    [
        ("2017-11-10", "2017-11-13"),  # Friday -> Monday
        ("2016-11-23", "2016-11-25"),  # Thanksgiving
        ("2016-12-23", "2016-12-27"),  # Christmas observed on Monday
        ("2015-07-02", "2015-07-06"),  # Independence Day observed on Friday
        ("1990-12-31", "1991-01-02"),  # older than the library's default window
    ],
)
def test_target_date_skips_weekends_and_holidays(as_of, target):
    assert next_trading_day(as_of) == target


def cuda_really_works(model_path) -> bool:
    """The oracle: does ONNX Runtime run this model on CUDA here? (Asked of ONNX Runtime itself.)"""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CUDAExecutionProvider"])
    except Exception:
        return False
    return session.get_providers()[0] == "CUDAExecutionProvider"


def test_devices_are_what_onnx_runtime_really_uses_on_this_host(any_engine, sample_dir, tiny_model):
    from forecaster.data.ingest import ingest

    ingest(any_engine, [sample_dir])
    if cuda_really_works(tiny_model):  # a GPU host: cuda and auto both run there
        assert predict(any_engine, tiny_model, device="cuda", as_of="2017-11-09").runs[0].device == "cuda"
        assert predict(any_engine, tiny_model, device="auto").runs[0].device == "cuda"
        expected = [("succeeded", "cuda", 3), ("succeeded", "cuda", 3)]
    else:  # no usable CUDA: asking for it is a clear error, recorded; auto runs on the CPU
        with pytest.raises(DeviceError, match="CUDA was requested but ONNX Runtime cannot use it here"):
            predict(any_engine, tiny_model, device="cuda")
        assert predict(any_engine, tiny_model, device="auto").runs[0].device == "cpu"
        expected = [("failed", "cuda", 0), ("succeeded", "cpu", 3)]
    assert rows(any_engine, "SELECT status, device, n_predictions FROM runs ORDER BY run_id") == expected
    assert predict(any_engine, tiny_model, device="cpu", as_of="2017-11-08").runs[0].device == "cpu"


def test_an_empty_database_is_a_clear_error(engine, tiny_model):
    with pytest.raises(DataError, match="the database holds no prices yet: ingest some first, or pass --data"):
        predict(engine, tiny_model, device="cpu")


def test_owed_dates_follow_the_runs_ledger(any_engine, shared_data, tiny_model):
    from forecaster.data.ingest import ingest

    ingest(any_engine, [shared_data])
    model = load_model(tiny_model)
    assert owed_dates(any_engine, model) == ["2017-11-10"]  # no run yet: the newest only
    predict(any_engine, tiny_model, as_of="2017-11-07", device="cpu")
    assert owed_dates(any_engine, model) == ["2017-11-08", "2017-11-09", "2017-11-10"]


@pytest.mark.slow
def test_predict_cli_and_report(tmp_path, shared_data, tiny_model, any_db_url):
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "predict",
            "--model",
            str(tiny_model),
            "--data",
            str(shared_data),
            "--from",
            "2017-10-20",
            "--to",
            "2017-11-10",
            "--db",
            any_db_url,
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("run ") == 16 and "1 stale (no close on 2017-11-10): actx" in result.output
    report = runner.invoke(
        main, ["report", "--db", any_db_url, "--since", "2017-11-01", "--plot", str(tmp_path / "r.png")]
    )
    assert report.exit_code == 0, report.output
    assert "ALL" in report.output and "9 predictions still wait for their next close" in report.output
    assert (tmp_path / "r.png").stat().st_size > 0
    # 7 as_of dates from 2017-11-01 have a next close (11-01..11-09), for 9 tickers: N = 63.
    assert any(line.startswith("ALL") and line.split()[1] == "63" for line in report.output.splitlines())
    upper = runner.invoke(main, ["report", "--db", any_db_url, "--since", "2017-11-01", "--ticker", "AAXJ"])
    assert [line.split()[:2] for line in upper.output.splitlines()[2:4]] == [["aaxj", "7"], ["ALL", "7"]]
    two = runner.invoke(
        main,
        ["report", "--db", any_db_url, "--since", "2017-11-01", "--ticker", "aaxj", "--ticker", "a"]
        + ["--plot", str(tmp_path / "two.png")],
    )
    assert [line.split()[:2] for line in two.output.splitlines()[2:5]] == [["a", "7"], ["aaxj", "7"], ["ALL", "14"]]
    assert sorted(p.name for p in tmp_path.glob("two.*.png")) == ["two.a.png", "two.aaxj.png"]
    both = runner.invoke(
        main,
        ["predict", "--model", str(tiny_model), "--as-of", "2017-11-10", "--from", "2017-11-01", "--db", any_db_url],
    )
    assert both.exit_code == 2 and "give --as-of or --from/--to, not both" in both.output


@pytest.mark.slow
def test_shards_together_make_exactly_one_unsharded_run(any_db_url, shared_data, tiny_model, tmp_path):
    from forecaster.serving.shards import Shard

    whole = store.connect(f"sqlite:///{tmp_path / 'whole.db'}")
    predict(whole, tiny_model, data=[shared_data], start="2017-11-01", device="cpu")
    sharded = store.connect(any_db_url)
    from forecaster.data.ingest import ingest

    ingest(sharded, [shared_data])
    for k in (1, 2, 3):
        predict(sharded, tiny_model, start="2017-11-01", device="cpu", shard=Shard(k, 3))
    query = "SELECT ticker, as_of, target_date, predicted_close FROM predictions ORDER BY ticker, as_of"
    expected, got = rows(whole, query), rows(sharded, query)
    assert len(expected) == 72 and got == expected
    per_shard = rows(sharded, "SELECT shard, SUM(n_predictions) FROM runs GROUP BY shard ORDER BY shard")
    assert [s for s, _ in per_shard] == ["1/3", "2/3", "3/3"] and sum(n for _, n in per_shard) == 72
    assert all(n > 0 for _, n in per_shard)  # each machine really got a share


def test_shard_membership_is_stable_and_complete():
    from forecaster.serving.shards import Shard

    tickers = [f"t{i}" for i in range(1000)]
    shards = [Shard(k, 4) for k in range(1, 5)]
    assert sorted(t for s in shards for t in tickers if t in s) == sorted(tickers)
    assert ("aaxj" in Shard(1, 2)) == ("aaxj" in Shard.parse("1/2"))
    with pytest.raises(Exception, match="K must be between 1 and N"):
        Shard.parse("3/2")


@pytest.mark.slow
def test_a_minmax_model_skips_tickers_it_never_saw_with_a_reason(engine, tmp_path):
    from helpers import make_checkpoint

    from forecaster.artifact.export import export
    from forecaster.data.ingest import ingest
    from forecaster.data.sample import write_sample_data

    model = export(make_checkpoint(tmp_path / "mm.pt", "minmax"), tmp_path / "mm.onnx").path  # trained on aa, bb
    folder = tmp_path / "d"
    for name, seed in (("aa", 1), ("zz", 2)):
        src = write_sample_data(tmp_path / f"s{seed}", tickers=1, days=60, seed=seed)[0]
        (folder / "Stocks").mkdir(parents=True, exist_ok=True)
        (folder / "Stocks" / f"{name}.us.txt").write_bytes(src.read_bytes())
    ingest(engine, [folder])
    run = predict(engine, model, device="cpu").runs[0]
    assert run.n_predictions == 1
    assert run.skipped == {"zz": "not a training ticker of this model (its minmax scaling has no numbers for it)"}
    assert "1 skipped: zz (not a training ticker" in run.message
    assert rows(engine, "SELECT ticker FROM predictions") == [("aa",)]


@pytest.mark.slow
def test_late_files_are_scored_on_catch_up_within_the_lookback(any_engine, shared_data, tiny_model, tmp_path):
    # The issue's reproduction: five tickers' 2017-11-08 closes arrive, that
    # night is scored, then four more arrive and the daemon restarts.
    from forecaster.serving.nightly import catch_up

    data = tmp_path / "data"
    cut = cut_copy(shared_data, data, "2017-11-07")
    traded = sorted(name.split(".")[0] for name, rows in cut.items() if rows)  # actx: nothing after 11-07
    early, late = traded[:5], traded[5:]
    append_next_day(data, cut, early)
    first = catch_up(any_engine, tiny_model, data=[data], device="cpu")
    assert [(r.as_of, r.n_predictions, r.late) for r in first.runs] == [("2017-11-08", 5, [])]
    append_next_day(data, cut, late)
    from forecaster.data.ingest import ingest

    ingest(any_engine, [data])
    model = load_model(tiny_model)
    assert owed_dates(any_engine, model) == ["2017-11-08"]
    again = catch_up(any_engine, tiny_model, data=[data], device="cpu")  # a restarted daemon
    [run] = again.runs
    names = late
    assert (run.as_of, run.n_predictions, run.n_already, run.late) == ("2017-11-08", 4, 5, names)
    assert f"4 late (their close arrived after this as_of was first scored): {', '.join(names)}" in run.message
    assert rows(any_engine, "SELECT COUNT(*) FROM predictions WHERE as_of = '2017-11-08'") == [(9,)]
    assert owed_dates(any_engine, model) == []  # nothing owed twice
    assert catch_up(any_engine, tiny_model, data=[data], device="cpu").runs == []
    # Outside the lookback a late ticker is no longer owed (the window is bounded).
    with store.write_transaction(any_engine) as conn:
        conn.execute(sa.text("DELETE FROM predictions WHERE ticker = :t AND as_of = '2017-11-08'"), {"t": names[0]})
    assert owed_dates(any_engine, model, lookback=1) == ["2017-11-08"]
    append_next_day(data, cut)
    catch_up(any_engine, tiny_model, data=[data], device="cpu")  # scores 11-09, and 11-08's gap again
    with store.write_transaction(any_engine) as conn:
        conn.execute(sa.text("DELETE FROM predictions WHERE ticker = :t AND as_of = '2017-11-08'"), {"t": names[0]})
    assert owed_dates(any_engine, model, lookback=1) == []
    assert owed_dates(any_engine, model, lookback=2) == ["2017-11-08"]


def test_a_late_ticker_of_another_shard_or_with_too_little_history_is_not_owed(engine, tmp_path, tiny_model):
    from forecaster.data.ingest import ingest
    from forecaster.data.sample import write_sample_data
    from forecaster.serving.shards import Shard

    write_sample_data(tmp_path / "d", tickers=6, days=60, seed=4)
    ingest(engine, [tmp_path / "d"])
    model = load_model(tiny_model)
    mine = Shard(1, 2)
    predict(engine, tiny_model, device="cpu", shard=mine)
    assert owed_dates(engine, model, mine) == []  # the other shard's tickers are not this one's debt
    young = tmp_path / "young" / "new.us.txt"  # a listing with 5 rows: too little history for seq_len 20
    young.parent.mkdir()
    full = (tmp_path / "d" / "Stocks" / "syn0000.us.txt").read_text().splitlines(keepends=True)
    young.write_text(full[0] + "".join(full[-5:]))
    ingest(engine, [young])
    assert owed_dates(engine, model) == ["2017-11-10"]  # unsharded: never ran
    predict(engine, tiny_model, device="cpu")
    assert owed_dates(engine, model) == []


def test_the_calendar_is_copied_once_and_read_from_the_database(engine, monkeypatch):
    from forecaster.data import calendar

    assert next_trading_day("2016-11-23", engine=engine) == "2016-11-25"  # fills the copy (Thanksgiving)
    with engine.connect() as conn:
        ((first, last),) = conn.exec_driver_sql("SELECT first_day, last_day FROM calendar_coverage").all()
    assert first == "2015-01-01" and last >= "2017-11-10"
    monkeypatch.setattr(calendar, "_calendar", lambda *a: pytest.fail("the library was asked again"))
    for as_of, target in [("2017-11-10", "2017-11-13"), ("2016-12-23", "2016-12-27"), ("2015-07-02", "2015-07-06")]:
        assert next_trading_day(as_of, engine=engine) == target
    monkeypatch.undo()
    assert next_trading_day("1990-12-31", engine=engine) == "1991-01-02"  # before the copy: extended back
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT first_day FROM calendar_coverage").scalar() == "1989-01-01"


def test_a_bug_during_a_run_marks_it_failed_and_keeps_its_traceback(engine, sample_dir, tiny_model, monkeypatch):
    from forecaster.artifact.model_file import ModelFile
    from forecaster.data.ingest import ingest

    ingest(engine, [sample_dir])
    monkeypatch.setattr(ModelFile, "_run", lambda self, *args: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # not dressed up as a database error
        predict(engine, tiny_model, device="cpu")
    assert rows(engine, "SELECT status, message FROM runs") == [("failed", "ZeroDivisionError: division by zero")]
    assert rows(engine, "SELECT COUNT(*) FROM predictions") == [(0,)]


def test_a_mistyped_date_fails_before_any_work(engine, tiny_model, tmp_path):
    from forecaster.errors import DataError

    with pytest.raises(DataError, match="'2017-13-01' is not a date"):
        predict(engine, tiny_model, as_of="2017-13-01", data=[tmp_path / "not even there"])


def test_a_date_without_prices_is_refused_before_any_run(any_engine, shared_data, tiny_model):
    from forecaster.errors import DataError

    predict(any_engine, tiny_model, data=[shared_data], device="cpu", as_of="2017-11-09")
    for as_of, said in [
        ("2017-11-11", "no prices stored for 2017-11-11 (a Saturday); the newest date with prices is 2017-11-10"),
        ("2030-01-02", "no prices stored for 2030-01-02 (no ticker has a close that day)"),
    ]:
        with pytest.raises(DataError, match=re.escape(said)):
            predict(any_engine, tiny_model, device="cpu", as_of=as_of)
    with pytest.raises(DataError, match="--from 2017-11-10 is after --to 2017-11-01"):
        predict(any_engine, tiny_model, device="cpu", start="2017-11-10", end="2017-11-01")
    with any_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT status, COUNT(*) FROM runs GROUP BY status").all() == [("succeeded", 1)]


def test_a_prediction_whose_window_holds_a_flagged_close_says_so(any_engine, sample_dir, tiny_model):
    """A split inside the rows the model reads (the network's 20, the
    intervals' 60) marks the prediction; one before them does not."""
    import pandas as pd

    from forecaster.data.ingest import ingest

    model = load_model(tiny_model)
    assert model.input_rows == 60 and model.seq_len == 20
    days = pd.bdate_range(end="2017-11-10", periods=120)
    for name, at in (("inside", 120 - model.input_rows + 5), ("before", 120 - model.input_rows - 5)):
        closes = 40 * np.exp(np.cumsum(np.random.default_rng(len(name)).normal(0, 0.01, 120)))
        closes[at:] /= 2  # a 2:1 split, unadjusted
        lines = [
            f"{d:%Y-%m-%d},{c:.4f},{c * 1.01:.4f},{c * 0.99:.4f},{c:.4f},100,0"
            for d, c in zip(days, closes, strict=True)
        ]
        (sample_dir / "Stocks" / f"{name}.us.txt").write_text(
            "Date,Open,High,Low,Close,Volume,OpenInt\n" + "\n".join(lines) + "\n"
        )
    ingest(any_engine, [sample_dir], settle=0)
    [run] = predict(any_engine, tiny_model, device="cpu", as_of="2017-11-10").runs
    with any_engine.connect() as conn:
        marked = dict(conn.execute(sa.text("SELECT ticker, flags FROM predictions")).all())
        split_days = conn.execute(sa.text("SELECT ticker, kind FROM price_flags ORDER BY ticker")).all()
    assert split_days == [("before", "split"), ("inside", "split")]
    # (a halved price is also beyond anything the tiny model saw: both flags, comma-separated)
    assert "flagged_prices" in marked.pop("inside").split(",")
    assert not any("flagged_prices" in (flags or "") for flags in marked.values())
    assert run.flagged_prices == ["inside"] and "1 flagged flagged_prices" in run.message
    # The night before held the split too, and its outcome is known: report counts it.
    from forecaster.serving.report import build_report

    predict(any_engine, tiny_model, device="cpu", as_of="2017-11-09")
    assert build_report(any_engine).flagged_prices == {"inside": 1}
