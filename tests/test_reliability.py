"""Evidence that crashes, bad input and concurrent readers lose nothing.

Real processes die here (kill -9), real file systems fill up or go read-only
(tmpfs mounts when running as root, as CI does), real readers run beside
writers. Each test name is cited in docs/guarantees.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from forecaster.data.ingest import ingest
from forecaster.data.sample import append_one_day, write_sample_data
from forecaster.db import store
from forecaster.errors import StoreError
from forecaster.serving.nightly import predict

PYTHON = [sys.executable, "-m", "forecaster"]


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*PYTHON, *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs)


class _Reader:
    """Plain SQL on either backend, through a fresh connection each time."""

    def __init__(self, url: str):
        import sqlalchemy as sa

        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.conn = self.engine.connect()

    def execute(self, sql: str, params=()):
        import sqlalchemy as sa

        names = {f"p{i}": v for i, v in enumerate(params)}
        for i in range(len(params)):
            sql = sql.replace("?", f":p{i}", 1)
        return self.conn.execute(sa.text(sql), names)

    def close(self):
        self.conn.close()
        self.engine.dispose()


def check_invariants(db: Path | str, committed: set) -> dict:
    """The promises a crash must never break. `db`: a SQLite path or any URL."""
    url = db if isinstance(db, str) else f"sqlite:///{db}"
    con = _Reader(url)
    try:
        if url.startswith("sqlite"):
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        orphans = con.execute(
            "SELECT COUNT(*) FROM predictions p JOIN runs r USING (run_id) WHERE r.status != 'succeeded'"
        ).fetchone()[0]
        assert orphans == 0, "predictions outside a succeeded run"
        wrong = con.execute(
            "SELECT r.run_id, r.n_predictions, COUNT(p.prediction_id) FROM runs r "
            "LEFT JOIN predictions p USING (run_id) WHERE r.status = 'succeeded' "
            "GROUP BY r.run_id HAVING r.n_predictions != COUNT(p.prediction_id)"
        ).fetchall()
        assert wrong == [], f"succeeded runs whose n_predictions is not what they wrote: {wrong}"
        prices = {tuple(r) for r in con.execute("SELECT ticker, date FROM prices")}
        assert committed <= prices, f"{len(committed - prices)} committed price rows lost"
        committed |= prices
        return {r[0]: r[1] for r in con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status")}
    finally:
        con.close()


def kill_if_running(proc: subprocess.Popen) -> bool:
    """kill -9 the process if it is still running; whether it was."""
    if proc.poll() is not None:
        return False
    proc.kill()
    return True


def kill_inside_a_run(proc: subprocess.Popen, watcher: _Reader) -> bool:
    """Freeze the process (SIGSTOP) when the database shows a run of its own
    as running, and kill -9 it if the run is still running then; whether it
    was killed so. A frozen process cannot commit meanwhile, so the kill
    lands inside that run: a state seen, not a moment guessed."""
    mine = "SELECT COUNT(*) FROM runs WHERE status = 'running' AND pid = ?"
    while proc.poll() is None:
        running = watcher.execute(mine, (proc.pid,)).fetchone()[0]
        watcher.conn.rollback()  # a fresh snapshot for the next look
        if not running:
            time.sleep(0.002)
            continue
        os.kill(proc.pid, signal.SIGSTOP)
        still = watcher.execute(mine, (proc.pid,)).fetchone()[0]
        watcher.conn.rollback()
        if still:
            proc.kill()
            return True
        os.kill(proc.pid, signal.SIGCONT)
    return False


def file_rows(folder: Path) -> int:
    return sum(len(p.read_text().splitlines()) - 1 for p in folder.rglob("*.us.txt"))


@pytest.mark.slow
def test_kill_minus_9_at_random_moments_loses_nothing(tmp_path, tiny_model, any_db_url):
    data, db = tmp_path / "data", any_db_url
    store.connect(db).dispose()
    write_sample_data(data, tickers=1200, days=70, seed=3)  # the model reads 60 rows
    # Each attempt ingests a new day for 1,200 files, then scores the last 15
    # dates (one transaction each), so a kill can land in any phase.
    args = [
        "predict",
        "--model",
        tiny_model,
        "--data",
        data,
        "--from",
        "2017-10-20",
        "--db",
        db,
        "--device",
        "cpu",
        "-q",
    ]
    rng = random.Random(7)
    committed: set = set()
    # Time one whole attempt after the first (bulk) ingest, so that the kills
    # below land at random fractions of a run on whatever machine runs this.
    for warm_up in range(2):
        append_one_day(data, seed=100 + warm_up)
        start = time.monotonic()
        assert cli(*args).returncode == 0
    duration = time.monotonic() - start
    kills, left_running = 0, set()
    watcher = _Reader(db)
    for attempt in range(12):
        append_one_day(data, seed=attempt)
        proc = subprocess.Popen([*PYTHON, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Every other attempt is killed inside a run, seen in the database: the
        # process is frozen as soon as a run of its own is `running`, and killed
        # only if that is still so (a frozen process cannot finish it meanwhile).
        # The others are killed at a random moment (ingest, scoring or writing).
        if attempt % 2 == 0:
            killed = kill_inside_a_run(proc, watcher)
        else:
            time.sleep(rng.uniform(0.05, 0.95) * duration)
            killed = kill_if_running(proc)
        kills += killed
        proc.wait()
        check_invariants(db, committed)
        reader = _Reader(db)
        left_running |= {r[0] for r in reader.execute("SELECT run_id FROM runs WHERE status = 'running'")}
        reader.close()
    watcher.close()
    final = cli(*args)
    assert final.returncode == 0, final.stderr
    statuses = check_invariants(db, committed)
    con = _Reader(db)
    # Every runs row a killed process left behind was marked failed by a later run.
    assert statuses.get("running", 0) == 0
    failed = {r[0]: r[1] for r in con.execute("SELECT run_id, message FROM runs WHERE status = 'failed'")}
    assert set(failed) == left_running  # exactly the runs the kills interrupted
    assert all(m.startswith("abandoned: process") for m in failed.values())
    # Nothing lost, nothing twice: prices hold every row of every file exactly once,
    # and the newest night is scored exactly once per ticker.
    assert con.execute("SELECT COUNT(*) FROM prices").fetchone()[0] == file_rows(data)
    newest = con.execute("SELECT MAX(date) FROM prices").fetchone()[0]
    assert con.execute("SELECT COUNT(*) FROM predictions WHERE as_of = ?", (newest,)).fetchone()[0] == 1200
    con.close()
    assert kills >= 6, f"only {kills} kills landed; the test did not test much"
    assert len(left_running) >= 4, f"only {len(left_running)} kills landed inside a run"
    print(f"\n{db.split(':')[0]}: kills {kills}, runs interrupted and later marked failed {len(left_running)}")


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A small real file system (root), else a plain folder (callers fall back)."""
    path.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def stocked_db(url: str, data: Path, model: Path) -> None:
    engine = store.connect(url)
    predict(engine, model, data=[data], device="cpu")
    engine.dispose()


def snapshot(db: Path) -> tuple:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return tuple(
            con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("prices", "predictions", "runs", "source_files")
        )
    finally:
        con.close()


def test_a_read_only_database_gives_one_line_and_changes_nothing(tmp_path, sample_dir, tiny_model):
    with tmpfs(tmp_path / "ro", "8m") as mounted:
        db = tmp_path / "ro" / "f.db"
        stocked_db(f"sqlite:///{db}", sample_dir, tiny_model)
        before = snapshot(db)
        if mounted:
            assert subprocess.run(["mount", "-o", "remount,ro", str(tmp_path / "ro")]).returncode == 0
        elif os.geteuid() == 0:
            pytest.fail("root ignores file modes: a read-only path needs a tmpfs mount, and mount failed here")
        else:
            os.chmod(db, 0o444)
            os.chmod(tmp_path / "ro", 0o555)
        append_one_day(sample_dir)
        result = cli("predict", "--model", tiny_model, "--data", sample_dir, "--db", f"sqlite:///{db}")
        assert result.returncode == 1
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
        assert "read-only" in result.stderr or "readonly" in result.stderr
        assert snapshot(db) == before


def test_a_full_disk_fails_the_run_and_keeps_the_previous_state(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_sample_data(data, tickers=30, days=100, seed=2)
    with tmpfs(tmp_path / "small", "2m") as mounted:
        db = tmp_path / "small" / "f.db"
        url = f"sqlite:///{db}"
        stocked_db(url, data, tiny_model)
        before = snapshot(db)
        big = tmp_path / "big"
        write_sample_data(big, tickers=60, days=2500, seed=5)  # far more than 2 MB of prices
        engine = store.connect(url)
        if not mounted:  # no tmpfs: cap the file's size inside SQLite instead
            from sqlalchemy import event

            event.listen(
                engine, "connect", lambda c, _: c.execute(f"PRAGMA max_page_count = {db.stat().st_size // 4096 + 40}")
            )
            engine.dispose()
        with pytest.raises(StoreError) as info:
            predict(engine, tiny_model, data=[big], device="cpu")
        assert "full" in str(info.value).lower() and "\n" not in str(info.value)
        engine.dispose()
        assert snapshot(db) == before  # the failed ingest batch left nothing behind
        assert check_invariants(db, set())


def test_a_vanished_database_folder_is_a_one_line_error(tmp_path, sample_dir, tiny_model):
    result = cli("predict", "--model", tiny_model, "--data", sample_dir, "--db", f"sqlite:///{tmp_path}/gone/f.db")
    assert result.returncode == 1
    assert (
        result.stderr == f"Error: cannot open database 'sqlite:///{tmp_path}/gone/f.db': unable to open database file\n"
    )


READER = r"""
import json, sqlite3, sys, time
db, seconds = sys.argv[1], float(sys.argv[2])
stats = {"queries": 0, "errors": [], "partial": 0}
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    try:
        con = sqlite3.connect(db, timeout=60)
        con.execute("BEGIN")  # one snapshot for the three reads
        latest = con.execute("SELECT COUNT(*) FROM latest_predictions").fetchone()[0]
        visible = dict(con.execute("SELECT run_id, COUNT(*) FROM predictions GROUP BY run_id"))
        runs = {r: (s, n) for r, s, n in con.execute("SELECT run_id, status, n_predictions FROM runs")}
        con.execute("COMMIT")
        con.close()
        stats["partial"] += sum(1 for r, c in visible.items() if runs.get(r) != ("succeeded", c))
        stats["queries"] += 3
    except Exception as exc:
        stats["errors"].append(str(exc))
print(json.dumps(stats))
"""


@pytest.mark.slow
def test_readers_never_see_a_partial_run_and_nobody_is_locked_out(tmp_path, tiny_model):
    data, big = tmp_path / "data", tmp_path / "big"
    write_sample_data(data, tickers=300, days=200, seed=4)
    for path in write_sample_data(big, tickers=400, days=1000, seed=6):
        path.rename(path.with_name("big" + path.name))  # other tickers than the stored ones
    db = tmp_path / "busy.db"
    url = f"sqlite:///{db}"
    stocked_db(url, data, tiny_model)
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, str(db), "12"], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    backfill = subprocess.Popen(
        [
            *PYTHON,
            "predict",
            "--model",
            str(tiny_model),
            "--from",
            "2017-06-01",
            "--to",
            "2017-11-10",
            "--db",
            url,
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)  # the backfill is writing; now a large ingest arrives and must wait its turn
    bulk = cli("ingest", big, "--db", url, "-q")
    assert bulk.returncode == 0, bulk.stderr
    assert "rows added: 400000" in bulk.stdout
    out, err = backfill.communicate(timeout=300)
    assert backfill.returncode == 0, err
    stats = [json.loads(r.communicate(timeout=120)[0]) for r in readers]
    assert all(s["errors"] == [] for s in stats), stats
    assert all(s["partial"] == 0 for s in stats), stats
    assert all(s["queries"] > 30 for s in stats), stats
    assert check_invariants(db, set())
    print(f"\nreaders: {len(stats)}, queries: {sum(s['queries'] for s in stats)}, errors: 0, partial views: 0")


def model_variants(tiny_model: Path, folder: Path) -> dict[str, Path]:
    """Broken or hostile model files, each with what makes it so."""
    import onnx

    blob = tiny_model.read_bytes()
    folder.mkdir()
    out = {}
    (out.setdefault("truncated", folder / "truncated.onnx")).write_bytes(blob[: len(blob) // 2])
    (out.setdefault("random", folder / "random.onnx")).write_bytes(np.random.default_rng(0).bytes(5000))
    (out.setdefault("empty", folder / "empty.onnx")).write_bytes(b"")
    model = onnx.load(str(tiny_model))
    init = model.graph.initializer[0]
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    entry = init.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/passwd"
    onnx.save(model, str(out.setdefault("external", folder / "external.onnx")))
    for key, value in (("input_rows", "30"), ("features", json.dumps(["open", "high", "low", "close", "volume"]))):
        m = onnx.load(str(tiny_model))
        next(p for p in m.metadata_props if p.key == f"forecaster.{key}").value = value
        onnx.save(m, str(out.setdefault(f"wrong_{key}", folder / f"wrong_{key}.onnx")))
    return out


@pytest.mark.slow
def test_hostile_or_broken_model_files_are_refused_and_recorded(tmp_path, sample_dir, tiny_model):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = store.connect(url)
    ingest(engine, [sample_dir])
    expected = {
        "truncated": "not a loadable ONNX model",
        "random": "not a loadable ONNX model",
        "empty": "not a loadable ONNX model",
        "external": "not a loadable ONNX model",
        "wrong_input_rows": "graph input ohlc has shape ['batch', 60, 4], but the metadata says 30 rows",
        "wrong_features": "but the metadata says 60 rows and 5 features",
    }
    for name, path in model_variants(tiny_model, tmp_path / "models").items():
        result = cli("predict", "--model", path, "--db", url)
        assert result.returncode == 1, name
        assert expected[name] in result.stderr and result.stderr.count("\n") == 1, (name, result.stderr)
    con = sqlite3.connect(tmp_path / "m.db")
    assert con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 0
    assert con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall() == [("failed", len(expected))]


def test_a_checkpoint_with_code_is_refused_by_export(tmp_path):
    import pickle

    sentinel = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"format": "forecaster-checkpoint", "x": Evil()}))
    result = cli("export", tmp_path / "evil.pt")
    assert result.returncode == 1 and "not a loadable forecaster checkpoint" in result.stderr
    assert not sentinel.exists() and not (tmp_path / "evil.onnx").exists()


HOSTILE_NAMES = ["with space", "ünïcödé", "a" * 240, "x'; DROP TABLE prices; --", 'q"uote', "日本"]


@pytest.mark.slow
def test_hostile_file_names_are_stored_verbatim_and_never_injected(tmp_path, tiny_model):
    folder = tmp_path / "odd"
    folder.mkdir()
    for i, name in enumerate(HOSTILE_NAMES):
        src = write_sample_data(tmp_path / f"s{i}", tickers=1, days=70, seed=i)[0]  # the model reads 60 rows
        (folder / f"{name}.us.txt").write_bytes(src.read_bytes())
    (folder / "...us.txt").write_text("Date,Open,High,Low,Close\n2017-01-03,1,1,1,1\n")  # ticker ''
    db = tmp_path / "odd.db"
    result = cli("predict", "--model", tiny_model, "--data", folder, "--db", f"sqlite:///{db}", "-q")
    assert result.returncode == 0, result.stderr
    con = sqlite3.connect(db)
    stored = {r[0] for r in con.execute("SELECT ticker FROM tickers")}
    assert stored == {n.lower() for n in HOSTILE_NAMES}
    assert {r[0] for r in con.execute("SELECT ticker FROM predictions")} == stored
    assert (
        con.execute("SELECT reason FROM rejected_rows WHERE ticker IS NULL").fetchone()[0]
        == "the file name gives no ticker (it starts with a dot)"
    )
    # Plots named after odd tickers stay in their folder.
    out = tmp_path / "exports" / "m.pt"
    train = cli(
        "train",
        "--all",
        "--db",
        f"sqlite:///{db}",
        "--out",
        out,
        "--epochs",
        "1",
        "--hidden",
        "4",
        "--layers",
        "1",
        "-q",
    )
    assert train.returncode == 0, train.stderr
    assert all(p.parent == out.parent for p in tmp_path.rglob("*.png"))
    assert len(list(out.parent.glob("m.test.*.png"))) == len(HOSTILE_NAMES)


def test_a_window_unlike_training_is_scored_but_flagged(engine, tmp_path, tiny_model):
    folder = tmp_path / "split"
    path = write_sample_data(folder, tickers=2, days=60, seed=1)[0]
    lines = path.read_text().splitlines()
    # An unadjusted 10:1 split on the last day: the close falls to a tenth.
    last = lines[-1].split(",")
    last[1:5] = [f"{float(x) / 10:.4f}" for x in last[1:5]]
    path.write_text("\n".join(lines[:-1] + [",".join(last)]) + "\n")
    run = predict(engine, tiny_model, data=[folder], device="cpu").runs[0]
    assert run.n_predictions == 2 and run.flagged == ["syn0000"]
    assert "1 flagged out_of_range" in run.message and "syn0000" in run.message
    con = sqlite3.connect(tmp_path / "test.db")
    # The split is also in price_flags, and inside the window: both flags.
    assert dict(con.execute("SELECT ticker, flags FROM predictions")) == {
        "syn0000": "out_of_range,flagged_prices",
        "syn0001": None,
    }
    assert list(con.execute("SELECT ticker, kind FROM price_flags")) == [("syn0000", "split")]
