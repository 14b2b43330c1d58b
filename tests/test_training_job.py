import json

from click.testing import CliRunner

from forecaster.cli import main

TINY = ["--epochs", "2", "--hidden", "8", "--layers", "1"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_train_writes_checkpoint_metrics_and_plots(tmp_path, sample_dir, db_url):
    out = tmp_path / "exports" / "m.pt"
    result = invoke("train", "--data", sample_dir, "--db", db_url, "--tickers", "syn0000,syn0001",
                    "--out", out, "--quiet", *TINY)
    assert result.exit_code == 0, result.output
    assert "naive" in result.output and "syn0001" in result.output
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    m = metrics["tickers"]["syn0000"]
    for key in ("test_rmse", "test_mae", "naive_rmse", "naive_mae", "direction_accuracy", "n_test",
                "test_start", "test_end"):
        assert key in m
    assert m["test_start"] <= m["test_end"] == "2017-11-10"
    assert metrics["config"]["epochs"] == 2 and "overall" in metrics
    for name in ("m.pt", "m.loss.png", "m.test.syn0000.png", "m.test.syn0001.png"):
        assert (out.parent / name).stat().st_size > 0


def test_train_all_skips_short_tickers_with_a_warning(tmp_path, db_url):
    from forecaster.sample import write_sample_data
    write_sample_data(tmp_path / "d", tickers=2, days=120, seed=1)
    (tmp_path / "d" / "Stocks" / "short.us.txt").write_text(
        "Date,Open,High,Low,Close\n2017-01-03,1,1,1,1\n")
    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "d"), "--db", db_url, "--all",
                                       "--out", str(tmp_path / "m.pt"), "--quiet", *TINY])
    assert result.exit_code == 0
    assert "warning: skipping short: 1 rows, fewer than 30 needed" in result.output


def test_unknown_ticker(tmp_path, sample_dir, db_url):
    invoke("ingest", sample_dir, "--db", db_url)
    result = invoke("train", "--db", db_url, "--tickers", "nope", "--out", tmp_path / "m.pt")
    assert result.exit_code == 1
    assert result.output == "Error: unknown ticker nope: not in the database (3 tickers stored)\n"


def test_too_little_history_names_ticker_and_rows(tmp_path, sample_dir, db_url):
    invoke("ingest", sample_dir, "--db", db_url)
    result = invoke("train", "--db", db_url, "--tickers", "syn0000", "--seq-len", "115",
                    "--out", tmp_path / "m.pt")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ticker syn0000 has 120 rows; with --seq-len 115 it needs at least 125")
    assert not (tmp_path / "m.pt").exists()


def test_tickers_or_all_is_required(tmp_path, db_url):
    result = invoke("train", "--db", db_url, "--out", tmp_path / "m.pt")
    assert result.exit_code == 2 and "give either --tickers A,B or --all" in result.output
