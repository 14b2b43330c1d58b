"""The scoring side: what a host with ONNX Runtime and no torch can do, and
model files whose metadata is not what it should be."""

import subprocess
import sys

import onnx
import pytest

from forecaster.artifact.model_file import load_model
from forecaster.errors import ModelFileError

# Runs the CLI in a fresh interpreter where importing any of the modules
# named in argv[1] fails, as on a scoring host that has onnxruntime only.
WITHOUT = """
import sys
blocked = sys.argv.pop(1).split(",")
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ImportError(f"{name} is not installed on this host")
sys.meta_path.insert(0, Blocked())
from forecaster.cli import main
main(prog_name="forecaster")
"""


def without(modules, *args):
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, ",".join(modules), *map(str, args)], capture_output=True, text=True, timeout=300
    )


def without_torch(*args):
    return without(["torch"], *args)


@pytest.mark.slow
def test_scoring_info_verify_report_sql_and_the_registry_never_load_torch(tiny_model, shared_data, db_url):
    for args in (
        ["info", tiny_model],
        ["verify", tiny_model],
        ["predict", "--model", tiny_model, "--data", shared_data, "--db", db_url, "--device", "cpu"],
        ["verify", tiny_model, "--tickers", "aaxj", "--db", db_url],
        ["report", "--db", db_url],
        ["sql", "select count(*) from predictions", "--db", db_url],
        ["promote", tiny_model, "--reason", "first", "--db", db_url],
        ["predict", "--model", "champion", "--db", db_url, "--device", "cpu"],
        ["models", "--db", db_url],
    ):
        run = without_torch(*args)
        assert run.returncode == 0, f"{args[0]}: {run.stderr}"
    assert "torch is not installed" in without_torch("export", tiny_model).stderr  # the blocker works


# Each costs 0.03-1.3 s to import (torch 1.3 s; exchange_calendars with pandas
# about 0.4 s): a night needs none of them once the first run has copied the
# exchange calendar into the database.
NOT_NIGHTLY = ("torch", "onnx", "pandas", "sklearn", "scipy", "exchange_calendars", "sqlalchemy.dialects.postgresql")


@pytest.mark.slow
def test_a_night_of_appended_rows_imports_none_of_the_heavy_libraries(tiny_model, shared_data, tmp_path):
    from helpers import append_next_day, cut_copy

    data, db = tmp_path / "data", f"sqlite:///{tmp_path / 'n.db'}"
    cut = cut_copy(shared_data, data, "2017-11-07")
    night = ["predict", "--model", tiny_model, "--data", data, "--db", db, "--device", "cpu"]
    assert without([], *night).returncode == 0  # the first run: the whole history, and the calendar
    append_next_day(data, cut)
    run = without(NOT_NIGHTLY, *night)
    assert run.returncode == 0, run.stderr
    assert "as_of 2017-11-08: 9 predictions" in run.stdout
    # A night that writes the metrics file draws no page: none of the page's charting libraries.
    append_next_day(data, cut)
    metrics = tmp_path / "forecaster.prom"
    run = without(("torch", "onnx", "sklearn", "matplotlib"), *night, "--metrics-file", metrics)
    assert run.returncode == 0 and "forecaster_health_status" in metrics.read_text(), run.stderr
    # The blocker works: a first run, on a new database, does need them.
    first = without(NOT_NIGHTLY, *night[:-4], "--db", f"sqlite:///{tmp_path / 'new.db'}", "--device", "cpu")
    assert first.returncode != 0 and "is not installed on this host" in first.stderr


@pytest.mark.parametrize("key", ["features", "seq_len", "scaling", "created_at"])
def test_metadata_missing_a_field_is_a_model_file_error(tiny_model, tmp_path, key):
    model = onnx.load(str(tiny_model))
    kept = [p for p in model.metadata_props if p.key != f"forecaster.{key}"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(ModelFileError, match=f"model metadata lacks {key}$"):
        load_model(tmp_path / "m.onnx")


def test_loading_a_model_leaves_onnx_runtime_s_global_logger_alone(tiny_model, monkeypatch):
    import onnxruntime as ort

    def refuse(*_):
        raise AssertionError("the process-wide ONNX Runtime logger was changed")

    monkeypatch.setattr(ort, "set_default_logger_severity", refuse)
    assert load_model(tiny_model, "auto").device == "cpu"
