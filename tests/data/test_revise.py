"""`ingest --revise`: a vendor's revised history accepted on purpose, in one
transaction, with an audit of what it replaced; predictions stay as made."""

import shutil

import pytest
import sqlalchemy as sa
from helpers import count, invoke, rejects, summaries_against_prices

from forecaster.data.ingest import ingest
from forecaster.db import schema
from forecaster.errors import SourceError
from forecaster.serving.nightly import predict


def revised_copy(source, dest, factor=0.98):
    """The file as a vendor re-issues it after an adjustment: every price x factor."""
    lines = source.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        date, o, h, low, c, *rest = line.split(",")
        out.append(",".join([date, *(f"{float(x) * factor:.4f}" for x in (o, h, low, c)), *rest]))
    dest.write_text("\n".join(out) + "\n")
    return dest


def outcomes(engine):
    with engine.connect() as conn:
        return dict(conn.exec_driver_sql("SELECT prediction_id, actual_close FROM prediction_outcomes").all())


@pytest.mark.slow
def test_a_revised_history_is_refused_as_conflicts_then_accepted_with_revise(
    any_engine, shared_data, tmp_path, tiny_model
):
    original = tmp_path / "v1" / "aaxj.us.txt"
    original.parent.mkdir()
    shutil.copy(shared_data / "ETFs" / "aaxj.us.txt", original)
    ingest(any_engine, [original])
    stored = count(any_engine)
    predict(any_engine, tiny_model, start="2017-10-02", end="2017-11-10", device="cpu")
    made = count(any_engine, "predictions")
    before = outcomes(any_engine)
    with any_engine.connect() as conn:
        closes = dict(conn.exec_driver_sql("SELECT date, close FROM prices").all())
        made_from = conn.exec_driver_sql("SELECT prediction_id, last_close, predicted_close FROM predictions").all()

    (tmp_path / "v2").mkdir()
    revised = revised_copy(original, tmp_path / "v2" / "aaxj.us.txt")
    plain = ingest(any_engine, [revised])
    assert (plain.rows_added, plain.rows_rejected) == (0, stored)  # history is never overwritten silently
    report = ingest(any_engine, [revised], revise=["AAXJ"], settle=0)
    [revision] = report.revisions
    assert (revision.ticker, revision.replaced, revision.removed, revision.added) == ("aaxj", stored, 0, 0)
    assert revision.outcomes_changed == sum(v is not None for v in before.values()) > 0
    assert "revised aaxj: " + f"{stored} rows replaced" in report.summary()
    with any_engine.connect() as conn:
        new = dict(conn.exec_driver_sql("SELECT date, close FROM prices").all())
        audit = conn.execute(
            sa.select(schema.price_revisions.c.date, schema.price_revisions.c.close, schema.price_revisions.c.change)
        ).all()
        assert (
            conn.exec_driver_sql("SELECT prediction_id, last_close, predicted_close FROM predictions").all()
            == made_from
        )
    assert all(new[d] == pytest.approx(closes[d] * 0.98, abs=1e-4) for d in closes)
    assert sorted((d, c) for d, c, _ in audit) == sorted(closes.items()) and {k for *_, k in audit} == {"replaced"}
    assert count(any_engine, "predictions") == made and summaries_against_prices(any_engine) == []
    # Revised once: the same file again is unchanged, not a revision.
    assert ingest(any_engine, [revised]).files_skipped == 1


def test_a_revision_removes_dates_the_vendor_dropped_and_adds_new_ones(engine, tmp_path):
    header = "Date,Open,High,Low,Close\n"
    path = tmp_path / "x.us.txt"
    path.write_text(header + "2017-01-03,1,1,1,1\n2017-01-04,2,2,2,2\n2017-01-05,3,3,3,3\n")
    ingest(engine, [path])
    path.write_text(header + "2017-01-03,1,1,1,1\n2017-01-05,3.5,3.5,3.5,3.5\n2017-01-06,4,4,4,4\n")
    [r] = ingest(engine, [path], revise=["x"], settle=0).revisions
    assert (r.unchanged, r.replaced, r.removed, r.added) == (1, 1, 1, 1)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT date, close FROM prices ORDER BY date").all() == [
            ("2017-01-03", 1.0),
            ("2017-01-05", 3.5),
            ("2017-01-06", 4.0),
        ]
        assert conn.exec_driver_sql("SELECT date, change, close FROM price_revisions ORDER BY date").all() == [
            ("2017-01-04", "removed", 2.0),
            ("2017-01-05", "replaced", 3.0),
        ]
    assert summaries_against_prices(engine) == [] and count(engine, "price_dates") == 3


def test_a_revision_with_bad_rows_changes_nothing_and_a_later_ingest_still_reads_the_file(engine, tmp_path):
    header = "Date,Open,High,Low,Close\n"
    path = tmp_path / "x.us.txt"
    path.write_text(header + "2017-01-03,1,1,1,1\n2017-01-04,2,2,2,2\n")
    ingest(engine, [path])
    path.write_text(header + "2017-01-03,1.5,1.5,1.5,1.5\n2017-01-04,x,2,2,2\n2017-01-05,3,3,3,3\n")
    [r] = ingest(engine, [path], revise=["x"], settle=0).revisions
    assert r.refused == "1 row of the revised file is set aside (line 3): the stored history is kept"
    assert count(engine) == 2 and count(engine, "price_revisions") == 0
    assert [reason for *_, reason in rejects(engine)] == ["non-numeric open 'x'"]
    later = ingest(engine, [path])  # not marked as read: a plain ingest still takes the new day
    assert later.rows_added == 1 and count(engine) == 3


def test_revise_names_a_ticker_without_a_file(engine, tmp_path):
    (tmp_path / "x.us.txt").write_text("Date,Open,High,Low,Close\n2017-01-03,1,1,1,1\n")
    with pytest.raises(SourceError, match=r"--revise zzz: no file for it among the paths given"):
        ingest(engine, [tmp_path], revise=["zzz"], settle=0)
    assert count(engine) == 0


def test_ingest_revise_from_the_command_line(db_url, tmp_path):
    path = tmp_path / "x.us.txt"
    path.write_text("Date,Open,High,Low,Close\n2017-01-03,1,1,1,1\n")
    assert invoke("ingest", path, "--db", db_url).exit_code == 0
    path.write_text("Date,Open,High,Low,Close\n2017-01-03,2,2,2,2\n")
    result = invoke("ingest", path, "--revise", "x", "--settle", "0", "--db", db_url)
    assert result.exit_code == 0
    assert "revised x: 1 rows replaced, 0 removed, 0 added (the old rows are kept in price_revisions)" in result.output


def test_a_revision_is_read_only_from_a_file_left_alone_and_a_refused_one_fails_the_command(db_url, tmp_path):
    import os

    path = tmp_path / "x.us.txt"
    path.write_text("Date,Open,High,Low,Close\n2017-01-03,1,1,1,1\n2017-01-04,1,1,1,1\n")
    assert invoke("ingest", path, "--db", db_url).exit_code == 0
    path.write_text("Date,Open,High,Low,Close\n2017-01-03,2,2,2,2\n")  # cut short: it may be mid-write
    fresh = invoke("ingest", path, "--revise", "x", "--db", db_url)
    assert fresh.exit_code == 1 and "may still be being written; revise once it has been left alone" in fresh.output
    old = path.stat().st_mtime - 120
    path.write_text("Date,Open,High,Low,Close\n2017-01-03,2,2,2,2\n2017-01-04,x,2,2,2\n")
    os.utime(path, (old, old))
    refused = invoke("ingest", path, "--revise", "x", "--db", db_url)
    assert refused.exit_code == 1 and "revision of x refused" in refused.output
    assert refused.output.endswith("Error: 1 revision(s) refused: x\n")


def test_ingest_logs_json_lines_for_a_cron_job_s_log_collector(db_url, tmp_path):
    """--log-format json: every stderr line an object, nothing on stdout; the
    counts as fields, each unreadable file an event, a refused revision a failure."""
    import json
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.us.txt").write_text("Date,Open,High,Low,Close\n2017-01-03,1,1,1,1\n2017-01-04,1,1,1,1\n")
    (folder / "empty.us.txt").write_text("")
    done = invoke("ingest", folder, "--log-format", "json", "--db", db_url)
    assert done.exit_code == 0 and done.stdout == ""
    events = [json.loads(line) for line in done.stderr.splitlines()]
    assert [e["event"] for e in events] == ["file_unreadable", "ingest_finished"]
    assert "empty.us.txt" in events[0]["message"] and events[0]["level"] == "warning"
    assert {k: events[1][k] for k in ("files_read", "files_unreadable", "rows_added", "rows_rejected")} == {
        "files_read": 1,
        "files_unreadable": 1,
        "rows_added": 2,
        "rows_rejected": 0,
    }
    path = folder / "x.us.txt"
    path.write_text("Date,Open,High,Low,Close\n2017-01-03,2,2,2,2\n2017-01-04,x,2,2,2\n")
    old = path.stat().st_mtime - 120
    os.utime(path, (old, old))
    refused = invoke("ingest", path, "--revise", "x", "--log-format", "json", "--db", db_url)
    events = [json.loads(line) for line in refused.stderr.splitlines()]
    assert refused.exit_code == 1 and [e["event"] for e in events] == ["ingest_finished", "failed"]
    assert "revision of x refused" in events[0]["message"] and events[1]["message"] == "1 revision(s) refused: x"
