import json

import numpy as np
import pytest
from click.testing import CliRunner

from forecaster.cli import main

TINY = ["--epochs", "2", "--hidden", "8", "--layers", "1"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_train_writes_checkpoint_metrics_and_plots(tmp_path, sample_dir, db_url):
    out = tmp_path / "exports" / "m.pt"
    result = invoke(
        "train", "--data", sample_dir, "--db", db_url, "--tickers", "syn0000,syn0001", "--out", out, "--quiet", *TINY
    )
    assert result.exit_code == 0, result.output
    assert "naive" in result.output and "syn0001" in result.output
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    m = metrics["tickers"]["syn0000"]
    for key in (
        "test_rmse",
        "test_mae",
        "naive_rmse",
        "naive_mae",
        "direction_accuracy",
        "n_test",
        "test_start",
        "test_end",
    ):
        assert key in m
    assert m["test_start"] <= m["test_end"] == "2017-11-10"
    assert metrics["config"]["epochs"] == 2 and "overall" in metrics
    for name in ("m.pt", "m.loss.png", "m.test.syn0000.png", "m.test.syn0001.png"):
        assert (out.parent / name).stat().st_size > 0


def test_train_all_skips_short_tickers_with_a_warning(tmp_path, db_url):
    from forecaster.data.sample import write_sample_data

    write_sample_data(tmp_path / "d", tickers=2, days=120, seed=1)
    (tmp_path / "d" / "Stocks" / "short.us.txt").write_text("Date,Open,High,Low,Close\n2017-01-03,1,1,1,1\n")
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            str(tmp_path / "d"),
            "--db",
            db_url,
            "--all",
            "--out",
            str(tmp_path / "m.pt"),
            "--quiet",
            *TINY,
        ],
    )
    assert result.exit_code == 0
    assert "warning: skipping short: 1 rows, fewer than 30 needed" in result.output


def test_unknown_ticker(tmp_path, sample_dir, db_url):
    invoke("ingest", sample_dir, "--db", db_url)
    result = invoke("train", "--db", db_url, "--tickers", "nope", "--out", tmp_path / "m.pt")
    assert result.exit_code == 1
    assert result.output == "Error: unknown ticker nope: not in the database (3 tickers stored)\n"


def test_too_little_history_names_ticker_and_rows(tmp_path, sample_dir, db_url):
    invoke("ingest", sample_dir, "--db", db_url)
    result = invoke("train", "--db", db_url, "--tickers", "syn0000", "--seq-len", "115", "--out", tmp_path / "m.pt")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ticker syn0000 has 120 rows; with --seq-len 115 it needs at least 125")
    assert not (tmp_path / "m.pt").exists()


def test_tickers_or_all_is_required(tmp_path, db_url):
    result = invoke("train", "--db", db_url, "--out", tmp_path / "m.pt")
    assert result.exit_code == 2 and "give either --tickers A,B or --all" in result.output


@pytest.mark.slow
def test_a_model_that_kept_the_naive_epoch_says_so_and_its_export_verifies(tmp_path, sample_dir, db_url):
    # With a learning rate of 0 no epoch can beat the starting weights, on any CPU:
    # the kept model is the zero head, i.e. the naive forecast itself.
    from forecaster.data.ingest import ingest
    from forecaster.db import store
    from forecaster.training.job import TrainJob, run_training
    from forecaster.training.train import TrainConfig

    engine = store.connect(db_url)
    ingest(engine, [sample_dir])
    out = tmp_path / "naive.pt"
    job = run_training(engine, TrainJob([], True, TrainConfig(epochs=3, hidden=8, lr=0.0), out))
    overall = job.metrics["overall"]
    assert (overall["kept_epoch"], overall["is_naive"]) == (0, True)
    assert overall["tickers_worse_than_naive"] == 0 and overall["tickers_level_with_naive"] == 3
    assert job.verdict.startswith(
        "No epoch beat the naive forecast on validation beyond noise, so the model kept its "
        "starting weights and repeats the last close"
    )
    assert "WORSE" not in job.verdict and "worse than naive" not in job.table
    assert job.table.count("same as naive") == 3
    saved = json.loads(out.with_suffix(".metrics.json").read_text())["overall"]
    assert (saved["kept_epoch"], saved["is_naive"]) == (0, True)
    assert invoke("export", out).exit_code == 0
    result = invoke("verify", out.with_suffix(".onnx"))
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_the_issue_s_real_data_run_exports_a_file_that_verifies(tmp_path, shared_data, db_url):
    data = tmp_path / "d"
    for name in ("ETFs/aaxj.us.txt", "Stocks/a.us.txt"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes((shared_data / name).read_bytes())
    out = tmp_path / "m.pt"
    trained = invoke(
        "train", "--data", data, "--db", db_url, "--tickers", "aaxj,a", "--epochs", "5", "--out", out, "--quiet"
    )
    assert trained.exit_code == 0, trained.output
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())["overall"]
    assert metrics["is_naive"] == (metrics["kept_epoch"] == 0)
    assert ("No epoch beat the naive forecast" in trained.output) == metrics["is_naive"]
    assert invoke("export", out).exit_code == 0
    verified = invoke("verify", out.with_suffix(".onnx"))
    assert verified.exit_code == 0, verified.output


def test_verdicts_count_ratios_within_float_noise_of_one_as_level():
    from forecaster.evidence import ratio_summary
    from forecaster.training.job import verdict

    def metrics(*ratios, is_naive=False):
        names = {f"t{i}": r for i, r in enumerate(ratios)}
        return {"overall": {"n_tickers": len(ratios), "is_naive": is_naive, **ratio_summary(names, 1.0)}}

    assert verdict(metrics(1.0000001, 0.9999999)).startswith("The model is level with the naive forecast on every")
    assert verdict(metrics(0.95, 1.0000001, 1.2)).startswith(
        "Of 3 tickers with a ratio the model is 1 better than, 1 level with, 1 worse than the naive forecast."
    )


def test_summaries_are_numbers_with_a_meaning_even_with_flat_tickers():
    """A ticker whose held-out closes never moved has no ratio (naive made no
    error): left out of the mean and median, counted and named; the pooled
    ratio stands beside them. The verdict never says nan."""
    from forecaster.evidence import pooled_ratio, ratio_summary
    from forecaster.training.job import verdict

    summary = ratio_summary({"aa": 0.9, "flat": float("nan"), "bb": 1.1}, 0.98)
    assert (summary["mean_ratio"], summary["median_ratio"], summary["pooled_ratio"]) == (1.0, 1.0, 0.98)
    assert summary["tickers_undefined_ratio"] == ["flat"]
    said = verdict({"overall": {"n_tickers": 3, **summary}})
    assert "nan" not in said and "1 ticker(s) have no ratio" in said and ": flat" in said
    # Every ticker flat: nothing defined, and it says so rather than print nan.
    nothing = ratio_summary({"flat": float("nan")}, pooled_ratio(np.ones(3), np.ones(3), np.ones(3)))
    assert nothing["mean_ratio"] is None and nothing["pooled_ratio"] is None
    assert "undefined (no close ever moved)" in verdict({"overall": {"n_tickers": 1, **nothing}})
    # Two rows: still a number.
    assert pooled_ratio(np.array([10.0, 10.5]), np.array([10.2, 10.4]), np.array([10.0, 10.2])) > 0


def test_train_on_an_empty_or_missing_database_names_it(tmp_path):
    from forecaster.db import store

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    missing = invoke("train", "--db", url, "--all", "--out", tmp_path / "m.pt")
    assert missing.exit_code == 1  # training only reads: it creates no database
    assert missing.output == f"Error: cannot open database '{url}': no such file\n"
    assert not (tmp_path / "empty.db").exists()
    store.connect(url).dispose()
    result = invoke("train", "--db", url, "--all", "--out", tmp_path / "m.pt")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: the database {url} holds no prices: ingest some first (forecaster ingest PATH) or pass --data\n"
    )


def test_cuda_asked_for_where_torch_cannot_use_it_is_one_line(tmp_path, sample_dir, db_url):
    import torch

    result = invoke(
        "train", "--data", sample_dir, "--db", db_url, "--all", "--out", tmp_path / "m.pt", "--device", "cuda", *TINY
    )
    if torch.cuda.is_available():  # a GPU machine: it trains there, and says so in the checkpoint
        from forecaster.training import checkpoint

        assert result.exit_code == 0 and checkpoint.load(tmp_path / "m.pt")["provenance"]["device"] == "cuda"
    else:
        assert result.exit_code == 1
        assert result.output.splitlines()[-1].startswith("Error: CUDA was requested but torch cannot use it here")
        assert not (tmp_path / "m.pt").exists()


def test_many_tickers_get_a_summary_plot_and_a_chosen_few(tmp_path, db_url):
    from forecaster.data.sample import write_sample_data

    write_sample_data(tmp_path / "d", tickers=25, days=80, seed=2)
    out = tmp_path / "m.pt"
    result = invoke("train", "--data", tmp_path / "d", "--db", db_url, "--all", "--out", out, "--steps", "5", *TINY[2:])
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in tmp_path.glob("m.*.png"))
    assert "m.ratios.png" in pngs and "m.loss.png" in pngs
    assert len([p for p in pngs if p.startswith("m.test.")]) == 6  # best, median and worst two
    assert result.output.count("..2017-11-10") == 25  # 25 table rows: up to 30 are all printed
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    assert len(metrics["tickers"]) == 25 and metrics["overall"]["steps"] == 5
    assert metrics["overall"]["unit"] == "step" and metrics["overall"]["world_size"] == 1


def test_the_table_of_a_large_universe_shows_the_best_median_and_worst():
    from forecaster.training.job import held_out_table

    row = {
        "n_test": 9,
        "test_start": "2017-01-02",
        "test_end": "2017-01-12",
        "test_rmse": 1.0,
        "naive_rmse": 1.0,
        "test_mae": 1.0,
        "naive_mae": 1.0,
        "direction_accuracy": 0.5,
    }
    metrics = {"tickers": {f"t{i:02d}": {**row, "ratio": 0.9 + i / 100} for i in range(40)}}
    table = held_out_table(metrics)
    shown = [line.split()[0] for line in table.splitlines()[2:-1]]
    assert shown == ["t00", "t01", "t19", "t20", "t38", "t39"]
    assert table.endswith("(the best, median and worst 2 of 40 tickers by ratio; all of them are in the metrics file)")


def test_a_universe_with_a_flat_ticker_trains_and_its_summaries_are_numbers(tmp_path):
    from forecaster.data.sample import write_sample_data

    data = tmp_path / "d"
    write_sample_data(data, tickers=2, days=200, seed=5)
    rows = [f"{d:%Y-%m-%d},5,5,5,5,0,0" for d in __import__("pandas").bdate_range(end="2017-11-10", periods=200)]
    (data / "Stocks" / "flat.us.txt").write_text("Date,Open,High,Low,Close,Volume,OpenInt\n" + "\n".join(rows) + "\n")
    db, out = f"sqlite:///{tmp_path / 'f.db'}", tmp_path / "m.pt"
    trained = invoke("train", "--all", "--data", data, "--db", db, "--out", out, *TINY)
    assert trained.exit_code == 0, trained.output
    assert "nan" not in trained.output.lower() and "have no ratio" in trained.output and ": flat" in trained.output

    def refuse(constant):
        raise ValueError(f"metrics.json holds {constant}: not JSON")

    metrics = json.loads(out.with_suffix(".metrics.json").read_text(), parse_constant=refuse)
    overall = metrics["overall"]
    assert metrics["tickers"]["flat"]["ratio"] is None
    assert overall["tickers_undefined_ratio"] == ["flat"] and overall["pooled_ratio"] > 0
    assert overall["mean_ratio"] > 0 and overall["n_tickers"] == 3
