"""The model registry: one champion, promotions recorded, challengers scored
in the shadows, `--model champion` resolved at every run (SQLite and PostgreSQL)."""

import json
import shutil
import subprocess
import sys
import textwrap

import onnx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from helpers import register_challenger, rows

from forecaster.artifact.model_file import file_sha256, load_model
from forecaster.cli import main
from forecaster.db import store
from forecaster.errors import DatabaseError, ForecasterError
from forecaster.lifecycle import promotion
from forecaster.serving import registry
from forecaster.serving.nightly import predict


@pytest.mark.slow
def test_the_database_keeps_one_champion_and_every_decision(any_engine, tiny_model, other_tiny_model):
    first, second = file_sha256(tiny_model), file_sha256(other_tiny_model)
    promotion.promote(any_engine, tiny_model, "first")
    promotion.promote(any_engine, other_tiny_model, "override")
    assert rows(any_engine, "SELECT model_id, status FROM models ORDER BY status") == [
        (second, "champion"),
        (first, "retired"),
    ]
    assert rows(
        any_engine, "SELECT model_id, previous_model_id, decision, reason FROM promotions ORDER BY promotion_id"
    ) == [(first, None, "promoted", "first"), (second, first, "promoted", "override")]
    assert registry.champion(any_engine).model_id == second
    # The database itself refuses a second champion, whoever writes.
    with pytest.raises(DatabaseError, match="(?i)unique"), any_engine.begin() as conn:
        conn.execute(sa.text("UPDATE models SET status = 'champion' WHERE model_id = :m"), {"m": first})


@pytest.mark.slow
def test_challengers_are_scored_in_the_shadows_and_never_shown_as_latest(
    any_engine, sample_dir, tiny_model, other_tiny_model
):
    champion, challenger = file_sha256(tiny_model), file_sha256(other_tiny_model)
    promotion.promote(any_engine, tiny_model, "first")
    register_challenger(any_engine, other_tiny_model)

    outcome = predict(any_engine, "champion", data=[sample_dir], device="cpu", start="2017-10-02", end="2017-11-10")
    newest = outcome.runs[-1]
    assert outcome.model_id == champion and newest.shadows == {challenger: 3}
    assert f"shadow {challenger[:12]}: 3 predictions" in newest.message
    # Both models predicted every night, each under its own model_id and runs row...
    nights = len(outcome.runs)
    counts = dict(rows(any_engine, "SELECT model_id, COUNT(*) FROM predictions GROUP BY model_id"))
    assert counts == {champion: 3 * nights, challenger: 3 * nights}
    assert rows(any_engine, "SELECT status, COUNT(*) FROM runs GROUP BY status") == [("succeeded", 2 * nights)]
    # Each shadow run names the champion's run of the same night it was scored beside.
    pairs = (
        "SELECT COUNT(*) FROM runs s JOIN runs c ON c.run_id = s.shadow_of "
        "WHERE s.model_id = :ch AND c.model_id = :cp AND c.as_of = s.as_of AND c.shadow_of IS NULL"
    )
    assert rows(any_engine, pairs, ch=challenger, cp=champion) == [(nights,)]
    # ...the latest predictions are the champion's only...
    assert rows(any_engine, "SELECT DISTINCT model_id FROM latest_predictions") == [(champion,)]
    # ...and the scoreboard has both, each against naive on its own outcomes.
    board = {
        r[0]: r for r in rows(any_engine, "SELECT model_id, status, n, rmse, naive_rmse, ratio FROM model_scoreboard")
    }
    assert board[champion][1:3] == ("champion", 3 * (nights - 1)) and board[challenger][1] == "challenger"
    [(rmse, naive)] = rows(
        any_engine,
        "SELECT AVG(error * error), AVG(naive_error * naive_error) FROM prediction_outcomes "
        "WHERE model_id = :m AND actual_close IS NOT NULL",
        m=challenger,
    )
    assert board[challenger][3] == pytest.approx(rmse**0.5) and board[challenger][5] == pytest.approx(
        (rmse / naive) ** 0.5
    )


def test_a_promotion_between_two_runs_changes_the_model_the_next_run_writes(
    any_engine, sample_dir, tiny_model, other_tiny_model
):
    promotion.promote(any_engine, tiny_model, "first")
    predict(any_engine, "champion", data=[sample_dir], device="cpu", as_of="2017-11-09")
    promotion.promote(any_engine, other_tiny_model, "better")  # no restart: the next run resolves it again
    predict(any_engine, "champion", device="cpu", as_of="2017-11-10")
    assert rows(
        any_engine, "SELECT as_of, model_id, COUNT(*) FROM predictions GROUP BY as_of, model_id ORDER BY as_of"
    ) == [
        ("2017-11-09", file_sha256(tiny_model), 3),
        ("2017-11-10", file_sha256(other_tiny_model), 3),
    ]
    assert rows(any_engine, "SELECT DISTINCT model_id FROM latest_predictions") == [(file_sha256(other_tiny_model),)]


def test_serving_the_champion_needs_one_and_the_very_file_registered(
    db_url, sample_dir, tiny_model, other_tiny_model, tmp_path
):
    runner = CliRunner()
    args = ["predict", "--model", "champion", "--data", str(sample_dir), "--db", db_url, "--device", "cpu"]
    result = runner.invoke(main, args)
    assert result.exit_code == 1 and "no champion yet: promote one first" in result.output

    served = tmp_path / "served.onnx"
    shutil.copy(tiny_model, served)
    assert runner.invoke(main, ["promote", str(served), "--reason", "first", "--db", db_url]).exit_code == 0
    assert runner.invoke(main, args).exit_code == 0
    shutil.copy(other_tiny_model, served)  # someone overwrote the champion's file
    result = runner.invoke(main, args)
    assert result.exit_code == 1 and "has changed since it was registered as champion" in result.output


def with_held_out_ratio(source, dest, ratio):
    """A copy of an ONNX model whose metadata says `ratio` held-out RMSE ratio to naive."""
    proto = onnx.load(str(source))
    for prop in proto.metadata_props:
        if prop.key == "forecaster.metrics":
            metrics = json.loads(prop.value)
            metrics["overall"]["mean_ratio"] = metrics["overall"]["pooled_ratio"] = ratio
            prop.value = json.dumps(metrics)
    onnx.save(proto, str(dest))
    return dest


def test_promote_warns_about_a_model_worse_than_naive_and_records_it(db_url, tiny_model, tmp_path):
    runner = CliRunner()
    worse = with_held_out_ratio(tiny_model, tmp_path / "worse.onnx", 1.2)
    better = with_held_out_ratio(tiny_model, tmp_path / "better.onnx", 0.9)
    result = runner.invoke(main, ["promote", str(worse), "--reason", "override", "--db", db_url])
    assert result.exit_code == 0
    assert "worse than the naive forecast on its own held-out days (pooled RMSE ratio 1.200)" in result.output
    result = runner.invoke(main, ["promote", str(better), "--reason", "fine", "--db", db_url])
    assert result.exit_code == 0 and "warning" not in result.output
    engine = store.connect(db_url)
    metrics = [json.loads(m) for (m,) in rows(engine, "SELECT metrics FROM promotions ORDER BY promotion_id")]
    assert [m["held_out"]["pooled_ratio"] for m in metrics] == [1.2, 0.9] and all(m["manual"] for m in metrics)


def test_models_lists_status_training_end_and_realised_ratio_since_promotion(db_url, sample_dir, tiny_model):
    engine = store.connect(db_url)
    promotion.promote(engine, tiny_model, "first")
    predict(engine, "champion", data=[sample_dir], device="cpu", start="2017-10-02", end="2017-11-10")
    result = CliRunner().invoke(main, ["models", "--json", "--db", db_url])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.output)
    [(n, ratio)] = rows(engine, "SELECT n, ratio FROM model_scoreboard")
    assert entry["status"] == "champion" and entry["realised_n"] == n > 0
    assert entry["realised_ratio"] == pytest.approx(ratio)
    assert entry["trained_through"] == registry.trained_through(load_model(tiny_model).metadata)
    table = CliRunner().invoke(main, ["models", "--db", db_url]).output
    assert "champion" in table and entry["model_id"][:12] in table
    with engine.begin() as conn:  # edited by hand: a clear error naming the column and the model
        conn.execute(sa.text("UPDATE models SET metadata = '{not json'"))
    broken = CliRunner().invoke(main, ["models", "--db", db_url])
    assert broken.exit_code == 1 and broken.exception.__class__ is SystemExit
    assert f"Error: models.metadata of model {entry['model_id'][:12]} is not valid JSON" in broken.output


KILLED_MID_PROMOTION = """
import os, signal, sys
from forecaster.artifact.model_file import load_model
from forecaster.db import store
from forecaster.lifecycle import promotion
engine = store.connect(sys.argv[1])
with store.write_transaction(engine) as conn:
    promotion.decide(conn, load_model(sys.argv[2]), "promoted", "about to die", {})
    print("decided", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 before the commit
"""


@pytest.mark.slow
def test_a_kill_during_a_promotion_leaves_the_previous_champion(any_db_url, tiny_model, other_tiny_model):
    engine = store.connect(any_db_url)
    promotion.promote(engine, tiny_model, "first")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_MID_PROMOTION), any_db_url, str(other_tiny_model)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == -9 and "decided" in done.stdout
    assert rows(engine, "SELECT model_id FROM models WHERE status = 'champion'") == [(file_sha256(tiny_model),)]
    assert rows(engine, "SELECT COUNT(*) FROM promotions") == [(1,)]
    promotion.promote(engine, other_tiny_model, "after the crash")  # and the registry still works
    assert registry.champion(engine).model_id == file_sha256(other_tiny_model)


def test_a_challenger_must_be_a_known_decision(engine, tiny_model):
    with pytest.raises(ValueError, match="unknown decision"), store.write_transaction(engine) as conn:
        promotion.decide(conn, load_model(tiny_model), "maybe", "")
    with pytest.raises(ForecasterError, match="no champion yet"):
        registry.champion(engine)


def test_a_challenger_that_cannot_be_loaded_is_skipped_and_the_champion_serves(
    any_engine, sample_dir, tiny_model, other_tiny_model, tmp_path
):
    moved = tmp_path / "challenger.onnx"
    shutil.copy(other_tiny_model, moved)
    promotion.promote(any_engine, tiny_model, "first")
    register_challenger(any_engine, moved)
    moved.unlink()  # the realized gate's challenger, moved away
    outcome = predict(any_engine, "champion", data=[sample_dir], device="cpu", as_of="2017-11-10")
    [run] = outcome.runs
    challenger = file_sha256(other_tiny_model)
    assert run.n_predictions == 3 and outcome.model_id == file_sha256(tiny_model)
    assert f"challenger {challenger[:12]} not scored: " in run.message and "cannot read model file" in run.message
    [(status, shadow_of, message)] = rows(
        any_engine, "SELECT status, shadow_of, message FROM runs WHERE model_id = :m", m=challenger
    )
    assert (status, shadow_of) == ("failed", run.run_id) and message.startswith("challenger not scored: ")


def test_a_champion_that_cannot_be_loaded_fails_its_run_under_its_own_id(any_engine, sample_dir, tiny_model, tmp_path):
    served = tmp_path / "served.onnx"
    shutil.copy(tiny_model, served)
    promotion.promote(any_engine, served, "first")
    served.unlink()
    with pytest.raises(ForecasterError, match="cannot read model file"):
        predict(any_engine, "champion", data=[sample_dir], device="cpu")
    assert rows(any_engine, "SELECT status, model_id FROM runs") == [("failed", file_sha256(tiny_model))]


def test_promote_records_the_file_it_was_given(db_url, sample_dir, tiny_model, tmp_path):
    scratch, prod = tmp_path / "scratch", tmp_path / "prod"
    scratch.mkdir(), prod.mkdir()
    shutil.copy(tiny_model, scratch / "m.onnx")
    engine = store.connect(db_url)
    predict(engine, scratch / "m.onnx", data=[sample_dir], device="cpu", as_of="2017-11-09")
    shutil.copy(scratch / "m.onnx", prod / "m.onnx")
    shutil.rmtree(scratch)
    promotion.promote(engine, prod / "m.onnx", "to production")
    assert rows(engine, "SELECT path FROM models") == [(str((prod / "m.onnx").resolve()),)]
    assert predict(engine, "champion", device="cpu", as_of="2017-11-10").runs[0].n_predictions == 3


def test_latest_predictions_keep_serving_across_a_promotion_and_retire_stale_tickers(
    any_engine, sample_dir, tiny_model, other_tiny_model, tmp_path
):
    promotion.promote(any_engine, tiny_model, "first")
    predict(any_engine, "champion", data=[sample_dir], device="cpu", start="2017-10-02", end="2017-11-10")
    promotion.promote(any_engine, other_tiny_model, "new")  # not scored yet: the old champion's rows still show
    latest = "SELECT ticker, as_of, model_id, sessions_behind FROM latest_predictions ORDER BY ticker"
    old, new = file_sha256(tiny_model), file_sha256(other_tiny_model)
    assert {(a, m, s) for _, a, m, s in rows(any_engine, latest)} == {("2017-11-10", old, 0)}
    predict(any_engine, "champion", device="cpu", as_of="2017-11-10")
    assert {(a, m) for _, a, m, _ in rows(any_engine, latest)} == {("2017-11-10", new)}  # the champion first
    # A ticker that stopped trading: shown while at most RETIRED_AFTER_SESSIONS behind, then retired.
    from forecaster.db.schema import RETIRED_AFTER_SESSIONS

    (gone,) = rows(any_engine, "SELECT MIN(ticker) FROM prices")[0]
    with any_engine.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM predictions WHERE ticker = :t AND as_of > :d"), {"t": gone, "d": "2017-11-01"}
        )
    shown = {t: s for t, _, _, s in rows(any_engine, latest)}
    sessions = rows(any_engine, "SELECT COUNT(*) FROM price_dates WHERE date > '2017-11-01' AND date <= '2017-11-10'")
    behind = sessions[0][0]
    assert behind > RETIRED_AFTER_SESSIONS and gone not in shown and len(shown) == 2
    with any_engine.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM predictions WHERE ticker = :t AND as_of > :d"), {"t": gone, "d": "2017-11-06"}
        )
    predict(any_engine, "champion", device="cpu", as_of="2017-11-06")  # its last night: 4 sessions back
    shown = {t: s for t, _, _, s in rows(any_engine, latest)}
    assert shown[gone] == 4 and sorted(set(shown.values())) == [0, 4]


def test_a_challenger_that_fails_while_scoring_is_skipped_and_the_champion_serves(
    any_engine, sample_dir, tiny_model, other_tiny_model, monkeypatch
):
    from forecaster.artifact.model_file import ModelFile

    promotion.promote(any_engine, tiny_model, "first")
    register_challenger(any_engine, other_tiny_model)
    challenger, real = file_sha256(other_tiny_model), ModelFile.score_with_intervals

    def fails_for_the_challenger(model, *args, **kwargs):
        if model.sha256 == challenger:
            raise RuntimeError("ONNX Runtime: out of memory")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(ModelFile, "score_with_intervals", fails_for_the_challenger)
    [run] = predict(any_engine, "champion", data=[sample_dir], device="cpu", as_of="2017-11-10").runs
    assert run.n_predictions == 3
    assert f"challenger {challenger[:12]} not scored: RuntimeError: ONNX Runtime: out of memory" in run.message
    assert rows(any_engine, "SELECT status FROM runs WHERE model_id = :m", m=challenger) == [("failed",)]
