"""Which bytes of which files are new, read and judged in batches.

No database here: this runs in the ingesting process, or for a large ingest
in a reader process beside it (reader_process.py), given the ledger
(`source_files`) as plain values. For each file:
  * same size and mtime as the ledger -> skipped without opening it;
  * larger, same old tail             -> only the appended bytes are parsed;
  * anything else                     -> parsed whole.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .sources import (Body, Rejection, Rows, UnreadableFile, decode, parse_header, read_many, split_header,
                      ticker_from_path, validate)

TAIL_BYTES = 4096          # how much of a file's old end must match to trust an append
FLUSH_ROWS = 200_000       # batches (one transaction each) of about this many rows...
FLUSH_FILES = 2048         # ...or this many files, whichever comes first


@dataclass
class Known:
    """A file as the ledger remembers it."""
    size: int
    mtime_ns: int
    lines: int
    tail_sha256: str


@dataclass
class FileResult:
    path: str
    ticker: str | None         # None: the whole file is unreadable
    body: Body | None          # what was read; parsed and judged in batches
    rejects: list[Rejection]   # whole-file problems, then the rows set aside
    ledger: dict | None        # the file's new ledger entry (None: do not remember it)
    rows: Rows | None = None   # the rows kept, once validated


@dataclass
class Batch:
    results: list[FileResult]  # the files read, validated: written in one transaction
    files: int                 # files looked at, unchanged ones included
    skipped: int               # of which unchanged since the last ingest


def read_batches(files: list[Path], ledger: dict[str, Known], today: dt.date) -> Iterator[Batch]:
    """Read and validate `files` in batches of about FLUSH_ROWS rows."""
    pending: list[FileResult] = []
    pending_rows = looked = skipped = 0
    for path in files:
        looked += 1
        key = str(path)  # absolute: find_files resolved the folder it came from
        result = _read_file(path, key, ledger.get(key))
        if result is None:
            skipped += 1
            continue
        pending.append(result)
        pending_rows += 0 if result.body is None else result.body.text.count("\n")
        if pending_rows >= FLUSH_ROWS or len(pending) >= FLUSH_FILES:
            yield Batch(_validated(pending, today), looked, skipped)
            pending, pending_rows, looked, skipped = [], 0, 0, 0
    if looked:
        yield Batch(_validated(pending, today), looked, skipped)


def new_bytes(files: list[Path], ledger: dict[str, Known]) -> int:
    """About how many bytes `read_batches` would read (from stat alone)."""
    total = 0
    for path in files:
        try:
            size = path.stat().st_size
        except OSError:
            continue
        known = ledger.get(str(path))
        total += size if known is None or size < known.size else size - known.size
    return total


def _validated(results: list[FileResult], today: dt.date) -> list[FileResult]:
    readable = [r for r in results if r.body is not None]
    if not readable:
        return results
    fields = read_many([r.body for r in readable])
    for res, parsed in zip(readable, validate(fields, today)):
        res.rows = parsed.rows
        res.rejects.extend(parsed.rejects)
        res.body = None  # done with: frees the text
    return results


def _read_file(path: Path, key: str, known: Known | None) -> FileResult | None:
    """Parse what is new in one file; None when it is unchanged."""
    try:
        stat = path.stat()
    except OSError as exc:
        return FileResult(key, None, None, [Rejection(None, "", f"cannot read: {exc.strerror}")], None)
    if known is not None and known.size == stat.st_size and known.mtime_ns == stat.st_mtime_ns:
        return None
    ledger = {"path": key, "ticker": "", "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
              "lines": 0, "tail_sha256": ""}
    try:
        ledger["ticker"] = ticker = ticker_from_path(path)
        with open(path, "rb") as fh:
            # Read exactly the bytes the ledger will record, even if a writer is
            # still appending: the rest is the next ingest's tail.
            body, ledger["lines"] = (_read_tail(fh, known, stat.st_size)
                                     if _is_append(fh, known, stat.st_size) else _read_whole(fh, stat.st_size))
            ledger["tail_sha256"] = _tail_hash(fh, stat.st_size)
    except UnreadableFile as exc:
        # Remembered in the ledger too, so it is reported once, not every night.
        reason = str(exc).removeprefix(f"{path}: ")
        return FileResult(key, None, None, [Rejection(None, "", reason)], ledger)
    except OSError as exc:
        return FileResult(key, None, None, [Rejection(None, "", f"cannot read: {exc.strerror}")], None)
    return FileResult(key, ticker, body, [], ledger)


def _is_append(fh, known: Known | None, size: int) -> bool:
    """True when the file is the known file plus new lines at its end."""
    if known is None or size <= known.size or known.lines < 1:
        return False
    return _tail_hash(fh, known.size) == known.tail_sha256 and _last_byte(fh, known.size) == b"\n"


def _read_whole(fh, size: int) -> tuple[Body, int]:
    fh.seek(0)
    data = fh.read(size)
    if not data.strip():
        raise UnreadableFile("empty file")
    text = decode(data)
    first, body = split_header(text)
    return Body(body, parse_header(first), first_line=2), text.count("\n") + 1


def _read_tail(fh, known: Known, size: int) -> tuple[Body, int]:
    fh.seek(0)
    header = parse_header(decode(fh.readline()))
    fh.seek(known.size)
    body = decode(fh.read(size - known.size))
    # The old content ended with "\n", so the ledger's last line was empty.
    return Body(body, header, first_line=known.lines), known.lines + body.count("\n")


def _tail_hash(fh, end: int) -> str:
    start = max(0, end - TAIL_BYTES)
    fh.seek(start)
    return hashlib.sha256(fh.read(end - start)).hexdigest()


def _last_byte(fh, end: int) -> bytes:
    fh.seek(end - 1)
    return fh.read(1)
