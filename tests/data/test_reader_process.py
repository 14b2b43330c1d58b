"""A large ingest reads its files in a second process (reader_process.py).
It must store exactly what reading in one process stores, fail cleanly when
the reader dies, and never outlive the process it reads for."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import write_file

from forecaster.data import reader_process
from forecaster.data.ingest import ingest
from forecaster.data.reading import Known, new_bytes
from forecaster.data.sample import write_sample_data
from forecaster.db import store
from forecaster.errors import ReaderError

HEADER = "Date,Open,High,Low,Close,Volume,OpenInt\n"
CLEAN = [f"2016-{m:02d}-{d:02d},10,11,9,10.5,100,0" for m in range(1, 13) for d in range(1, 29)]


def messy_folder(root: Path) -> Path:
    """Every kind of file: clean (both parse paths), rows set aside, unreadable."""
    folder = root / "in"
    write_sample_data(folder, tickers=4, days=300, seed=3)
    write_file(
        folder,
        "bad.us.txt",
        HEADER + "\n".join(CLEAN + ["2017-01-02,x,11,9,10.5,100,0", "2017-01-03,10,8,9,10.5,100,0"]) + "\n",
    )
    write_file(folder, "latin.us.txt", HEADER.encode() + b"2017-01-03,10,11,9,10.5,100,0\n2017-01-04,\xe9,1,1,1,1,0\n")
    write_file(folder, "small.csv", "date,open,high,low,close\n2017-01-03,10,11,9,10.5\n")
    write_file(folder, "empty.us.txt", "")
    write_file(folder, "noclose.us.txt", "Date,Open,High\n2017-01-03,1,1\n")
    write_file(folder, "partial.us.txt", HEADER + "\n".join(CLEAN[:3]))  # still being written: its last line waits
    return folder


def dump(db: Path) -> dict:
    """Every table's content, without the columns that hold the time of the run."""
    with sqlite3.connect(db) as conn:
        return {
            "prices": conn.execute("SELECT * FROM prices ORDER BY ticker, date").fetchall(),
            "tickers": conn.execute("SELECT * FROM tickers ORDER BY ticker").fetchall(),
            "price_dates": conn.execute("SELECT * FROM price_dates ORDER BY date").fetchall(),
            "rejected": conn.execute(
                "SELECT source, line, ticker, raw, reason FROM rejected_rows ORDER BY source, line, reason"
            ).fetchall(),
            "ledger": conn.execute(
                "SELECT path, ticker, size, mtime_ns, lines, tail_sha256, rows_added, "
                "rows_rejected FROM source_files ORDER BY path"
            ).fetchall(),
        }


def ingest_into(db: Path, folder: Path, reader: str):
    engine = store.connect(f"sqlite:///{db}")
    try:
        return ingest(engine, [folder], reader=reader)
    finally:
        engine.dispose()


def test_the_reader_process_stores_exactly_what_reading_here_stores(tmp_path):
    folder = messy_folder(tmp_path)
    here, there = tmp_path / "here.db", tmp_path / "there.db"
    assert vars(ingest_into(here, folder, "inline")) == vars(ingest_into(there, folder, "process"))
    # The next night: an append, a rewrite that conflicts with stored rows, a new file.
    stock = next((folder / "Stocks").iterdir())
    with open(stock, "a") as fh:
        fh.write("2030-01-02,10,11,9,10.5,100,0\n")  # years after the exchange's day: mis-dated, set aside
    write_file(folder, "bad.us.txt", HEADER + "\n".join(CLEAN[:-1] + ["2016-12-28,10,11,9,99,100,0"]) + "\n")
    write_file(folder, "new.us.txt", HEADER + "\n".join(CLEAN) + "\n")
    second = ingest_into(here, folder, "inline")
    assert vars(second) == vars(ingest_into(there, folder, "process"))
    assert (second.rows_rejected, second.rows_waiting) == (2, 1) and second.files_skipped > 0
    assert second.rows_added == len(CLEAN)
    assert dump(here) == dump(there)
    # bad: 2 rows, latin: 1 row, empty and noclose: whole files; then the mis-dated row and the conflict.
    assert len(dump(here)["rejected"]) == 7


def child_that_dies_after(batches: int, saying: str) -> list[str]:
    """The real reader, in batches of 2 files, that dies after sending `batches`."""
    script = textwrap.dedent(f"""
        import os, sys
        from forecaster.data import reader_process, reading
        reading.FLUSH_FILES = 2
        send, sent = reader_process._send_batch, []
        def send_then_die(out, batch):
            send(out, batch)
            sent.append(batch)
            if len(sent) == {batches}:
                sys.stderr.write({saying!r} + "\\n")
                sys.stderr.flush()
                os._exit(9)
        reader_process._send_batch = send_then_die
        reader_process.main()
    """)
    return [sys.executable, "-c", script]


def test_a_reader_that_dies_keeps_the_committed_batches_and_says_why(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    write_sample_data(folder, tickers=7, days=50, seed=2)
    db = tmp_path / "f.db"
    monkeypatch.setattr(reader_process, "COMMAND", child_that_dies_after(2, "disk on fire"))
    with pytest.raises(ReaderError, match=r"stopped \(exit status 9\): disk on fire"):
        ingest_into(db, folder, "process")
    after_crash = dump(db)
    assert len(after_crash["ledger"]) == 4  # two whole batches of two files, nothing more
    assert {t for t, *_ in after_crash["prices"]} == {row[1] for row in after_crash["ledger"]}
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    monkeypatch.undo()
    rest = ingest_into(db, folder, "process")
    assert (rest.files_skipped, rest.files_read) == (4, 3)
    clean = tmp_path / "clean.db"
    ingest_into(clean, folder, "inline")
    assert dump(db)["prices"] == dump(clean)["prices"]


def test_a_reader_that_cannot_start_is_a_one_line_error(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    write_sample_data(folder, tickers=2, days=30, seed=2)
    monkeypatch.setattr(reader_process, "COMMAND", [sys.executable, "-c", "raise SystemExit('no numpy here')"])
    with pytest.raises(ReaderError, match=r"exit status 1\): no numpy here$"):
        ingest_into(tmp_path / "f.db", folder, "process")


def test_a_reader_that_prints_something_else_is_a_one_line_error(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    write_sample_data(folder, tickers=2, days=30, seed=2)
    monkeypatch.setattr(
        reader_process, "COMMAND", [sys.executable, "-c", "import sys; sys.stdin.read(); print('hello ' * 100)"]
    )
    with pytest.raises(ReaderError, match="sent something that is not a batch"):
        ingest_into(tmp_path / "f.db", folder, "process")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent has not collected it


@pytest.mark.slow
def test_killing_the_ingesting_process_stops_its_reader(tmp_path):
    folder = tmp_path / "in"
    write_sample_data(folder, tickers=40, days=2500, seed=2)  # more than the pipe holds
    # The parent stalls in its first write, so the reader fills the pipe and waits.
    script = textwrap.dedent(f"""
        import time
        from forecaster.data import ingest
        from forecaster.db import store
        ingest._write = lambda *a: time.sleep(600)
        ingest.ingest(store.connect("sqlite:///{tmp_path / "f.db"}"), ["{folder}"], reader="process")
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not (readers := children_of(parent.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert readers, "the reader process never started"
    time.sleep(2)  # let it fill the pipe
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while alive(readers[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(readers[0]), "the reader outlived the process it read for"


def test_new_bytes_counts_new_files_whole_and_appended_files_by_their_tail(tmp_path):
    new = write_file(tmp_path, "new.us.txt", HEADER + CLEAN[0] + "\n")
    grown = write_file(tmp_path, "grown.us.txt", HEADER + CLEAN[0] + "\n")
    same = write_file(tmp_path, "same.us.txt", HEADER)
    ledger = {str(grown): Known(len(HEADER), 0, 2, ""), str(same): Known(len(HEADER), 0, 2, "")}
    assert new_bytes([new, grown, same], ledger) == len(HEADER) + 2 * len(CLEAN[0]) + 2
