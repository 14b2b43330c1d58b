"""Loading OHLC files into `prices`, incrementally and atomically per batch.

reading.py decides what is new in each file (from the `source_files` ledger)
and parses and judges it; this module writes it. A stored row is never
overwritten: a file that later gives other values for a stored date has that
row set aside as a conflict (the stored row is kept). A batch's rows,
rejections and ledger entries commit in one transaction.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from tqdm import tqdm

from ..clock import utc_now
from ..db import bulk, schema, store
from ..errors import SourceError, UnreadableFileError
from . import flags, reader_process
from .calendar import exchange_today
from .config import DEFAULT_CALENDAR, SETTLE_SECONDS
from .discovery import find_files, ticker_from_path
from .parsing import PRICE_COLUMNS, VALUES
from .reading import Batch, FileResult, Known, new_bytes, read_batches
from .rules import Rejection, Rows

PROGRESS_MIN_FILES = 20
OPEN_AT, CLOSE_AT, VOLUME_AT = (VALUES.index(c) for c in ("open", "close", "volume"))  # in Rows.values
# Above this many new bytes (~400k rows), a second process reads while this
# one writes; below it, starting that process (~0.4 s) costs more than it
# saves. Measured on 2 cores: 32 MiB 0.93x, 63 MiB 1.17x, 1.6 GB 1.4x.
READER_PROCESS_MIN_BYTES = 48 << 20


@dataclass
class Revision:
    """What `--revise` did to one ticker's stored history."""

    ticker: str
    source: str
    replaced: int = 0  # stored days whose values the revision changed
    removed: int = 0  # stored days the revised file no longer has
    added: int = 0  # days only the revised file has
    unchanged: int = 0
    outcomes_changed: int = 0  # predictions whose next close (their outcome) is now another
    flags_before: int = 0  # the ticker's price_flags before and after (a revision explains a split)
    flags_after: int = 0
    refused: str = ""  # why nothing was changed (then the counts are 0)

    def summary(self) -> str:
        if self.refused:
            return f"revision of {self.ticker} refused: {self.refused}"
        return (
            f"revised {self.ticker}: {self.replaced} rows replaced, {self.removed} removed, {self.added} added "
            f"(the old rows are kept in price_revisions); {self.outcomes_changed} prediction outcomes changed; "
            f"price flags {self.flags_before} -> {self.flags_after}"
        )


@dataclass
class IngestReport:
    files_read: int = 0
    files_skipped: int = 0  # unchanged since the last ingest, not opened
    files_unreadable: int = 0
    rows_added: int = 0
    rows_unchanged: int = 0  # already stored with the same values
    rows_rejected: int = 0
    rows_waiting: int = 0  # read again by the next ingest: an unterminated last line, or dated after today
    problems: list[str] = field(default_factory=list)  # one line per unreadable file
    waiting: list[str] = field(default_factory=list)  # "file:line: why", for the first WAITING_LISTED
    revisions: list[Revision] = field(default_factory=list)

    def summary(self) -> str:
        said = (
            f"files read: {self.files_read}, skipped unchanged: {self.files_skipped}, "
            f"unreadable: {self.files_unreadable}; rows added: {self.rows_added}, "
            f"already stored: {self.rows_unchanged}, set aside: {self.rows_rejected}"
        )
        if self.rows_waiting:
            said += f", waiting for a later ingest: {self.rows_waiting} (" + "; ".join(self.waiting)
            said += (
                f" and {self.rows_waiting - len(self.waiting)} more)" if self.rows_waiting > len(self.waiting) else ")"
            )
        return "\n".join([said, *(r.summary() for r in self.revisions)])


WAITING_LISTED = 3


@dataclass
class _Summary:
    """A ticker's row in `tickers`, kept in memory during one ingest."""

    first_date: str
    last_date: str
    n_rows: int


def ingest(
    engine: sa.Engine,
    paths: Iterable[str | Path],
    *,
    progress: bool = False,
    today: dt.date | None = None,
    reader: str = "auto",
    calendar: str = DEFAULT_CALENDAR,
    settle: float = SETTLE_SECONDS,
    revise: Iterable[str] = (),
) -> IngestReport:
    """Load new rows from `paths` (files or folders) into the database.

    A row dated after `today` (default: the current day where the exchange
    of `calendar` is) and the unterminated last line of a file changed less
    than `settle` seconds ago are not stored yet: the ledger stops before
    them, so a later ingest reads them again (reading.py).
    `revise`: tickers whose file is a vendor's revised history, to replace
    what is stored for them (see _revise).
    `reader`: "inline" reads in this process, "process" in a second one,
    "auto" picks the second process above READER_PROCESS_MIN_BYTES."""
    files = list(find_files(list(paths)))
    today = today or exchange_today(calendar)
    revised = _revised_files(files, revise, settle)
    report = IngestReport()
    with engine.connect() as conn:
        # The ledger only says which bytes to read; what is new is decided
        # again under the write lock (another ingest may run beside this one).
        sf = schema.source_files.c
        ledger = {
            path: Known(*known)
            for path, *known in bulk.fetch_plain(
                conn, sa.select(sf.path, sf.size, sf.mtime_ns, sf.lines, sf.tail_sha256)
            )
            if path not in revised  # a revised file is read whole, complete as it is
        }
    if reader == "auto":
        reader = "process" if new_bytes(files, ledger) >= READER_PROCESS_MIN_BYTES else "inline"
    batches: Iterator[Batch] = (
        reader_process.read_batches(files, ledger, today, settle, revised)
        if reader == "process"
        else read_batches(files, ledger, today, settle, revised)
    )
    quiet = not progress or len(files) < PROGRESS_MIN_FILES
    with tqdm(total=len(files), desc="ingest", unit="file", disable=quiet, leave=False) as bar:
        for batch in batches:
            report.files_skipped += batch.skipped
            if batch.results:
                _write(engine, batch.results, report, set(revised.values()), progress)  # one file's write may judge all
            bar.update(batch.files)
    store.refresh_statistics(engine, ["prices", "tickers", "price_dates", "price_flags"], report.rows_added)
    with engine.connect() as conn:
        owed = flags.any_owed(conn)
    if owed:  # stored rows never judged: a database from before price_flags
        with store.write_transaction(engine) as conn:
            flags.judge_new_rows(conn, utc_now(), {}, progress=progress)
    return report


def _revised_files(files: list[Path], tickers: Iterable[str], settle: float) -> dict[str, str]:
    """{path: ticker} of the one file of each ticker to revise; SourceError
    before anything is read otherwise. A revision replaces a whole history,
    so its file must be complete: unchanged for `settle` seconds (a file cut
    short mid-write would remove every day after the cut)."""
    wanted = sorted({t.strip().lower() for t in tickers if t.strip()})
    if not wanted:
        return {}
    found: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        try:
            found[ticker_from_path(path)].append(path)
        except UnreadableFileError:
            continue
    for ticker in wanted:
        if not found[ticker]:
            raise SourceError(f"--revise {ticker}: no file for it among the paths given")
        if len(found[ticker]) > 1:
            raise SourceError(
                f"--revise {ticker}: {len(found[ticker])} files give it ({', '.join(map(str, found[ticker]))}); "
                "revise from one"
            )
        age = time.time() - found[ticker][0].stat().st_mtime
        if age < settle:
            raise SourceError(
                f"--revise {ticker}: {found[ticker][0]} changed {age:.0f} s ago and may still be being written; "
                f"revise once it has been left alone for {settle:g} s (--settle)"
            )
    return {str(found[t][0]): t for t in wanted}


def _write(
    engine: sa.Engine,
    results: list[FileResult],
    report: IngestReport,
    revise: set[str] = frozenset(),
    progress: bool = False,
) -> None:
    """One transaction for a batch of files: each file's rows, rejections and
    ledger entry land together or not at all. The tickers' summaries are read
    inside it, under the write lock, so two ingests at once cannot both
    decide from the same stale snapshot."""
    now = utc_now()
    rejects, ledgers, dates = [], [], Counter()
    changed: dict[str, _Summary] = {}
    backfilled: dict[str, str] = {}  # ticker -> the earliest new row dated before its newest stored
    # A ticker in two files of this batch (x.us.txt beside x.csv): the second
    # file must see the first one's rows, so those are inserted at once; all
    # other rows go in together at the end (one bulk insert, not one per file).
    files_per_ticker = Counter(r.ticker for r in results if r.rows is not None and len(r.rows))
    deferred: list[np.ndarray] = []
    whole: dict[
        str, tuple[np.ndarray, np.ndarray, np.ndarray]
    ] = {}  # tickers whose whole history is in hand: new or revised
    with store.write_transaction(engine) as conn:
        summaries = _summaries(conn, set(files_per_ticker))
        for res in results:
            file_rejects = list(res.rejects)
            added = 0
            if res.ticker in revise:
                revision = _revise(conn, res, now)
                report.revisions.append(revision)
                if revision.refused:
                    res.ledger = None  # not read: a plain ingest still takes its new days
                else:
                    dates.update({d: n for d, n in revision.date_counts.items() if n})
                    changed[res.ticker] = summaries[res.ticker] = revision.summary_row
                    added = revision.added
                    report.rows_unchanged += revision.unchanged
                    whole[res.ticker] = (res.rows.dates, res.rows.values[:, CLOSE_AT], res.rows.values[:, OPEN_AT])
            elif res.rows is not None and len(res.rows):
                new, unchanged, conflicts = _split_against_stored(conn, res.ticker, res.rows, summaries.get(res.ticker))
                file_rejects.extend(conflicts)
                report.rows_unchanged += unchanged
                added = len(new)
                if added:
                    records = _price_records(res.ticker, new)
                    if res.ticker not in summaries and files_per_ticker[res.ticker] == 1:
                        whole[res.ticker] = (new.dates, new.values[:, CLOSE_AT], new.values[:, OPEN_AT])  # all of it
                    if files_per_ticker[res.ticker] > 1:
                        bulk.bulk_insert(conn, schema.prices, records)
                    else:
                        deferred.append(records)
                    dates.update(new.dates.tolist())
                    stored = summaries.get(res.ticker)
                    if stored is not None and min(new.dates) <= stored.last_date:  # a day that arrived late
                        backfilled[res.ticker] = min(backfilled.get(res.ticker, stored.last_date), min(new.dates))
                    changed[res.ticker] = summaries[res.ticker] = _merged(stored, new)
            if res.ticker is None:
                report.files_unreadable += 1
                report.problems.append(f"{res.path}: {file_rejects[0].reason}")
            else:
                report.files_read += 1
            if res.ledger is not None:
                ledgers.append(
                    {**res.ledger, "ingested_at": now, "rows_added": added, "rows_rejected": len(file_rejects)}
                )
            rejects.extend(
                {
                    "source": res.path,
                    "line": r.line,
                    "ticker": res.ticker,
                    "raw": r.raw,
                    "reason": r.reason,
                    "rejected_at": now,
                }
                for r in file_rejects
            )
            report.rows_added += added
            report.rows_rejected += sum(r.line is not None for r in file_rejects)
            report.rows_waiting += len(res.waiting)
            report.waiting.extend(
                f"{res.path}:{r.line}: {r.reason}" for r in res.waiting[: WAITING_LISTED - len(report.waiting)]
            )
        if deferred:
            bulk.bulk_insert(conn, schema.prices, np.concatenate(deferred))
        if rejects:
            fresh = _not_recorded(conn, rejects)
            report.rows_rejected -= sum(r["line"] is not None for r in rejects) - sum(
                r["line"] is not None for r in fresh
            )
            if fresh:
                conn.execute(schema.rejected_rows.insert(), fresh)
        sf = schema.source_files
        bulk.upsert(
            conn,
            sf,
            ledgers,
            ["path"],
            {
                **{
                    c: (lambda ex, c=c: ex[c])
                    for c in ("ticker", "size", "mtime_ns", "lines", "tail_sha256", "ingested_at")
                },
                "rows_added": lambda ex: sf.c.rows_added + ex.rows_added,
                "rows_rejected": lambda ex: sf.c.rows_rejected + ex.rows_rejected,
            },
        )
        t = schema.tickers.c
        bulk.upsert(
            conn,
            schema.tickers,
            [{"ticker": t, **vars(s)} for t, s in changed.items()],
            ["ticker"],
            {c: (lambda ex, c=c: ex[c]) for c in ("first_date", "last_date", "n_rows")},
        )
        revised = [r for r in report.revisions if not r.refused and r.ticker in whole]
        if revised:  # judged again from their first day: the flags the revision explains go
            names = [r.ticker for r in revised]
            before = Counter(
                conn.execute(
                    sa.select(schema.price_flags.c.ticker).where(schema.price_flags.c.ticker.in_(names))
                ).scalars()
            )
            conn.execute(schema.tickers.update().where(t.ticker.in_(names)).values(judged_through=None))
        for ticker, earliest in backfilled.items():
            _judge_again_from(conn, ticker, earliest)
        flags.judge_new_rows(conn, now, whole, progress)
        if revised:
            after = Counter(
                conn.execute(
                    sa.select(schema.price_flags.c.ticker).where(schema.price_flags.c.ticker.in_(names))
                ).scalars()
            )
            for r in revised:
                r.flags_before, r.flags_after = before[r.ticker], after[r.ticker]
        pd_ = schema.price_dates
        bulk.upsert(
            conn,
            pd_,
            [{"date": d, "n_rows": n} for d, n in sorted(dates.items())],
            ["date"],
            {"n_rows": lambda ex: pd_.c.n_rows + ex.n_rows},
        )
        if any(n < 0 for n in dates.values()):  # a revision removed the last row of some day
            conn.execute(pd_.delete().where(pd_.c.n_rows <= 0))


SUMMARY_QUERY_TICKERS = 500  # bound parameters per query, well under any SQLite build's limit


def _not_recorded(conn: sa.Connection, rejects: list[dict]) -> list[dict]:
    """The rejections not recorded before. A file whose ledger stopped at a
    row that waits (dated after today) is read again from there, and the
    lines after it would be set aside again at every ingest."""
    r = schema.rejected_rows.c
    lines: dict[str, set[int]] = defaultdict(set)
    for row in rejects:
        if row["line"] is not None:
            lines[row["source"]].add(row["line"])
    seen = set()
    for source, wanted in lines.items():
        numbers = sorted(wanted)
        for first in range(0, len(numbers), SUMMARY_QUERY_TICKERS):
            chunk = numbers[first : first + SUMMARY_QUERY_TICKERS]
            query = sa.select(r.line, r.raw, r.reason).where(r.source == source, r.line.in_(chunk))
            seen.update((source, *row) for row in conn.execute(query))
    return [row for row in rejects if (row["source"], row["line"], row["raw"], row["reason"]) not in seen]


def _summaries(conn: sa.Connection, tickers: set[str]) -> dict[str, _Summary]:
    t = schema.tickers.c
    columns = sa.select(t.ticker, t.first_date, t.last_date, t.n_rows)
    if len(tickers) > SUMMARY_QUERY_TICKERS:  # a night of thousands of files: one read of the whole table
        return {name: _Summary(*rest) for name, *rest in bulk.fetch_plain(conn, columns) if name in tickers}
    names = sorted(tickers)
    return {name: _Summary(*rest) for name, *rest in bulk.fetch_plain(conn, columns.where(t.ticker.in_(names)))}


def _judge_again_from(conn: sa.Connection, ticker: str, earliest: str) -> None:
    """A row dated `earliest` arrived after later ones were judged: the
    ticker is judged again from there, as from a night whose first new row it
    is (judged_through: its stored row before, if judged that far; NULL,
    the whole history, if it has none)."""
    t, before = schema.tickers.c, schema.prices.alias("before")
    stored_before = (
        sa.select(sa.func.max(before.c.date))
        .where(before.c.ticker == t.ticker, before.c.date < earliest, before.c.date <= t.judged_through)
        .scalar_subquery()
    )
    conn.execute(schema.tickers.update().where(t.ticker == ticker).values(judged_through=stored_before))


def _merged(summary: _Summary | None, rows: Rows) -> _Summary:
    first, last = str(rows.dates[0]), str(rows.dates[-1])  # rows are sorted by date
    if summary is None:
        return _Summary(first, last, len(rows))
    return _Summary(min(first, summary.first_date), max(last, summary.last_date), summary.n_rows + len(rows))


def _split_against_stored(conn, ticker: str, rows: Rows, summary: _Summary | None):
    """(rows not yet stored, count identical to stored, conflicts set aside).
    A pure append (every date after the stored ones) needs no query."""
    first, last = str(rows.dates[0]), str(rows.dates[-1])  # rows are sorted by date
    if summary is None or first > summary.last_date:
        return rows, 0, []
    p = schema.prices.c
    stored = {
        r[0]: r[1:]
        for r in conn.execute(
            sa.select(p.date, p.open, p.high, p.low, p.close, p.volume).where(
                p.ticker == ticker, p.date >= first, p.date <= last
            )
        )
    }
    if not stored:
        return rows, 0, []
    fresh, unchanged, conflicts = [], 0, []
    for i, date in enumerate(rows.dates):
        old = stored.get(date)
        if old is None:
            fresh.append(i)
            continue
        new = rows.values[i]
        old = np.array([np.nan if x is None else x for x in old], dtype=np.float64)
        if np.array_equal(new, old, equal_nan=True):
            unchanged += 1
        else:
            conflicts.append(
                Rejection(
                    int(rows.lines[i]),
                    _row_text(date, new),
                    f"differs from the stored row for {date} (stored close {old[CLOSE_AT]:g}, file {new[CLOSE_AT]:g}); "
                    "the stored row is kept",
                )
            )
    return rows.take(np.array(fresh, dtype=np.int64)), unchanged, conflicts


@dataclass
class _Revised(Revision):
    date_counts: Counter = field(default_factory=Counter)  # +1 per day added, -1 per day removed
    summary_row: _Summary | None = None


def _revise(conn: sa.Connection, res: FileResult, now: str) -> _Revised:
    """Make the ticker's stored history the file's rows, in the caller's
    transaction: days whose values differ are replaced, days the file lacks
    are removed, new days added; every replaced or removed row goes to
    price_revisions with its old values. A file with any row set aside is
    no clean history: nothing changes then. Predictions keep their
    last_close; the count of outcomes (next closes) that changed is returned."""
    ticker, revision = res.ticker, _Revised(res.ticker, res.path)
    bad = [r.line for r in res.rejects if r.line is not None]
    if bad or res.rows is None or not len(res.rows):
        lines = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        revision.refused = (
            f"{len(bad)} row{'s' * (len(bad) != 1)} of the revised file {'are' if len(bad) != 1 else 'is'} set aside "
            f"(line{'s' * (len(bad) != 1)} {lines}): the stored history is kept"
            if bad
            else "the revised file holds no rows: the stored history is kept"
        )
        return revision
    p = schema.prices.c
    stored = {
        r[0]: np.array([np.nan if x is None else x for x in r[1:]], dtype=np.float64)
        for r in conn.execute(
            sa.select(p.date, p.open, p.high, p.low, p.close, p.volume).where(p.ticker == ticker)
        ).all()
    }
    new = {str(d): res.rows.values[i] for i, d in enumerate(res.rows.dates)}
    replaced = [d for d in new if d in stored and not np.array_equal(new[d], stored[d], equal_nan=True)]
    removed = sorted(set(stored) - set(new))
    added = [d for d in new if d not in stored]
    before = _outcomes(conn, ticker)
    audit = [
        {
            "revised_at": now,
            "source": res.path,
            "ticker": ticker,
            "date": d,
            "change": change,
            **{name: float(stored[d][VALUES.index(name)]) for name in PRICE_COLUMNS},
            "volume": None if np.isnan(stored[d][VOLUME_AT]) else float(stored[d][VOLUME_AT]),
            "new_close": float(new[d][CLOSE_AT]) if change == "replaced" else None,
        }
        for change, days in (("replaced", replaced), ("removed", removed))
        for d in days
    ]
    if audit:
        conn.execute(schema.price_revisions.insert(), audit)
    gone = replaced + removed
    for first in range(0, len(gone), SUMMARY_QUERY_TICKERS):
        chunk = gone[first : first + SUMMARY_QUERY_TICKERS]
        conn.execute(schema.prices.delete().where(p.ticker == ticker, p.date.in_(chunk)))
    written = set(replaced) | set(added)
    keep = np.array([d in written for d in res.rows.dates.tolist()], dtype=bool)
    if keep.any():
        bulk.bulk_insert(conn, schema.prices, _price_records(ticker, res.rows.take(np.flatnonzero(keep))))
    after = _outcomes(conn, ticker)
    revision.replaced, revision.removed, revision.added = len(replaced), len(removed), len(added)
    revision.unchanged = len(new) - len(replaced) - len(added)
    revision.outcomes_changed = sum(before[k] != after.get(k) for k in before)
    revision.date_counts = Counter({d: 1 for d in added})
    revision.date_counts.subtract({d: 1 for d in removed})
    dates = res.rows.dates
    revision.summary_row = _Summary(str(dates[0]), str(dates[-1]), len(new))
    return revision


def _outcomes(conn: sa.Connection, ticker: str) -> dict[int, float | None]:
    """Each of the ticker's predictions and its outcome (the next stored close after its as_of)."""
    return dict(
        conn.execute(
            sa.text("SELECT prediction_id, actual_close FROM prediction_outcomes WHERE ticker = :t"), {"t": ticker}
        ).all()
    )


def _row_text(date: str, v: np.ndarray) -> str:
    volume = "" if np.isnan(v[VOLUME_AT]) else f"{v[VOLUME_AT]:g}"
    prices = ",".join(f"{v[VALUES.index(name)]:g}" for name in PRICE_COLUMNS)
    return f"{date},{prices},{volume}"


def _price_records(ticker: str, rows: Rows) -> np.ndarray:
    """Rows in `prices` column order, as one object array filled column by
    column (NumPy makes the Python objects; no per-row Python work)."""
    volume = rows.values[:, VALUES.index("volume")]
    columns = {
        "ticker": ticker,
        "date": rows.dates,
        **{name: rows.values[:, VALUES.index(name)] for name in PRICE_COLUMNS},
        "volume": volume,
    }
    records = np.empty((len(rows), len(schema.prices.columns)), dtype=object)
    for j, column in enumerate(schema.prices.columns):
        records[:, j] = columns[column.name]
    missing = np.isnan(volume)
    if missing.any():
        records[missing, schema.prices.columns.keys().index("volume")] = None  # NULL, not NaN
    return records
