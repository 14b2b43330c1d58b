"""Closes that moved too far to be true: each kind found on a constructed
file, stored at ingest, judged again when what followed arrives, the same
day by day as all at once, and explained away by a revision."""

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import write_file
from helpers import rows

from forecaster.data import flags
from forecaster.data.ingest import ingest
from forecaster.db import store

HEADER = "Date,Open,High,Low,Close,Volume,OpenInt\n"


def calm_closes(n=200, seed=0, level=50.0):
    """A ticker moving about 1% a day."""
    return level * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, n)))


def with_event(kind, at=150):
    c = calm_closes()
    if kind == "split 2:1":
        c[at:] /= 2
    elif kind == "reverse split 1:10":
        c[at:] *= 10
    elif kind == "decimal error":
        c[at] /= 10  # 52.31 printed as 5.231, right again the next day
    elif kind == "crash":
        c[at:] *= 0.45  # a real 55% fall that stays
    return c


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("split 2:1", [(150, "split")]),
        ("reverse split 1:10", [(150, "split")]),
        ("decimal error", [(150, "bad_print"), (151, "revert")]),
        ("crash", [(150, "jump")]),
        ("none", []),
    ],
)
def test_each_kind_of_move_is_told_apart(event, expected):
    found = flags.detect(with_event(event))
    assert [(f.index, f.kind) for f in found] == expected


def test_a_move_is_judged_again_once_the_next_days_show_it_reverted():
    c = with_event("decimal error")
    [tonight] = flags.detect(c[:151])  # the night of the bad print: a 1:10 move, as a split would be
    assert (tonight.index, tonight.kind) == (150, "split")
    assert [(f.index, f.kind) for f in flags.detect(c[:152])] == [(150, "bad_print"), (151, "revert")]


def test_judging_from_a_later_row_with_its_context_finds_what_the_whole_history_finds():
    c = np.concatenate([with_event("decimal error"), with_event("split 2:1")[1:] * 0.5])
    c[[250, 251, 253, 254]] /= 10  # bad prints one after another: whether 253 reverts hangs on 250
    c[[300, 302, 304]] /= 10
    whole = flags.detect(c)
    assert [f.kind for f in whole if 250 <= f.index <= 305] == ["bad_print"] * 2 + ["revert"] + ["bad_print"] * 2 + [
        "revert",
        *["bad_print", "revert"] * 3,
    ]
    for first in range(140, len(c)):
        start = max(0, first - flags.CONTEXT)
        before = {f.index - start: f.kind for f in whole if start <= f.index < first}
        carried = flags.revert_in_progress(before, first - start)
        part = [(f.index + start, f.kind) for f in flags.detect(c[start:], first - start, reverted_at=carried)]
        assert part == [(f.index, f.kind) for f in whole if f.index >= first], first


def ohlc_file(closes, days):
    lines = [
        f"{d:%Y-%m-%d},{c:.4f},{c * 1.01:.4f},{c * 0.99:.4f},{c:.4f},1000,0" for d, c in zip(days, closes, strict=True)
    ]
    return HEADER + "\n".join(lines) + "\n"


def test_ingest_stores_the_flags_and_judges_the_newest_again_day_by_day(tmp_path):
    days = pd.bdate_range(end="2017-11-10", periods=200)
    closes = {"spl": with_event("split 2:1"), "dec": with_event("decimal error"), "cal": calm_closes(seed=3)}
    db = tmp_path / "f.db"
    engine = store.connect(f"sqlite:///{db}")
    for name, c in closes.items():  # up to the night of the bad print
        write_file(tmp_path / "d" / "Stocks", f"{name}.us.txt", ohlc_file(c[:151], days[:151]))
    ingest(engine, [tmp_path / "d"], settle=0)
    query = "SELECT ticker, date, kind FROM price_flags ORDER BY ticker, date"
    assert rows(engine, query) == [("dec", f"{days[150]:%Y-%m-%d}", "split"), ("spl", f"{days[150]:%Y-%m-%d}", "split")]
    for n in range(152, 156):  # night after night
        for name, c in closes.items():
            write_file(tmp_path / "d" / "Stocks", f"{name}.us.txt", ohlc_file(c[:n], days[:n]))
        ingest(engine, [tmp_path / "d"], settle=0)
    day = [f"{d:%Y-%m-%d}" for d in days]
    assert rows(engine, query) == [
        ("dec", day[150], "bad_print"),
        ("dec", day[151], "revert"),
        ("spl", day[150], "split"),
    ]
    detected = rows(engine, "SELECT detected_at FROM price_flags WHERE ticker = 'spl'")
    # Ingesting the same files again changes nothing; nor does a fresh database from the whole files.
    ingest(engine, [tmp_path / "d"], settle=0)
    assert rows(engine, "SELECT detected_at FROM price_flags WHERE ticker = 'spl'") == detected
    fresh = store.connect(f"sqlite:///{tmp_path / 'g.db'}")
    ingest(fresh, [tmp_path / "d"], settle=0)
    assert rows(fresh, query) == rows(engine, query)


def test_nights_of_one_to_three_new_rows_flag_what_one_ingest_of_the_whole_files_flags(tmp_path):
    """A night reads the context of a ticker only when one of its newest rows
    moved enough to be judged: events at every distance from a night's first
    new row, and calm tickers, end with the flags of a single ingest."""
    c = np.concatenate([with_event("decimal error"), with_event("split 2:1")[1:] * 0.5, with_event("crash")[1:] * 0.25])
    c[420:422] /= 10  # a bad print of two sessions
    for at in range(440, 560, 23):  # runs of bad prints, each undoing the one before
        c[[at, at + 1, at + 3, at + 4, at + 6, at + 8]] /= 10
    for at in range(170, 290, 13):  # 45% up for two sessions, then back by a move too small to look at
        c[at : at + 2] *= 1.45
        c[at + 2] *= 1.08
    days = pd.bdate_range(end="2017-11-10", periods=len(c))
    series = {"evt": c, "cal": calm_closes(len(c), seed=3), "low": calm_closes(len(c), seed=4, level=2.0)}
    engine = store.connect(f"sqlite:///{tmp_path / 'nightly.db'}")
    n, step = 140, 0
    while n < len(c):
        n, step = min(len(c), n + 1 + step % 3), step + 1
        for name, closes in series.items():
            write_file(tmp_path / "d" / "Stocks", f"{name}.us.txt", ohlc_file(closes[:n], days[:n]))
        if n > 300:  # a ticker listed later: read whole while it has few rows, beside the others' few
            write_file(tmp_path / "d" / "Stocks", "new.us.txt", ohlc_file(c[300:n] * 3, days[300:n]))
        ingest(engine, [tmp_path / "d"], settle=0)
    fresh = store.connect(f"sqlite:///{tmp_path / 'whole.db'}")
    ingest(fresh, [tmp_path / "d"], settle=0)
    query = "SELECT ticker, date, kind, ratio FROM price_flags ORDER BY ticker, date"
    assert rows(engine, query) == rows(fresh, query)
    assert {kind for _, _, kind, _ in rows(engine, query)} == {"bad_print", "revert", "split", "jump"}


def test_a_revised_history_clears_the_flags_it_explains(tmp_path):
    days = pd.bdate_range(end="2017-11-10", periods=200)
    c = with_event("split 2:1")
    engine = store.connect(f"sqlite:///{tmp_path / 'f.db'}")
    path = write_file(tmp_path / "d" / "Stocks", "spl.us.txt", ohlc_file(c, days))
    ingest(engine, [tmp_path / "d"], settle=0)
    assert rows(engine, "SELECT kind FROM price_flags") == [("split",)]
    adjusted = c.copy()
    adjusted[:150] /= 2  # the vendor's split-adjusted history
    path.write_text(ohlc_file(adjusted, days))
    report = ingest(engine, [tmp_path / "d"], settle=0, revise=["spl"])
    assert rows(engine, "SELECT kind FROM price_flags") == []
    assert "price flags 1 -> 0" in report.summary()


def test_an_older_database_judges_its_stored_history_on_the_next_ingest(tmp_path, sample_dir):
    """Upgraded from schema 7: every stored history is judged once."""
    db = tmp_path / "old.db"
    engine = store.connect(f"sqlite:///{db}")
    days = pd.bdate_range(end="2017-11-10", periods=200)
    write_file(sample_dir / "Stocks", "spl.us.txt", ohlc_file(with_event("split 2:1"), days))
    ingest(engine, [sample_dir], settle=0)
    with engine.begin() as conn:  # as a version 7 database had it: no flags, nothing judged
        conn.exec_driver_sql("DELETE FROM price_flags")
        conn.exec_driver_sql("UPDATE tickers SET judged_through = NULL")
    engine.dispose()
    ingest(store.connect(f"sqlite:///{db}"), [sample_dir], settle=0)  # nothing new in the files
    assert rows(engine, "SELECT ticker, kind FROM price_flags") == [("spl", "split")]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM tickers WHERE judged_through = last_date")).scalar() == 4


def test_judging_many_stored_histories_again_shows_its_progress(tmp_path, monkeypatch):
    """The once-only pass after an upgrade takes tens of seconds at 5,000
    tickers, inside the first write: a bar says what the ingest is doing."""
    days = pd.bdate_range(end="2017-11-10", periods=60)
    folder = tmp_path / "d" / "Stocks"
    for k in range(flags.PROGRESS_MIN_HISTORIES + 5):
        write_file(folder, f"t{k:02d}.us.txt", ohlc_file(calm_closes(60, seed=k), days))
    db = f"sqlite:///{tmp_path / 'f.db'}"
    ingest(store.connect(db), [tmp_path / "d"], settle=0)
    bars = []

    class Recorded:  # tqdm's part the pass uses
        def __init__(self, **settings):
            self.settings, self.done = settings, 0
            bars.append(self)

        def update(self, n):
            self.done += n

        def close(self):
            pass

    monkeypatch.setattr(flags, "tqdm", Recorded)
    one = folder / "t00.us.txt"
    for progress, paths in ((True, [tmp_path / "d"]), (False, [tmp_path / "d"]), (True, [one])):
        engine = store.connect(db)
        with engine.begin() as conn:  # as an upgrade leaves it: every history owed
            conn.exec_driver_sql("UPDATE tickers SET judged_through = NULL")
        if paths == [one]:  # one changed file: its write judges every history, too few files for ingest's bar
            with one.open("a") as fh:
                fh.write("2017-11-13,50,50.5,49.5,50,1000,0\n")
        ingest(engine, paths, settle=0, progress=progress)
        [bar] = bars[-1:]
        assert bar.settings["total"] == bar.done == flags.PROGRESS_MIN_HISTORIES + 5
        assert bar.settings["disable"] is not progress
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM tickers WHERE judged_through IS NULL")).scalar() == 0


def test_a_database_of_schema_8_judges_its_flags_again_on_the_next_ingest(tmp_path, sample_dir):
    """Judged night by night before version 9, a run of bad prints could end in a split."""
    db = tmp_path / "v8.db"
    days = pd.bdate_range(end="2017-11-10", periods=200)
    c = calm_closes()
    c[[151, 152, 154, 155]] /= 10
    write_file(sample_dir / "Stocks", "run.us.txt", ohlc_file(c, days))
    engine = store.connect(f"sqlite:///{db}")
    ingest(engine, [sample_dir], settle=0)
    right = rows(engine, "SELECT ticker, date, kind FROM price_flags ORDER BY ticker, date")
    assert right[-1] == ("run", f"{days[156]:%Y-%m-%d}", "revert")
    with engine.begin() as conn:  # as version 8 could have left it
        conn.exec_driver_sql(f"UPDATE price_flags SET kind = 'split' WHERE date = '{days[156]:%Y-%m-%d}'")
        conn.exec_driver_sql("UPDATE schema_info SET version = 8")
    engine.dispose()
    ingest(store.connect(f"sqlite:///{db}"), [sample_dir], settle=0)  # nothing new in the files
    assert rows(engine, "SELECT ticker, date, kind FROM price_flags ORDER BY ticker, date") == right


def test_a_day_that_arrives_late_is_judged_with_its_neighbours(tmp_path, monkeypatch, any_db_url):
    """The vendor fills a missing day after later ones were stored and judged:
    the ticker is judged again from there, not read whole."""
    days = pd.bdate_range(end="2017-11-10", periods=180)
    c = calm_closes(180, seed=2)
    c[150] /= 10  # a bad print, right again the next day: missing from the file until later
    engine = store.connect(any_db_url)
    anchors = []
    recent_rows = flags._recent_rows
    monkeypatch.setattr(
        flags, "_recent_rows", lambda conn, t, anchor, n: anchors.append(anchor) or recent_rows(conn, t, anchor, n)
    )
    for n in range(140, 181, 3):
        kept = [i for i in range(n) if i != 150 or n >= 170]
        write_file(tmp_path / "d" / "Stocks", "lat.us.txt", ohlc_file(c[kept], days[kept]))
        ingest(engine, [tmp_path / "d"], settle=0)
        if n == 170:
            assert f"{days[149]:%Y-%m-%d}" in anchors and None not in anchors
    query = "SELECT ticker, date, kind FROM price_flags ORDER BY ticker, date"
    assert rows(engine, query) == [
        ("lat", f"{days[150]:%Y-%m-%d}", "bad_print"),
        ("lat", f"{days[151]:%Y-%m-%d}", "revert"),
    ]


@pytest.mark.slow
def test_the_real_universe_is_flagged_the_same_way_every_time(tmp_path, shared_universe):
    """400 real tickers: two fresh ingests flag the same days, every flag's
    ratio is the stored closes', and a second ingest of the same files flags nothing new."""
    first = store.connect(f"sqlite:///{tmp_path / 'a.db'}")
    ingest(first, [shared_universe], settle=0)
    query = "SELECT ticker, date, kind, ratio, detected_at FROM price_flags ORDER BY ticker, date"
    found = rows(first, query)
    assert len(found) > 100 and {k for _, _, k, _, _ in found} == set(flags.KINDS)
    ingest(first, [shared_universe], settle=0)
    assert rows(first, query) == found
    second = store.connect(f"sqlite:///{tmp_path / 'b.db'}")
    ingest(second, [shared_universe], settle=0)
    assert [r[:4] for r in rows(second, query)] == [r[:4] for r in found]
    moved = rows(
        first,
        "SELECT f.kind, f.ratio, p.close / (SELECT b.close FROM prices b WHERE b.ticker = p.ticker AND b.date < p.date "
        "ORDER BY b.date DESC LIMIT 1) FROM price_flags f JOIN prices p ON p.ticker = f.ticker AND p.date = f.date",
    )
    assert len(moved) == len(found) and all(a == pytest.approx(b, rel=1e-12) for _, a, b in moved)
    assert all(abs(np.log(a)) >= flags.MIN_MOVE for kind, a, _ in moved if kind in ("split", "jump"))
