"""Retraining with a promotion gate, end to end on synthetic prices with
something to learn (AR(1) returns): a better challenger is promoted and
serves the next run; one short of the bar, or worse than naive, is rejected
and the champion keeps serving; a kill leaves the champion; the realized
gate waits for its nights; the daemon's retrain job (SQLite and PostgreSQL)."""

import dataclasses
import datetime as dt
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from helpers import start_daemon, wait_for

from forecaster.artifact.export import export
from forecaster.artifact.model_file import file_sha256, load_model
from forecaster.data.ingest import ingest
from forecaster.data.sample import write_sample_data
from forecaster.data.windows import latest_windows
from forecaster.db import store
from forecaster.errors import DataError
from forecaster.lifecycle import promotion
from forecaster.lifecycle.config import DaemonConfig, RetrainConfig
from forecaster.lifecycle.jobs import RetrainJob
from forecaster.lifecycle.retrain import retrain, settings_of
from forecaster.lifecycle.schedule import make_trigger
from forecaster.serving import registry
from forecaster.serving.nightly import predict
from forecaster.training import checkpoint
from forecaster.training.config import TrainConfig
from forecaster.training.job import TrainJob, run_training

GATE_DAYS = 30
TICKERS = 6
QUICK = TrainConfig(hidden=8, layers=1, epochs=8, batch_size=64, device="cpu")


def rows(engine, sql, **params):
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Prices (6 tickers, 400 business days, AR(0.7) returns) and three
    champions trained on them: a good one, one made worse than naive by
    hand (its head adds a daily move to every forecast), and a barely trained minmax one."""
    root = tmp_path_factory.mktemp("retrain")
    write_sample_data(root / "data", tickers=TICKERS, days=400, seed=3, ar=0.7)
    engine = store.connect(f"sqlite:///{root / 'train.db'}")
    ingest(engine, [root / "data"])
    tickers = sorted(t for (t,) in rows(engine, "SELECT ticker FROM tickers"))

    def champion(name, config, change=None):
        out = root / f"{name}.pt"
        run_training(engine, TrainJob(tickers, False, config, out))
        if change:
            data = checkpoint.load(out)
            change(data["state_dict"])
            checkpoint.save(out, data)
        return export(out, root / f"{name}.onnx").path

    def biased(state):
        state["head.bias"] += 1.0  # relative scaling: every forecast one typical daily move up

    return {
        "data": root / "data",
        "good": champion("good", QUICK),
        "broken": champion("broken", QUICK, biased),
        "minmax": champion("minmax", dataclasses.replace(QUICK, scaling="minmax", epochs=None, steps=2)),
    }


def settings(tmp_path, **changes):
    return RetrainConfig(**{"gate_days": GATE_DAYS, "models_dir": tmp_path / "models", "device": "cpu", **changes})


def served_model(engine, as_of):
    return rows(engine, "SELECT DISTINCT model_id FROM predictions WHERE as_of = :d", d=as_of)


@pytest.mark.slow
def test_a_better_challenger_is_promoted_and_serves_the_next_run(any_db_url, world, tmp_path):
    engine = store.connect(any_db_url)
    promotion.promote(engine, world["broken"], "first")
    first = predict(engine, "champion", data=[world["data"]], device="cpu").runs[0]
    broken = file_sha256(world["broken"])
    assert served_model(engine, first.as_of) == [(broken,)]

    [outcome] = retrain(engine, settings(tmp_path))
    assert outcome.decision == "promoted", outcome.reason
    m = outcome.metrics
    assert m["challenger_rmse"] < m["champion_rmse"] and m["challenger_rmse"] <= m["naive_rmse"]
    assert (m["n"], m["days"], m["champion"]) == (TICKERS * GATE_DAYS, GATE_DAYS, broken)

    # The figures are the nightly run's, point-in-time: each gate day scored
    # from the windows `predict` would have read that night.
    sessions = [d for (d,) in rows(engine, "SELECT DISTINCT date FROM prices ORDER BY date")]
    gate_as_ofs = sessions[-GATE_DAYS - 1 : -1]
    assert (m["first_day"], m["last_day"], m["trained_through"]) == (gate_as_ofs[0], gate_as_ofs[-1], gate_as_ofs[0])
    champion = load_model(world["broken"])
    errors, naive = [], []
    for as_of, target in zip(gate_as_ofs, sessions[-GATE_DAYS:], strict=True):
        batch = latest_windows(engine, as_of, champion.input_rows)
        actual = dict(rows(engine, "SELECT ticker, close FROM prices WHERE date = :d", d=target))
        predicted, _ = champion.score(batch.windows)
        for t, p, last in zip(batch.tickers, predicted, batch.last_close, strict=True):
            errors.append((p - actual[t]) / last)
            naive.append((last - actual[t]) / last)
    assert m["champion_rmse"] == pytest.approx(np.sqrt(np.mean(np.square(errors))), rel=1e-5)
    assert m["naive_rmse"] == pytest.approx(np.sqrt(np.mean(np.square(naive))), rel=1e-5)

    # The challenger was made like the champion, on data that stops before the gate.
    challenger = load_model(outcome.path)
    expected = {**dataclasses.asdict(settings_of(champion, "cpu"))}
    assert challenger.metadata["train_config"] == expected
    assert registry.data_through(challenger.metadata) == gate_as_ofs[0]
    assert rows(engine, "SELECT model_id, status FROM models ORDER BY status") == [
        (outcome.model_id, "champion"),
        (broken, "retired"),
    ]
    [(decision, previous, reason)] = rows(
        engine, "SELECT decision, previous_model_id, reason FROM promotions WHERE model_id = :m", m=outcome.model_id
    )
    assert (decision, previous) == ("promoted", broken) and reason == outcome.reason

    # The next run, without a restart, serves the new champion.
    again = predict(engine, "champion", device="cpu").runs[0]
    assert again.as_of == first.as_of and served_model(engine, first.as_of) == sorted([(broken,), (outcome.model_id,)])
    assert rows(engine, "SELECT DISTINCT model_id FROM latest_predictions") == [(outcome.model_id,)]


@pytest.mark.slow
def test_a_challenger_short_of_the_bar_is_rejected_and_the_champion_keeps_serving(engine, world, tmp_path, monkeypatch):
    ingest(engine, [world["data"]])
    promotion.promote(engine, world["broken"], "first")

    def read_again(*_):
        raise AssertionError("the retrain read the prices twice")

    monkeypatch.setattr("forecaster.training.job.load_universe", read_again)  # the gate's read is reused
    [outcome] = retrain(engine, settings(tmp_path, min_improvement=0.9))  # 90% better: out of reach
    m = outcome.metrics
    # Better than the broken champion beyond noise, but not by 90%: short of the bar.
    assert m["z"] >= 2 and m["challenger_rmse"] > 0.1 * m["champion_rmse"] and m["min_improvement"] == 0.9
    assert outcome.decision == "rejected" and "rejected (short of the bar (90.0% better" in outcome.reason
    good = file_sha256(world["broken"])
    assert registry.champion(engine).model_id == good
    assert rows(engine, "SELECT status FROM models WHERE model_id = :m", m=outcome.model_id) == [("rejected",)]
    run = predict(engine, "champion", device="cpu").runs[0]
    assert served_model(engine, run.as_of) == [(good,)] and run.shadows == {}  # a rejected model is not scored


@pytest.mark.slow
def test_a_challenger_worse_than_naive_is_rejected(any_db_url, world, tmp_path):
    engine = store.connect(any_db_url)
    ingest(engine, [world["data"]])
    promotion.promote(engine, world["minmax"], "first")
    [outcome] = retrain(engine, settings(tmp_path))
    m = outcome.metrics
    assert m["challenger_rmse"] > m["naive_rmse"]
    assert outcome.decision == "rejected" and "naive" in outcome.reason.split(":")[0]
    assert registry.champion(engine).model_id == file_sha256(world["minmax"])
    assert rows(engine, "SELECT decision FROM promotions ORDER BY promotion_id") == [("promoted",), ("rejected",)]


@pytest.mark.slow
def test_a_kill_during_retrain_leaves_the_champion_untouched(db_url, world, tmp_path):
    engine = store.connect(db_url)
    ingest(engine, [world["data"]])
    long = tmp_path / "long.pt"  # the good champion's file, with settings that train for minutes
    data = checkpoint.load(world["good"].with_suffix(".pt"))
    data["train_config"] = {**data["train_config"], "epochs": 100_000}
    checkpoint.save(long, data)
    promotion.promote(engine, export(long, tmp_path / "long.onnx").path, "first")
    before = rows(engine, "SELECT model_id, status FROM models"), rows(engine, "SELECT * FROM promotions")

    cli = [sys.executable, "-m", "forecaster", "retrain", "--db", db_url, "--models-dir", str(tmp_path / "models")]
    proc = subprocess.Popen([*cli, "--train-device", "cpu"], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "epoch" in line.lower() or "step" in line.lower():  # training is under way
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -9
    assert (rows(engine, "SELECT model_id, status FROM models"), rows(engine, "SELECT * FROM promotions")) == before
    assert len(rows(engine, "SELECT 1 FROM models WHERE status = 'champion'")) == 1


def cut_files(source: Path, dest: Path, last_date: str) -> None:
    for path in source.rglob("*.txt"):
        lines = path.read_text().splitlines(keepends=True)
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join([lines[0], *(line for line in lines[1:] if line[:10] <= last_date)]))


@pytest.mark.slow
def test_the_realized_gate_waits_for_its_nights_then_decides(engine, world, tmp_path):
    sessions = sorted({line[:10] for p in world["data"].rglob("*.txt") for line in p.read_text().splitlines()[1:]})
    cut = tmp_path / "cut"
    cut_files(world["data"], cut, sessions[-8])
    ingest(engine, [cut])
    promotion.promote(engine, world["broken"], "first")  # a challenger beats it beyond noise
    config = settings(tmp_path, gate="realized", gate_days=5)

    # No challenger yet: one is trained on every stored price and registered.
    [made] = retrain(engine, config)
    assert made.decision == "challenger" and registry.challengers(engine)[0].model_id == made.model_id
    assert registry.data_through(load_model(made.path).metadata) == sessions[-8]
    # Without nights of evidence it waits (and no second challenger is made).
    [waiting] = retrain(engine, config)
    assert (waiting.decision, waiting.model_id) == ("waiting", made.model_id) and "0 of 5 nights" in waiting.reason

    # Seven more nights arrive, each scored by champion and challenger.
    predict(engine, "champion", data=[world["data"]], device="cpu", start=sessions[-8], end=sessions[-1])
    judged, new = retrain(engine, config)
    m = judged.metrics
    assert judged.model_id == made.model_id and (m["gate"], m["days"], m["n"]) == ("realized", 5, 5 * TICKERS)
    assert (m["first_day"], m["last_day"]) == (sessions[-6], sessions[-2])  # the last 5 with outcomes
    assert m["z"] >= 2 and m["challenger_rmse"] <= min(m["champion_rmse"], m["naive_rmse"])
    assert judged.decision == "promoted" and registry.champion(engine).model_id == made.model_id
    [(rmse,)] = rows(
        engine,
        "SELECT AVG((error / last_close) * (error / last_close)) FROM prediction_outcomes "
        "WHERE model_id = :m AND as_of >= :d AND actual_close IS NOT NULL",
        m=made.model_id,
        d=sessions[-6],
    )
    assert m["challenger_rmse"] == pytest.approx(np.sqrt(rmse))
    # Then the next challenger is on its way.
    assert new.decision == "challenger" and registry.challengers(engine)[0].model_id == new.model_id


def test_retrain_needs_a_champion_and_enough_sessions(engine, world, tmp_path):
    ingest(engine, [world["data"]])
    with pytest.raises(registry.NoChampionError):
        retrain(engine, settings(tmp_path))
    promotion.promote(engine, world["good"], "first")
    with pytest.raises(DataError, match="too few to hold back 400 gate days"):
        retrain(engine, settings(tmp_path, gate_days=400))


@pytest.mark.slow
def test_the_daemon_retrains_one_job_at_a_time_and_owes_a_missed_retrain(engine, world, tmp_path):
    ingest(engine, [world["data"]])
    promotion.promote(engine, world["broken"], "first")  # the retrain's challenger replaces it
    config = DaemonConfig(
        db_url=str(engine.url), model=Path("champion"), retrain_cron="0 6 * * 6", retrain=settings(tmp_path)
    )
    busy = threading.Lock()
    promoted = []
    job = RetrainJob(engine, config, threading.Event(), busy, after_promotion=lambda: promoted.append(True))
    trigger = make_trigger("0 6 * * 6", "UTC")
    newest = registry.newest_registered_at(engine)  # the champion, made minutes ago
    # No scheduled time between the newest model and now: nothing owed; a week later, one is.
    assert job.owed(trigger, newest + dt.timedelta(seconds=1)) is (
        trigger.get_next_fire_time(None, newest) <= newest + dt.timedelta(seconds=1)
    )
    assert job.owed(trigger, newest + dt.timedelta(days=8)) is True

    # While a scoring run holds the lock, the retrain waits for it.
    busy.acquire()
    thread = threading.Thread(target=job)
    thread.start()
    thread.join(timeout=2)
    assert thread.is_alive() and len(rows(engine, "SELECT 1 FROM models")) == 1
    busy.release()
    thread.join()
    [decision] = [d for (d,) in rows(engine, "SELECT decision FROM promotions ORDER BY promotion_id")][1:]
    assert decision == "promoted" and promoted == [True]  # a new champion scores at once
    assert job.owed(trigger, dt.datetime.now(dt.UTC)) is False  # the retrain just made a model


def test_a_failing_retrain_job_logs_and_keeps_the_daemon(engine, tmp_path, caplog):
    config = DaemonConfig(db_url=str(engine.url), model=Path("champion"), retrain=settings(tmp_path))
    RetrainJob(engine, config, threading.Event(), threading.Lock())()  # no champion: an error, not a crash
    assert "retrain failed, the champion keeps serving: no champion yet" in caplog.text


@pytest.mark.parametrize(
    ("challenger", "champion", "naive", "z", "min_improvement", "decision", "why"),
    [
        (1.00, 1.00, 1.10, 0.0, 0.0, False, "not better than the champion (a tie)"),  # ties keep the champion
        (0.999, 1.00, 1.10, 1.2, 0.0, False, "not better than the champion beyond noise"),
        (0.99, 1.00, 1.10, 3.0, 0.0, True, ""),
        (0.99, 1.00, 1.10, 3.0, 0.02, False, "short of the bar (2.0% better than the champion)"),  # 1% better
        (0.97, 1.00, 1.10, 3.0, 0.02, True, ""),
        (0.90, 1.20, 0.89, 5.0, 0.0, False, "worse than naive"),  # beats the champion, not naive
        (1.30, 1.20, 1.00, -4.0, 0.0, False, "worse than the champion; worse than naive"),
    ],
)
def test_the_gate_rule(challenger, champion, naive, z, min_improvement, decision, why):
    from forecaster.lifecycle.gate import GateFigures, judge

    figures = GateFigures("backtest", 100, 10, "2017-01-02", "2017-01-13", champion, challenger, naive, z)
    promote, reason = judge(figures, min_improvement)
    assert promote is decision
    assert reason.startswith("promoted: " if decision else f"rejected ({why}): ")
    assert f"ratios {challenger / champion:.4f} and {challenger / naive:.4f}" in reason
    assert f"paired improvement {z:+.2f} standard errors, 2 needed" in reason


def test_the_gate_on_flat_closes_says_n_a_and_stores_no_nan():
    """Every pair flat: naive made no error, so no ratio to it exists; the
    reason says so and the stored figures are JSON (null, not NaN)."""
    from forecaster.files import strict_json
    from forecaster.lifecycle.gate import GateFigures, judge

    figures = GateFigures("backtest", 40, 20, "2017-01-02", "2017-01-27", 0.0, 0.0, 0.0, 0.0)
    promote, reason = judge(figures, 0.0)
    assert not promote and "(ratios n/a and n/a;" in reason and "nan" not in reason
    plain = figures.to_plain()
    assert plain["challenger_vs_naive"] is None and "NaN" not in strict_json(plain)


def test_two_copies_of_one_model_are_a_tie_and_the_champion_stays(engine, world):
    from forecaster.data.universe import load_universe
    from forecaster.lifecycle.gate import backtest, judge

    ingest(engine, [world["data"]])
    model = load_model(world["good"])
    universe = load_universe(engine, model.training_tickers)
    figures = backtest(universe, model, model, int(np.unique(universe.dates)[-GATE_DAYS]))
    assert figures.challenger_rmse == figures.champion_rmse and figures.z == 0.0
    promote, reason = judge(figures, 0.0)
    assert not promote and reason.startswith("rejected (not better than the champion (a tie)): ")


@pytest.mark.slow
def test_retrain_and_models_from_the_command_line(db_url, world, tmp_path):
    from click.testing import CliRunner

    from forecaster.cli import main

    runner = CliRunner()
    engine = store.connect(db_url)
    ingest(engine, [world["data"]])
    assert runner.invoke(main, ["promote", str(world["good"]), "--reason", "first", "--db", db_url]).exit_code == 0
    args = ["--db", db_url, "--models-dir", str(tmp_path / "m"), "--train-device", "cpu", "--quiet"]
    # A 90% improvement on a good champion is out of reach: rejected, and listed so.
    result = runner.invoke(main, ["retrain", "--gate-days", str(GATE_DAYS), "--min-improvement", "0.9", *args])
    assert result.exit_code == 0, result.output
    [(decision, reason)] = rows(engine, "SELECT decision, reason FROM promotions WHERE reason != 'first'")
    assert decision == "rejected" and f"rejected: {tmp_path / 'm'}" in result.output and reason in result.output
    listed = runner.invoke(main, ["models", "--db", db_url]).output
    assert "rejected" in listed and "champion" in listed
    # For a cron job's log collector: every stderr line an object, the decision with its reason as fields.
    logged = runner.invoke(
        main, ["retrain", "--gate-days", str(GATE_DAYS), "--min-improvement", "0.9", "--log-format", "json", *args]
    )
    assert logged.exit_code == 0 and logged.stdout == "", logged.output
    events = [json.loads(line) for line in logged.stderr.splitlines()]
    [decision] = [e for e in events if e["event"] == "retrain_decision"]
    newest = rows(engine, "SELECT reason FROM promotions ORDER BY promotion_id DESC LIMIT 1")[0][0]
    assert decision["decision"] == "rejected" and decision["reason"] == newest
    assert {e["event"] for e in events} == {"retrain_step", "retrain_decision"}


@pytest.mark.slow
def test_the_daemon_serves_the_champion_and_runs_a_missed_retrain_on_start(db_url, world, tmp_path):
    engine = store.connect(db_url)
    ingest(engine, [world["data"]])
    promotion.promote(engine, world["broken"], "first")  # the missed retrain's challenger replaces it
    with engine.begin() as conn:  # the champion was made long before the last scheduled retrain
        conn.execute(sa.text("UPDATE models SET created_at = '2020-01-01T00:00:00+00:00'"))
    log_path = tmp_path / "daemon.log"
    models_dir = str(tmp_path / "models")
    extra = ["--retrain-cron", "0 0 * * *", "--gate-days", str(GATE_DAYS), "--models-dir", models_dir]
    proc = start_daemon(db_url, "champion", log_path, *extra, "--train-device", "cpu")
    try:
        log = wait_for(log_path, "next retrain at", proc, timeout=180)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    # First the catch-up with the champion, then the owed retrain, then both schedules.
    assert log.index("predictions for") < log.index("a scheduled retrain was missed") < log.index("retrain: ")
    [(decision,)] = rows(engine, "SELECT decision FROM promotions WHERE reason != 'first'")
    assert decision == "promoted" and "retrain: promoted" in log and "next nightly at" in log
    served = rows(engine, "SELECT DISTINCT model_id FROM runs WHERE shadow_of IS NULL AND status = 'succeeded'")
    champion = registry.champion(engine).model_id
    # The promotion is followed at once by a run of the new champion.
    assert (champion,) in served and len(served) == 2


@pytest.mark.slow
@pytest.mark.parametrize("stopped_after", ["nothing", "run_training", "export", "verify", "backtest"])
def test_a_stop_at_any_point_before_the_decision_records_nothing(engine, world, tmp_path, monkeypatch, stopped_after):
    from forecaster.lifecycle import retrain as retrain_module
    from forecaster.lifecycle.retrain import RetrainStoppedError

    ingest(engine, [world["data"]])
    promotion.promote(engine, world["broken"], "first")
    before = rows(engine, "SELECT model_id, status FROM models"), rows(engine, "SELECT * FROM promotions")
    asked = [stopped_after == "nothing"]  # SIGTERM sets this in the command; here the step before does

    def then_stop(name):
        real = getattr(retrain_module.gate if name == "backtest" else retrain_module, name)

        def wrapped(*args, **kwargs):
            result = real(*args, **kwargs)
            asked[0] = True
            return result

        return wrapped

    if stopped_after == "backtest":
        monkeypatch.setattr(retrain_module.gate, "backtest", then_stop("backtest"))
    elif stopped_after != "nothing":
        monkeypatch.setattr(retrain_module, stopped_after, then_stop(stopped_after))
    with pytest.raises(RetrainStoppedError, match="nothing recorded, the champion keeps serving") as stopped:
        retrain(engine, settings(tmp_path), should_stop=lambda: asked[0])
    assert "resume" not in str(stopped.value)
    assert (rows(engine, "SELECT model_id, status FROM models"), rows(engine, "SELECT * FROM promotions")) == before
    # Nothing left behind: no state to `train --resume` (it is no retrain), no half-made challenger.
    assert list((tmp_path / "models").iterdir()) == []


def test_challengers_made_in_the_same_second_get_their_own_files(tmp_path):
    from forecaster.lifecycle.retrain import challenger_path

    paths = {challenger_path(tmp_path) for _ in range(3)}
    assert len(paths) == 3 and all(p.with_suffix(".onnx").exists() for p in paths)
