import os

import pytest
import sqlalchemy as sa
from conftest import REAL_ROWS, write_file
from helpers import count, rejects, summaries_against_prices

from forecaster.data import reading as reading_mod
from forecaster.data.ingest import SUMMARY_QUERY_TICKERS, ingest
from forecaster.db import schema, store
from forecaster.errors import SourceError

HEADER = "Date,Open,High,Low,Close,Volume,OpenInt\n"


def test_all_ten_real_tickers_twice(any_engine, shared_data):
    first = ingest(any_engine, [shared_data])
    assert (first.files_read, first.rows_added, first.rows_rejected) == (10, REAL_ROWS, 0)
    assert count(any_engine) == REAL_ROWS
    second = ingest(any_engine, [shared_data])
    assert (second.files_skipped, second.rows_added) == (10, 0)
    assert count(any_engine) == REAL_ROWS
    with any_engine.connect() as conn:
        aaxj = conn.execute(sa.select(schema.tickers).where(schema.tickers.c.ticker == "aaxj")).one()
    assert (aaxj.first_date, aaxj.last_date, aaxj.n_rows) == ("2008-08-15", "2017-11-10", 2325)


def test_folder_mixing_good_and_broken_files(any_engine, tmp_path):
    folder = tmp_path / "in"
    write_file(folder, "good.us.txt", HEADER + "2017-01-03,10,11,9,10.5,100,0\n2017-01-04,10,11,9,10.5,100,0\n")
    write_file(folder, "mixed.us.txt", HEADER + "2017-01-03,10,11,9,10.5,100,0\n2017-01-04,x,11,9,10.5,100,0\n")
    write_file(folder, "empty.us.txt", "")
    write_file(folder, "binary.us.txt", b"\x00\x01\x02garbage")
    write_file(folder / "sub", "noclose.csv", "Date,Open,High,Low\n2017-01-03,1,1,1\n")
    write_file(folder, "notes.md", "ignored: not .txt/.csv")
    report = ingest(any_engine, [folder])
    assert (report.files_read, report.files_unreadable) == (2, 3)
    assert (report.rows_added, report.rows_rejected) == (3, 1)
    reasons = {(os.path.basename(s), line, r) for s, line, _, r in rejects(any_engine)}
    assert ("mixed.us.txt", 3, "non-numeric open 'x'") in reasons
    assert ("empty.us.txt", None, "empty file") in reasons
    assert ("binary.us.txt", None, "binary content (NUL bytes), not a text file") in reasons
    assert ("noclose.csv", None, "header has no Close column (found: 'Date,Open,High,Low')") in reasons
    # An unreadable file that has not changed is not reported again.
    again = ingest(any_engine, [folder])
    assert again.files_skipped == 5 and len(rejects(any_engine)) == 4


def test_appended_file_adds_only_new_rows_and_reads_only_its_tail(any_engine, tmp_path, monkeypatch):
    path = write_file(tmp_path, "abc.us.txt", HEADER + "2017-01-03,10,11,9,10.5,100,0\n")
    ingest(any_engine, [path])
    with open(path, "a") as fh:
        fh.write("2017-01-04,10,11,9,10.6,100,0\n2017-01-05,10,11,9,bad,100,0\n")
    monkeypatch.setattr(reading_mod, "_read_whole", lambda *a: pytest.fail("whole file re-read"))
    report = ingest(any_engine, [path])
    assert (report.rows_added, report.rows_rejected, report.rows_unchanged) == (1, 1, 0)
    assert [(line, reason) for _, line, _, reason in rejects(any_engine)] == [(4, "non-numeric close 'bad'")]
    assert count(any_engine) == 2


def test_unchanged_file_is_not_parsed_again(any_engine, sample_dir, monkeypatch):
    ingest(any_engine, [sample_dir])
    monkeypatch.setattr(reading_mod, "read_many", lambda *a, **k: pytest.fail("parsed again"))
    assert ingest(any_engine, [sample_dir]).files_skipped == 3


def test_rewritten_file_keeps_stored_history_and_records_the_conflict(any_engine, tmp_path):
    path = write_file(tmp_path, "abc.us.txt", HEADER + "2017-01-03,10,11,9,10.5,100,0\n")
    ingest(any_engine, [path])
    write_file(tmp_path, "abc.us.txt", HEADER + "2017-01-03,10,11,9,10.7,100,0\n2017-01-04,10,11,9,10,1,0\n")
    report = ingest(any_engine, [path])
    assert (report.rows_added, report.rows_rejected) == (1, 1)
    [(_, line, ticker, reason)] = rejects(any_engine)
    assert (line, ticker) == (2, "abc")
    assert reason == "differs from the stored row for 2017-01-03 (stored close 10.5, file 10.7); the stored row is kept"
    with any_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT close FROM prices WHERE date='2017-01-03'").scalar() == 10.5


def test_rewritten_file_with_the_same_rows_adds_nothing(any_engine, tmp_path):
    text = HEADER + "2017-01-03,10,11,9,10.5,100,0\n"
    path = write_file(tmp_path, "abc.us.txt", text)
    ingest(any_engine, [path])
    write_file(tmp_path, "abc.us.txt", "\ufeff" + text.replace("\n", "\r\n"))
    report = ingest(any_engine, [path])
    assert (report.files_read, report.rows_added, report.rows_unchanged, report.rows_rejected) == (1, 0, 1, 0)


def test_a_missing_path_is_an_error(engine, tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        ingest(engine, [tmp_path / "nope"])


def test_a_file_growing_during_ingest_is_read_up_to_its_recorded_size(engine, tmp_path, monkeypatch):
    path = write_file(tmp_path, "abc.us.txt", HEADER + "2017-01-03,10,11,9,10.5,100,0\n")
    real_read_whole = reading_mod._read_whole

    def grow_then_read(fh, size, **kwargs):  # a vendor appends between our stat and our read
        with open(path, "a") as out:
            out.write("2017-01-04,10,11,9,10.6,100,0\n")
        return real_read_whole(fh, size, **kwargs)

    monkeypatch.setattr(reading_mod, "_read_whole", grow_then_read)
    assert ingest(engine, [path]).rows_added == 1  # only the bytes the ledger records as read
    monkeypatch.undo()
    second = ingest(engine, [path])  # the appended line is the next ingest's tail
    assert (second.rows_added, second.rows_rejected, second.rows_unchanged) == (1, 0, 0)
    assert count(engine) == 2


def test_one_ticker_in_two_files_of_one_ingest(any_engine, tmp_path):
    # e.g. the same ticker under Stocks/ and ETFs/, or as .txt and .csv
    write_file(tmp_path / "a", "x.us.txt", HEADER + "2017-01-03,10,11,9,10.5,100,0\n")
    write_file(tmp_path / "b", "x.csv", HEADER + "2017-01-03,10,11,9,10.5,100,0\n2017-01-04,10,11,9,10.6,100,0\n")
    write_file(tmp_path / "c", "x.txt", HEADER + "2017-01-04,10,11,9,10.9,100,0\n")
    report = ingest(any_engine, [tmp_path])
    assert (report.rows_added, report.rows_unchanged, report.rows_rejected) == (2, 1, 1)
    assert count(any_engine) == 2
    [(source, line, ticker, reason)] = rejects(any_engine)
    assert (os.path.basename(source), line, ticker) == ("x.txt", 2, "x")
    assert reason.startswith("differs from the stored row for 2017-01-04")


INGEST_AT = (
    "import sys, time\nfrom forecaster.db import store\nfrom forecaster.data.ingest import ingest\n"
    "url, start, folder = sys.argv[1], float(sys.argv[2]), sys.argv[3]\n"
    "engine = store.connect(url)\nwhile time.time() < start: pass\ningest(engine, [folder])\n"
)


def ingest_together(url: str, *folders) -> list[str]:
    """Real processes ingesting into one database, released at the same instant; their stderr on failure."""
    import subprocess
    import sys
    import time

    start = time.time() + 2.0
    procs = [
        subprocess.Popen([sys.executable, "-c", INGEST_AT, url, str(start), str(f)], stderr=subprocess.PIPE, text=True)
        for f in folders
    ]
    return [p.stderr.read() for p in procs if p.wait() != 0]


@pytest.mark.slow
def test_two_ingests_at_once_keep_the_summaries_right(any_db_url, tmp_path):
    # One ticker in two files (every other day in each), 60 tickers, each file
    # ingested by its own process at the same instant. Before the fix every
    # ticker's summary came from a snapshot read before the other's commit.
    from forecaster.data.sample import generate_ohlc

    for i in range(60):
        frame = generate_ohlc(1300, seed=i)
        write_file(tmp_path / "a", f"x{i}.us.txt", frame.iloc[0::2].to_csv(index=False))
        write_file(tmp_path / "b", f"x{i}.csv", frame.iloc[1::2].to_csv(index=False))
    engine = store.connect(any_db_url)
    assert ingest_together(any_db_url, tmp_path / "a", tmp_path / "b") == []
    assert count(engine) == 60 * 1300 and count(engine, "tickers") == 60
    assert summaries_against_prices(engine) == []


@pytest.mark.slow
def test_the_same_new_rows_ingested_twice_at_once_are_stored_once(any_db_url, tmp_path):
    from forecaster.data.sample import write_sample_data

    write_sample_data(tmp_path / "d", tickers=40, days=1300, seed=3)
    engine = store.connect(any_db_url)
    assert ingest_together(any_db_url, tmp_path / "d", tmp_path / "d") == []  # no UNIQUE failure
    assert count(engine) == 40 * 1300
    assert summaries_against_prices(engine) == []


@pytest.mark.parametrize("n_tickers", [3, 2 * SUMMARY_QUERY_TICKERS + 10])  # summaries read by name, or all at once
def test_appends_to_many_files_keep_every_tickers_summary_right(engine, tmp_path, n_tickers):
    header = "Date,Open,High,Low,Close,Volume,OpenInt\n"
    for i in range(n_tickers):
        write_file(tmp_path / "d", f"t{i:04d}.us.txt", header + "2017-01-02,1,2,1,1.5,10,0\n")
    ingest(engine, [tmp_path / "d"])
    for i in range(0, n_tickers, 2):  # every other ticker gets a new day
        with open(tmp_path / "d" / f"t{i:04d}.us.txt", "a") as fh:
            fh.write("2017-01-03,1,2,1,1.6,10,0\n")
    report = ingest(engine, [tmp_path / "d"])
    assert report.rows_added == (n_tickers + 1) // 2 and report.files_skipped == n_tickers // 2
    assert count(engine, "tickers", "WHERE n_rows = 2 AND last_date = '2017-01-03'") == (n_tickers + 1) // 2
    assert summaries_against_prices(engine) == []


def test_a_half_written_last_line_waits_for_its_end_and_is_stored_whole(any_engine, tmp_path):
    path = write_file(tmp_path, "abc.us.txt", "Date,Open,High,Low,Close\n2017-11-09,10,11,9,10.5\n")
    ingest(any_engine, [path])
    with open(path, "a") as fh:
        fh.write("2017-11-10,10.5,11,10,10.")  # the vendor is in the middle of writing it
    first = ingest(any_engine, [path])
    assert (first.rows_added, first.rows_rejected, first.rows_waiting) == (0, 0, 1)
    assert "waiting for a later ingest: 1 (" in first.summary() and ":3: an unterminated last line" in first.summary()
    with open(path, "a") as fh:
        fh.write("85\n")
    second = ingest(any_engine, [path])
    assert (second.rows_added, second.rows_rejected, second.rows_waiting) == (1, 0, 0)
    with any_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT close FROM prices WHERE date = '2017-11-10'").scalar() == 10.85
    assert rejects(any_engine) == []


def test_a_file_that_ends_without_a_newline_gets_its_last_row_once_it_has_settled(engine, tmp_path):
    path = write_file(tmp_path, "abc.us.txt", HEADER + "2017-01-03,10,11,9,10.5,100,0\n2017-01-04,10,11,9,10.6,100,0")
    assert (ingest(engine, [path]).rows_added, count(engine)) == (1, 1)  # just written: it may still grow
    old = path.stat().st_mtime - 120
    os.utime(path, (old, old))  # untouched for two minutes: complete as it is
    assert ingest(engine, [path]).rows_added == 1 and count(engine) == 2
    assert ingest(engine, [path]).files_skipped == 1  # and it is then done with
    # `settle=0` takes the last line at once (a file known to be complete).
    other = write_file(tmp_path, "xyz.us.txt", HEADER + "2017-01-03,10,11,9,10.5,100,0")
    assert ingest(engine, [other], settle=0).rows_added == 1
    # A vendor who later appends to a file that ended without a newline: every row once.
    with open(other, "a") as fh:
        fh.write("\n2017-01-04,10,11,9,10.6,100,0\n")
    again = ingest(engine, [other])
    assert (again.rows_added, again.rows_unchanged, again.rows_rejected) == (1, 1, 0)


def test_a_header_still_being_written_waits(engine, tmp_path):
    path = write_file(tmp_path, "abc.us.txt", "Date,Open,Hi")
    report = ingest(engine, [path])
    assert (report.files_unreadable, report.rows_waiting) == (0, 1) and rejects(engine) == []
    path.write_text(HEADER + "2017-01-03,10,11,9,10.5,100,0\n")
    assert ingest(engine, [path]).rows_added == 1


def test_a_row_dated_after_the_exchanges_day_waits_and_is_stored_when_that_day_comes(any_engine, tmp_path):
    import datetime as dt

    rows = ["2017-11-09,10,11,9,10.5,100,0", "2017-11-13,10,11,9,10.7,100,0", "2017-11-10,10,11,9,10.6,100,0"]
    path = write_file(tmp_path, "abc.us.txt", HEADER + "\n".join(rows) + "\n")
    early = ingest(any_engine, [path], today=dt.date(2017, 11, 10))
    assert (early.rows_added, early.rows_rejected, early.rows_waiting) == (2, 0, 1)
    assert "abc.us.txt:3: dated 2017-11-13, after the exchange's current day 2017-11-10" in early.summary()
    assert rejects(any_engine) == []
    # The ledger stopped before the waiting row: unchanged, the file is still read from there.
    later = ingest(any_engine, [path], today=dt.date(2017, 11, 13))
    assert (later.rows_added, later.rows_unchanged, later.rows_waiting) == (1, 1, 0)
    assert count(any_engine) == 3 and ingest(any_engine, [path]).files_skipped == 1


def test_a_row_set_aside_after_a_waiting_one_is_recorded_once(any_engine, tmp_path):
    """The ledger stops at the waiting row, so the lines after it are read
    again at every ingest: their rejection is recorded (and counted) once."""
    import datetime as dt

    rows = ["2017-11-09,10,11,9,10.5,100,0", "2017-11-13,10,11,9,10.7,100,0", "2017-11-10,x,11,9,10.6,100,0"]
    path = write_file(tmp_path, "abc.us.txt", HEADER + "\n".join(rows) + "\n")
    said = [ingest(any_engine, [path], today=dt.date(2017, 11, 10)).rows_rejected for _ in range(3)]
    assert said == [1, 0, 0] and len(rejects(any_engine)) == 1


def test_the_exchanges_day_is_its_own_not_the_hosts():
    import datetime as dt

    from forecaster.data.calendar import exchange_today

    # 03:30 UTC on Nov 14 is still the evening of Nov 13 in New York, already Nov 14 in Tokyo.
    at = dt.datetime(2017, 11, 14, 3, 30, tzinfo=dt.UTC)
    assert exchange_today("XNYS", at) == dt.date(2017, 11, 13)
    assert exchange_today("XTKS", at) == dt.date(2017, 11, 14)
