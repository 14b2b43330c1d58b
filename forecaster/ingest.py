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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import sqlalchemy as sa
from tqdm import tqdm

from . import store
from .sources import (ParsedRows, Rejection, UnreadableFile, decode, find_files, parse_header,
                      parse_rows, split_header, ticker_from_path)

TAIL_BYTES = 4096          # how much of a file's old end must match to trust an append
FLUSH_ROWS = 200_000       # write in transactions of about this many rows...
FLUSH_FILES = 256          # ...or this many files, whichever comes first
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
    rows: pd.DataFrame | None
    rejects: list[Rejection]
    ledger: dict | None


def ingest(engine: sa.Engine, paths: Iterable[str | Path], *, progress: bool = False,
           today: dt.date | None = None) -> IngestReport:
    """Load new rows from `paths` (files or folders) into the database."""
    files = list(find_files(list(paths)))
    report = IngestReport()
    with engine.connect() as conn:
        ledger = {r.path: r for r in conn.execute(sa.select(store.source_files))}
    pending: list[_FileResult] = []
    pending_rows = 0
    bar = tqdm(files, desc="ingest", unit="file", disable=not progress or len(files) < PROGRESS_MIN_FILES,
               leave=False)
    for path in bar:
        key = str(path.resolve())
        result = _read_file(path, key, ledger.get(key), today)
        if result is None:
            report.files_skipped += 1
            continue
        pending.append(result)
        pending_rows += 0 if result.rows is None else len(result.rows)
        if pending_rows >= FLUSH_ROWS or len(pending) >= FLUSH_FILES:
            _write(engine, pending, report)
            pending, pending_rows = [], 0
    if pending:
        _write(engine, pending, report)
    return report


def _read_file(path: Path, key: str, known, today) -> _FileResult | None:
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
            parsed, ledger["lines"] = (_read_tail(fh, known, today)
                                       if _is_append(fh, known, stat.st_size) else _read_whole(fh, today))
            ledger["tail_sha256"] = _tail_hash(fh, stat.st_size)
    except UnreadableFile as exc:
        # Remembered in the ledger too, so it is reported once, not every night.
        reason = str(exc).removeprefix(f"{path}: ")
        return _FileResult(key, None, None, [Rejection(None, "", reason)], ledger)
    except OSError as exc:
        return _FileResult(key, None, None, [Rejection(None, "", f"cannot read: {exc.strerror}")], None)
    return _FileResult(key, ticker, parsed.rows, parsed.rejects, ledger)


def _is_append(fh, known, size: int) -> bool:
    """True when the file is the known file plus new lines at its end."""
    if known is None or size <= known.size or known.lines < 1:
        return False
    return _tail_hash(fh, known.size) == known.tail_sha256 and _last_byte(fh, known.size) == b"\n"


def _read_whole(fh, today) -> tuple[ParsedRows, int]:
    fh.seek(0)
    data = fh.read()
    if not data.strip():
        raise UnreadableFile("empty file")
    text = decode(data)
    first, body = split_header(text)
    header = parse_header(first)
    return parse_rows(body, header, first_line=2, today=today), text.count("\n") + 1


def _read_tail(fh, known, today) -> tuple[ParsedRows, int]:
    fh.seek(0)
    header = parse_header(decode(fh.readline()))
    fh.seek(known.size)
    body = decode(fh.read())
    # The old content ended with "\n", so the ledger's last line was empty.
    parsed = parse_rows(body, header, first_line=known.lines, today=today)
    return parsed, known.lines + body.count("\n")


def _tail_hash(fh, end: int) -> str:
    start = max(0, end - TAIL_BYTES)
    fh.seek(start)
    return hashlib.sha256(fh.read(end - start)).hexdigest()


def _last_byte(fh, end: int) -> bytes:
    fh.seek(end - 1)
    return fh.read(1)


def _write(engine: sa.Engine, results: list[_FileResult], report: IngestReport) -> None:
    now = _now()
    with store.write_transaction(engine) as conn:
        for res in results:
            rejects = list(res.rejects)
            added = 0
            if res.rows is not None and len(res.rows):
                new_rows, unchanged, conflicts = _split_against_stored(conn, res.ticker, res.rows)
                rejects.extend(conflicts)
                report.rows_unchanged += unchanged
                added = _insert_prices(conn, res.ticker, new_rows)
            if res.ticker is None:
                report.files_unreadable += 1
                report.problems.append(f"{res.path}: {rejects[0].reason}")
            else:
                report.files_read += 1
            if res.ledger is not None:
                _save_ledger(conn, res.ledger, added, len(rejects), now)
            _insert_rejects(conn, res.path, res.ticker, rejects, now)
            report.rows_added += added
            report.rows_rejected += sum(r.line is not None for r in rejects)


def _split_against_stored(conn, ticker: str, rows: pd.DataFrame):
    """(rows not yet stored, count identical to stored, conflicts set aside)."""
    first = conn.execute(sa.select(store.tickers.c.first_date).where(
        store.tickers.c.ticker == ticker)).scalar()
    if first is None:
        return rows, 0, []
    p = store.prices.c
    stored = pd.DataFrame(conn.execute(
        sa.select(p.date, p.open, p.high, p.low, p.close, p.volume)
        .where(p.ticker == ticker, p.date >= rows["date"].min(), p.date <= rows["date"].max())
    ).all(), columns=["date", "open", "high", "low", "close", "volume"])
    if stored.empty:
        return rows, 0, []
    merged = rows.merge(stored, on="date", how="left", suffixes=("", "_stored"), indicator=True)
    is_stored = (merged["_merge"] == "both").to_numpy()
    differs = np.zeros(len(merged), dtype=bool)
    for col in ("open", "high", "low", "close", "volume"):
        a, b = merged[col].to_numpy(), merged[f"{col}_stored"].to_numpy()
        differs |= ~((a == b) | (np.isnan(a) & np.isnan(b)))
    conflict = is_stored & differs
    conflicts = [
        Rejection(int(r.line), _row_text(r),
                  f"differs from the stored row for {r.date} (stored close {r.close_stored:g}, "
                  f"file {r.close:g}); the stored row is kept")
        for r in merged[conflict].itertuples()]
    return rows[~is_stored].reset_index(drop=True), int((is_stored & ~differs).sum()), conflicts


def _row_text(r) -> str:
    volume = "" if pd.isna(r.volume) else f"{r.volume:g}"
    return f"{r.date},{r.open:g},{r.high:g},{r.low:g},{r.close:g},{volume}"


def _insert_prices(conn, ticker: str, rows: pd.DataFrame) -> int:
    if rows.empty:
        return 0
    volume = rows["volume"].astype(object).where(rows["volume"].notna(), None)
    records = list(zip([ticker] * len(rows), rows["date"], rows["open"].tolist(),
                       rows["high"].tolist(), rows["low"].tolist(), rows["close"].tolist(),
                       volume.tolist()))
    store.bulk_insert(conn, store.prices, records)
    _update_ticker_summary(conn, ticker, rows["date"].min(), rows["date"].max(), len(rows))
    return len(rows)


def _update_ticker_summary(conn, ticker: str, first: str, last: str, added: int) -> None:
    t = store.tickers
    row = conn.execute(sa.select(t).where(t.c.ticker == ticker)).first()
    if row is None:
        conn.execute(t.insert().values(ticker=ticker, first_date=first, last_date=last, n_rows=added))
    else:
        conn.execute(t.update().where(t.c.ticker == ticker).values(
            first_date=min(first, row.first_date), last_date=max(last, row.last_date),
            n_rows=row.n_rows + added))


def _save_ledger(conn, ledger: dict, added: int, rejected: int, now: str) -> None:
    sf = store.source_files
    fields = {k: v for k, v in ledger.items() if k != "path"}
    updated = conn.execute(sf.update().where(sf.c.path == ledger["path"]).values(
        **fields, ingested_at=now,
        rows_added=sf.c.rows_added + added, rows_rejected=sf.c.rows_rejected + rejected))
    if updated.rowcount == 0:
        conn.execute(sf.insert().values(**ledger, ingested_at=now, rows_added=added,
                                        rows_rejected=rejected))


def _insert_rejects(conn, source: str, ticker: str | None, rejects: list[Rejection], now: str) -> None:
    if rejects:
        conn.execute(store.rejected_rows.insert(), [
            {"source": source, "line": r.line, "ticker": ticker, "raw": r.raw, "reason": r.reason,
             "rejected_at": now} for r in rejects])


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
