"""Loading OHLC files into `prices`, incrementally and atomically per file.

A ledger (`source_files`) remembers each file's size, mtime, line count and a
hash of its last bytes. On the next ingest:
  * same size and mtime      -> skipped without opening it;
  * larger, same old tail    -> only the appended bytes are parsed;
  * anything else            -> parsed whole and compared with what is stored.
A stored row is never overwritten: a file that later gives other values for a
stored date has that row set aside as a conflict (the stored row is kept).
Each file's rows, rejections and ledger entry commit in one transaction.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import sqlalchemy as sa
from tqdm import tqdm

from . import store
from .sources import (Fields, Rejection, Rows, UnreadableFile, decode, find_files, parse_header,
                      read_fields, split_header, ticker_from_path, validate)

TAIL_BYTES = 4096          # how much of a file's old end must match to trust an append
FLUSH_ROWS = 200_000       # write in transactions of about this many rows...
FLUSH_FILES = 2048         # ...or this many files, whichever comes first
PROGRESS_MIN_FILES = 20


@dataclass
class IngestReport:
    files_read: int = 0
    files_skipped: int = 0        # unchanged since the last ingest, not opened
    files_unreadable: int = 0
    rows_added: int = 0
    rows_unchanged: int = 0       # already stored with the same values
    rows_rejected: int = 0
    problems: list[str] = field(default_factory=list)  # one line per unreadable file

    def summary(self) -> str:
        return (f"files read: {self.files_read}, skipped unchanged: {self.files_skipped}, "
                f"unreadable: {self.files_unreadable}; rows added: {self.rows_added}, "
                f"already stored: {self.rows_unchanged}, set aside: {self.rows_rejected}")


@dataclass
class _FileResult:
    path: str
    ticker: str | None
    fields: Fields | None      # what was read; judged in batches by validate()
    rejects: list[Rejection]   # whole-file problems, then the rows set aside
    ledger: dict | None
    rows: Rows | None = None   # the rows kept, once validated


@dataclass
class _Summary:
    """A ticker's row in `tickers`, kept in memory during one ingest."""
    first_date: str
    last_date: str
    n_rows: int


def ingest(engine: sa.Engine, paths: Iterable[str | Path], *, progress: bool = False,
           today: dt.date | None = None) -> IngestReport:
    """Load new rows from `paths` (files or folders) into the database."""
    files = list(find_files(list(paths)))
    report = IngestReport()
    with engine.connect() as conn:
        ledger = {r.path: r for r in conn.execute(sa.select(store.source_files))}
        summaries = {r.ticker: _Summary(r.first_date, r.last_date, r.n_rows)
                     for r in conn.execute(sa.select(store.tickers))}
    pending: list[_FileResult] = []
    pending_rows = 0
    bar = tqdm(files, desc="ingest", unit="file", disable=not progress or len(files) < PROGRESS_MIN_FILES,
               leave=False)
    for path in bar:
        key = str(path)  # absolute: find_files resolved the folder it came from
        result = _read_file(path, key, ledger.get(key))
        if result is None:
            report.files_skipped += 1
            continue
        pending.append(result)
        pending_rows += 0 if result.fields is None else len(result.fields)
        if pending_rows >= FLUSH_ROWS or len(pending) >= FLUSH_FILES:
            _write(engine, _validated(pending, today), summaries, report)
            pending, pending_rows = [], 0
    if pending:
        _write(engine, _validated(pending, today), summaries, report)
    return report


def _validated(results: list[_FileResult], today) -> list[_FileResult]:
    readable = [r for r in results if r.fields is not None]
    for res, parsed in zip(readable, validate([r.fields for r in readable], today)):
        res.rows = parsed.rows
        res.rejects.extend(parsed.rejects)
    return results


def _read_file(path: Path, key: str, known) -> _FileResult | None:
    """Parse what is new in one file; None when it is unchanged."""
    try:
        stat = path.stat()
    except OSError as exc:
        return _FileResult(key, None, None, [Rejection(None, "", f"cannot read: {exc.strerror}")], None)
    if known is not None and known.size == stat.st_size and known.mtime_ns == stat.st_mtime_ns:
        return None
    ledger = {"path": key, "ticker": "", "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
              "lines": 0, "tail_sha256": ""}
    try:
        ledger["ticker"] = ticker = ticker_from_path(path)
        with open(path, "rb") as fh:
            # Read exactly the bytes the ledger will record, even if a writer is
            # still appending: the rest is the next ingest's tail.
            fields, ledger["lines"] = (_read_tail(fh, known, stat.st_size)
                                       if _is_append(fh, known, stat.st_size) else _read_whole(fh, stat.st_size))
            ledger["tail_sha256"] = _tail_hash(fh, stat.st_size)
    except UnreadableFile as exc:
        # Remembered in the ledger too, so it is reported once, not every night.
        reason = str(exc).removeprefix(f"{path}: ")
        return _FileResult(key, None, None, [Rejection(None, "", reason)], ledger)
    except OSError as exc:
        return _FileResult(key, None, None, [Rejection(None, "", f"cannot read: {exc.strerror}")], None)
    return _FileResult(key, ticker, fields, [], ledger)


def _is_append(fh, known, size: int) -> bool:
    """True when the file is the known file plus new lines at its end."""
    if known is None or size <= known.size or known.lines < 1:
        return False
    return _tail_hash(fh, known.size) == known.tail_sha256 and _last_byte(fh, known.size) == b"\n"


def _read_whole(fh, size: int) -> tuple[Fields, int]:
    fh.seek(0)
    data = fh.read(size)
    if not data.strip():
        raise UnreadableFile("empty file")
    text = decode(data)
    first, body = split_header(text)
    header = parse_header(first)
    return read_fields(body, header, first_line=2), text.count("\n") + 1


def _read_tail(fh, known, size: int) -> tuple[Fields, int]:
    fh.seek(0)
    header = parse_header(decode(fh.readline()))
    fh.seek(known.size)
    body = decode(fh.read(size - known.size))
    # The old content ended with "\n", so the ledger's last line was empty.
    return read_fields(body, header, first_line=known.lines), known.lines + body.count("\n")


def _tail_hash(fh, end: int) -> str:
    start = max(0, end - TAIL_BYTES)
    fh.seek(start)
    return hashlib.sha256(fh.read(end - start)).hexdigest()


def _last_byte(fh, end: int) -> bytes:
    fh.seek(end - 1)
    return fh.read(1)


def _write(engine: sa.Engine, results: list[_FileResult], summaries: dict[str, _Summary],
           report: IngestReport) -> None:
    """One transaction for a batch of files: each file's rows, rejections and
    ledger entry land together or not at all."""
    now = _now()
    rejects, ledgers, dates = [], [], Counter()
    changed: dict[str, _Summary] = {}
    with store.write_transaction(engine) as conn:
        for res in results:
            file_rejects = list(res.rejects)
            added = 0
            if res.rows is not None and len(res.rows):
                new, unchanged, conflicts = _split_against_stored(conn, res.ticker, res.rows,
                                                                  summaries.get(res.ticker))
                file_rejects.extend(conflicts)
                report.rows_unchanged += unchanged
                added = len(new)
                if added:
                    # Inserted now, not at the end of the batch: a later file of the
                    # same ticker in this batch (x.us.txt beside x.csv) must see them.
                    store.bulk_insert(conn, store.prices, _price_records(res.ticker, new))
                    dates.update(new.dates.tolist())
                    changed[res.ticker] = summaries[res.ticker] = _merged(summaries.get(res.ticker), new)
            if res.ticker is None:
                report.files_unreadable += 1
                report.problems.append(f"{res.path}: {file_rejects[0].reason}")
            else:
                report.files_read += 1
            if res.ledger is not None:
                ledgers.append({**res.ledger, "ingested_at": now, "rows_added": added,
                                "rows_rejected": len(file_rejects)})
            rejects.extend({"source": res.path, "line": r.line, "ticker": res.ticker, "raw": r.raw,
                            "reason": r.reason, "rejected_at": now} for r in file_rejects)
            report.rows_added += added
            report.rows_rejected += sum(r.line is not None for r in file_rejects)
        if rejects:
            conn.execute(store.rejected_rows.insert(), rejects)
        sf = store.source_files
        store.upsert(conn, sf, ledgers, ["path"], {
            **{c: (lambda ex, c=c: ex[c]) for c in ("ticker", "size", "mtime_ns", "lines", "tail_sha256",
                                                   "ingested_at")},
            "rows_added": lambda ex: sf.c.rows_added + ex.rows_added,
            "rows_rejected": lambda ex: sf.c.rows_rejected + ex.rows_rejected})
        store.upsert(conn, store.tickers, [{"ticker": t, **vars(s)} for t, s in changed.items()], ["ticker"])
        pd_ = store.price_dates
        store.upsert(conn, pd_, [{"date": d, "n_rows": n} for d, n in sorted(dates.items())], ["date"],
                     {"n_rows": lambda ex: pd_.c.n_rows + ex.n_rows})


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
    p = store.prices.c
    stored = {r[0]: r[1:] for r in conn.execute(
        sa.select(p.date, p.open, p.high, p.low, p.close, p.volume)
        .where(p.ticker == ticker, p.date >= first, p.date <= last))}
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
            conflicts.append(Rejection(
                int(rows.lines[i]), _row_text(date, new),
                f"differs from the stored row for {date} (stored close {old[3]:g}, file {new[3]:g}); "
                "the stored row is kept"))
    return rows.take(np.array(fresh, dtype=np.int64)), unchanged, conflicts


def _row_text(date: str, v: np.ndarray) -> str:
    volume = "" if np.isnan(v[4]) else f"{v[4]:g}"
    return f"{date},{v[0]:g},{v[1]:g},{v[2]:g},{v[3]:g},{volume}"


def _price_records(ticker: str, rows: Rows) -> np.ndarray:
    """Rows in `prices` column order, as one object array filled column by
    column (NumPy makes the Python objects; no per-row Python work)."""
    records = np.empty((len(rows), 7), dtype=object)
    records[:, 0] = ticker
    records[:, 1] = rows.dates
    records[:, 2:] = rows.values
    missing_volume = np.isnan(rows.values[:, 4])
    if missing_volume.any():
        records[missing_volume, 6] = None
    return records


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
