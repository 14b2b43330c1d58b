import pytest
from click.testing import CliRunner
from conftest import REAL_ROWS
from helpers import invoke

from forecaster.cli import main


def all_commands():
    return sorted(main.commands)


@pytest.mark.parametrize("name", all_commands())
def test_every_command_and_option_has_help(name):
    command = main.commands[name]
    assert command.help, f"{name} has no help"
    for param in command.params:
        if param.param_type_name == "option":
            assert param.help, f"{name} {param.opts} has no help"
    assert invoke(name, "--help").exit_code == 0


def test_sample_data_then_ingest_then_sql(tmp_path, db_url):
    out = tmp_path / "s"
    assert invoke("sample-data", out, "--n-tickers", 2, "--days", 30).exit_code == 0
    result = invoke("ingest", out, "--db", db_url)
    assert result.exit_code == 0
    assert "files read: 2" in result.output and "rows added: 60" in result.output
    result = invoke("sql", "select ticker, n_rows from tickers order by ticker", "--db", db_url)
    assert result.output.splitlines()[2:] == ["syn0000  30    ", "syn0001  30    "]


def test_a_command_closes_its_database_leaving_no_wal_file_beside_it(tmp_path):
    # A user who copies the .db file after a run copies everything the run wrote.
    db = tmp_path / "p.db"
    assert invoke("sample-data", tmp_path / "s", "--n-tickers", 2, "--days", 30).exit_code == 0
    assert invoke("ingest", tmp_path / "s", "--db", f"sqlite:///{db}").exit_code == 0
    assert db.exists() and not db.with_name("p.db-wal").exists()


def test_ingest_real_data(shared_data, db_url):
    result = invoke("ingest", shared_data, "--db", db_url)
    assert result.exit_code == 0 and f"rows added: {REAL_ROWS}," in result.output


def test_db_from_environment(tmp_path, sample_dir):
    url = f"sqlite:///{tmp_path / 'env.db'}"
    assert invoke("ingest", sample_dir, env={"FORECASTER_DB": url}).exit_code == 0
    assert (tmp_path / "env.db").exists()


def test_missing_path_exits_non_zero_with_one_line(tmp_path, db_url):
    result = invoke("ingest", tmp_path / "nope", "--db", db_url)
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path / 'nope'}: no such file or folder\n"


def test_unopenable_database(tmp_path, sample_dir):
    result = invoke("ingest", sample_dir, "--db", f"sqlite:///{tmp_path}/no/such/dir.db")
    assert result.exit_code == 1 and result.output.startswith("Error: cannot open database")


def test_sql_refuses_a_broken_query(engine, db_url):
    result = invoke("sql", "select * from nope", "--db", db_url)
    assert result.exit_code == 1 and "query failed: no such table: nope" in result.output


def test_python_dash_m_works():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "forecaster", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "Usage: forecaster" in out.stdout


def test_sql_is_read_only_on_the_database_itself(sample_dir, any_db_url, tmp_path, monkeypatch):
    from conftest import reader_url

    monkeypatch.chdir(tmp_path)
    invoke("ingest", sample_dir, "--db", any_db_url)
    url = reader_url(any_db_url)
    # A reading statement that writes is refused by the database itself.
    refused = invoke(
        "sql",
        "with x as (select 1) insert into tickers (ticker, first_date, last_date, n_rows) select 'x', '', '', 0 from x",
        "--db",
        url,
    )
    assert refused.exit_code == 1 and "query failed" in refused.output and "read" in refused.output.lower()
    after = invoke("sql", "select count(*) as n from prices", "--db", url)
    assert after.output.splitlines()[2].strip() == "360"
    refused = invoke("sql", "delete from prices", "--db", url)
    assert refused.exit_code == 1 and "only a question that reads is allowed here" in refused.output
    if any_db_url.startswith("sqlite"):  # ATTACH would create any file it names
        attach = invoke("sql", "ATTACH DATABASE 'x.db' AS x", "--db", any_db_url)
        assert attach.exit_code == 1 and "not ATTACH" in attach.output
        attach = invoke(
            "sql", "select * from pragma_database_list, (select 1) where 0; attach 'x.db' as x", "--db", url
        )
        assert attach.exit_code == 1 and "one statement at a time" in attach.output
        assert not (tmp_path / "x.db").exists()


def test_sql_on_a_missing_sqlite_file_creates_nothing(tmp_path):
    result = invoke("sql", "select 1", "--db", f"sqlite:///{tmp_path / 'nope.db'}")
    assert result.exit_code == 1
    assert result.output == f"Error: cannot open database 'sqlite:///{tmp_path / 'nope.db'}': no such file\n"
    assert list(tmp_path.iterdir()) == []


def test_one_environment_variable_has_one_meaning():
    # An option read from FORECASTER_X in several commands must be the same
    # option in each (same help, type and default); one whose meaning is its
    # command's own gets FORECASTER_<COMMAND>_X.
    from collections import defaultdict

    uses = defaultdict(set)
    for name, command in main.commands.items():
        for param in command.params:
            if param.param_type_name == "option":
                assert param.envvar, f"{name} {param.opts} has no environment variable"
                uses[param.envvar].add((param.help, repr(param.type), repr(param.default), param.multiple))
    assert {env: meanings for env, meanings in uses.items() if len(meanings) > 1} == {}
    assert "FORECASTER_SAMPLE_DATA_SEED" in uses and "FORECASTER_EXPORT_OUT" in uses


def test_a_database_that_fails_a_read_is_one_line_and_debug_shows_the_traceback(sample_dir, db_url):
    from forecaster.db import store

    invoke("ingest", sample_dir, "--db", db_url)
    with store.write_transaction(store.connect(db_url)) as conn:
        conn.exec_driver_sql("DROP TABLE predictions")  # the views now fail when read
    result = CliRunner().invoke(main, ["report", "--db", db_url])
    assert result.exit_code == 1 and result.output == "Error: database error: no such table: main.predictions\n"
    debug = CliRunner().invoke(main, ["--debug", "report", "--db", db_url])
    assert debug.exit_code == 1 and type(debug.exception).__name__ == "DatabaseError"
    assert isinstance(debug.exception.__cause__, __import__("sqlite3").OperationalError)


def test_the_cli_takes_its_defaults_from_the_library():
    import dataclasses

    from forecaster.artifact.config import DEFAULT_OPSET, DEFAULT_TOLERANCE
    from forecaster.data.config import DEFAULT_CALENDAR
    from forecaster.db.config import DEFAULT_DB_URL
    from forecaster.lifecycle.config import DaemonConfig, RetrainConfig
    from forecaster.training.config import TrainConfig

    def defaults(command):
        return {p.name: p.default for p in main.commands[command].params}

    train = defaults("train")
    for field in dataclasses.fields(TrainConfig):
        if field.name in train:
            assert train[field.name] == field.default, field.name
    daemon = defaults("daemon")
    for field in dataclasses.fields(DaemonConfig):
        if field.name in daemon and field.default is not dataclasses.MISSING and field.name not in ("data", "shard"):
            expected = field.default
            if field.name in ("wait_max", "recheck"):
                expected = expected.total_seconds() // 60  # minutes on the command line
            if field.name == "lock_check":
                expected = expected.total_seconds()
            assert daemon[field.name] == expected, field.name
    for command in ("retrain", "daemon"):
        options = defaults(command)
        for field in dataclasses.fields(RetrainConfig):
            if field.name != "device":
                assert options[field.name] == field.default, (command, field.name)
    assert defaults("export")["opset"] == DEFAULT_OPSET and defaults("verify")["tolerance"] == DEFAULT_TOLERANCE
    import inspect

    from forecaster.artifact.verify import verify
    from forecaster.data.sample import write_sample_data
    from forecaster.db.query import run_query

    for command, function, names in [
        ("sample-data", write_sample_data, {"n_tickers": "tickers", "days": "days", "seed": "seed", "ar": "ar"}),
        ("verify", verify, {"windows": "n_windows", "seed": "seed", "tolerance": "tolerance"}),
        ("sql", run_query, {"limit": "limit"}),
    ]:
        signature = inspect.signature(function).parameters
        for option, parameter in names.items():
            assert defaults(command)[option] == signature[parameter].default, (command, option)
    assert defaults("predict")["db"] == DEFAULT_DB_URL and defaults("predict")["calendar"] == DEFAULT_CALENDAR


def test_a_reader_that_stops_reading_ends_the_command_quietly(shared_data, db_url):
    """`forecaster sql ... | head -1`: no broken-pipe error, exit 0."""
    import subprocess
    import sys

    invoke("ingest", shared_data, "--db", db_url)
    command = [sys.executable, "-m", "forecaster", "sql", "SELECT * FROM prices", "--db", db_url]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # as head does after its lines
    assert proc.wait(timeout=120) == 0 and first.startswith(b"ticker")
    assert proc.stderr.read() == b""


@pytest.mark.parametrize("command", ["predict", "daemon"])
def test_a_mistyped_shard_is_a_usage_error(command, db_url):
    for text, said in (("3/2", "K must be between 1 and N"), ("half", "expected K/N, e.g. 1/3")):
        result = invoke(command, "--model", "champion", "--shard", text, "--db", db_url)
        assert result.exit_code == 2 and said in result.output, result.output


def captured_daemon_config(monkeypatch, *args):
    """The DaemonConfig `forecaster daemon ARGS` would run (the daemon itself not started)."""
    import forecaster.lifecycle.daemon as daemon

    seen = []
    monkeypatch.setattr(daemon, "run_daemon", lambda config: seen.append(config) or 0)
    result = invoke("daemon", *args)
    assert result.exit_code == 0, result.output
    return seen[0]


def test_the_shipped_job_file_runs_the_daemon_and_the_command_line_wins(monkeypatch):
    from pathlib import Path

    job = Path(__file__).resolve().parents[2] / "jobs" / "nightly.toml"
    config = captured_daemon_config(monkeypatch, "--job", job)
    assert (config.db_url, config.cron, config.retrain_cron) == (
        "sqlite:////srv/forecaster/forecaster.db",
        "0 22 * * 1-5",
        "0 6 * * 6",
    )
    assert [str(p) for p in config.data] == ["/srv/market-data"] and config.min_fresh == 0.9
    assert str(config.metrics_file) == "/var/lib/node_exporter/textfile/forecaster.prom"
    assert captured_daemon_config(monkeypatch, "--job", job, "--cron", "0 23 * * 1-5").cron == "0 23 * * 1-5"


def test_a_job_file_may_set_every_option_and_a_misspelled_key_is_named(monkeypatch, tmp_path):
    import click

    from forecaster.cli.base import main as group

    values = {"model": "champion", "cron": "0 21 * * 1-5", "retrain-cron": "0 5 * * 6", "shard": "1/2"}
    values |= {"timezone": "Europe/London", "calendar": "XLON", "db": f"sqlite:///{tmp_path / 'j.db'}"}
    lines = []
    for param in group.commands["daemon"].params:
        if not isinstance(param, click.Option) or param.name == "job":
            continue
        key = param.opts[0].lstrip("-")
        if key in values:
            value = values[key]
        elif param.is_flag:
            value = True
        elif isinstance(param.type, click.Choice):
            value = param.type.choices[-1]
        elif isinstance(param.type, (click.IntRange, click.FloatRange)):
            low, high = param.type.min or 0, param.type.max
            value = (low + high) / 2 if high is not None else low + 2
        elif param.multiple:
            value = [str(tmp_path / "data")]
        else:
            value = str(tmp_path / key)
        lines.append(f"{key} = {value!r}".replace("True", "true").replace("'", '"'))
    (tmp_path / "every.toml").write_text("\n".join(lines) + "\n")
    import forecaster.lifecycle.daemon as daemon

    seen = []
    monkeypatch.setattr(daemon, "run_once", lambda config: seen.append(config) or 0)  # once = true
    result = invoke("daemon", "--job", tmp_path / "every.toml")
    assert result.exit_code == 0, result.output
    [config] = seen
    assert (config.cron, config.timezone, config.calendar, str(config.shard)) == (
        "0 21 * * 1-5",
        "Europe/London",
        "XLON",
        "1/2",
    )
    (tmp_path / "typo.toml").write_text('db = "sqlite:///x.db"\nmin_frseh = 0.5\n')
    typo = invoke("daemon", "--job", tmp_path / "typo.toml")
    assert typo.exit_code == 2 and f"{tmp_path / 'typo.toml'}: unknown key 'min-frseh'" in typo.output
    for bad, said in (
        ('min-fresh = "high"', "key 'min-fresh': 'high' is not a valid float range"),
        ('data = "data"', "key 'data': Value must be an iterable"),
    ):
        (tmp_path / "bad.toml").write_text(bad + "\n")
        wrong = invoke("daemon", "--job", tmp_path / "bad.toml", "--model", "m.onnx")
        assert wrong.exit_code == 2 and f"{tmp_path / 'bad.toml'}: {said}" in wrong.output, wrong.output


def test_one_job_file_serves_every_command_that_takes_one(db_url, tmp_path, sample_dir, tiny_model):
    """Keys are the long options (`from`, `json`); another command's key is left to it."""
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "jobs" / "nightly.toml"
    invoke("ingest", sample_dir, "--db", db_url)
    status = invoke("status", "--job", shipped, "--db", db_url)  # the file's database is on another host
    assert status.exit_code == 75 and "unknown key" not in status.output
    (tmp_path / "j.toml").write_text(f'db = "{db_url}"\njson = true\ncron = "0 22 * * 1-5"\n')
    assert invoke("status", "--job", tmp_path / "j.toml").output.startswith("{")
    (tmp_path / "p.toml").write_text(f'db = "{db_url}"\nfrom = "2017-11-20"\nto = "2017-11-21"\n')
    wrong = invoke("predict", "--job", tmp_path / "p.toml", "--model", tiny_model)
    assert wrong.exit_code == 1 and "2017-11-20" in wrong.output  # --from and --to were read from the file


def test_sql_prints_csv_and_json_for_programs(sample_dir, db_url):
    import csv
    import io
    import json

    invoke("ingest", sample_dir, "--db", db_url)
    query = "select ticker, count(*) as n, avg(close) as mean_close from prices group by ticker order by ticker"
    table = invoke("sql", query, "--db", db_url).output
    as_csv = list(csv.reader(io.StringIO(invoke("sql", query, "--format", "csv", "--db", db_url).output)))
    as_json = json.loads(invoke("sql", query, "--format", "json", "--db", db_url).output)
    assert as_csv[0] == ["ticker", "n", "mean_close"] and len(as_csv) == 1 + len(as_json) == 1 + 3
    assert [row["n"] for row in as_json] == [int(r[1]) for r in as_csv[1:]] == [120, 120, 120]
    assert all(row["ticker"] in table for row in as_json)
    odd = invoke("sql", "select X'00ff' as raw, 0.5 as half, null as missing", "--format", "json", "--db", db_url)
    assert json.loads(odd.output) == [{"raw": "00ff", "half": 0.5, "missing": None}]
    limited = invoke("sql", "select * from prices", "--format", "json", "--limit", "5", "--db", db_url)
    assert len(json.loads(limited.stdout)) == 5 and "(first 5 rows shown)" in limited.stderr


@pytest.mark.parametrize(
    "error, said",
    [
        (OSError(20, "Not a directory", "/srv/models/sub"), "Not a directory: /srv/models/sub"),
        (None, "no champion to retrain"),
    ],
)
def test_a_failure_is_one_error_line_or_one_failed_event(error, said):
    """Library errors and OS errors alike: `Error: ...` in text, a `failed`
    JSON event (and nothing else on stderr) with --log-format json."""
    import json

    import click

    from forecaster.cli.base import log_format_option, reports_errors
    from forecaster.errors import DataError

    @click.command("retrain")
    @log_format_option
    @reports_errors
    def failing(log_format):
        raise error or DataError(said)

    runner = CliRunner()
    text = runner.invoke(failing, [])
    assert text.exit_code == 1 and text.stderr == f"Error: {said}\n"
    logged = runner.invoke(failing, ["--log-format", "json"])
    [event] = [json.loads(line) for line in logged.stderr.splitlines()]
    assert logged.exit_code == 1 and (event["event"], event["level"], event["message"]) == ("failed", "error", said)
