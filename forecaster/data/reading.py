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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .sources import (
    Body,
    Rejection,
    Rows,
    UnreadableFileError,
    decode,
    parse_header,
    read_many,
    split_header,
    ticker_from_path,
    validate,
)

TAIL_BYTES = 4096  # how much of a file's old end must match to trust an append
FLUSH_ROWS = 200_000  # batches (one transaction each) of about this many rows...
FLUSH_FILES = 8192  # ...or this many files (a nightly run of one-line appends: one transaction)


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
    ticker: str | None  # None: the whole file is unreadable
    body: Body | None  # what was read; parsed and judged in batches
    rejects: list[Rejection]  # whole-file problems, then the rows set aside
    ledger: dict | None  # the file's new ledger entry (None: do not remember it)
    rows: Rows | None = None  # the rows kept, once validated


@dataclass
class Batch:
    results: list[FileResult]  # the files read, validated: written in one transaction
    files: int  # files looked at, unchanged ones included
    skipped: int  # of which unchanged since the last ingest


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
    for res, parsed in zip(readable, validate(fields, today), strict=True):
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
    ledger = {
        "path": key,
        "ticker": "",
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "lines": 0,
        "tail_sha256": "",
    }
    try:
        ledger["ticker"] = ticker = ticker_from_path(path)
        with open(path, "rb") as fh:
            # Read exactly the bytes the ledger will record, even if a writer is
            # still appending: the rest is the next ingest's tail.
            appended = _read_append(fh, known, stat.st_size)
            body, ledger["lines"], ledger["tail_sha256"] = appended or _read_whole(fh, stat.st_size)
    except UnreadableFileError as exc:
        # Remembered in the ledger too, so it is reported once, not every night.
        reason = str(exc).removeprefix(f"{path}: ")
        return FileResult(key, None, None, [Rejection(None, "", reason)], ledger)
    except OSError as exc:
        return FileResult(key, None, None, [Rejection(None, "", f"cannot read: {exc.strerror}")], None)
    return FileResult(key, ticker, body, [], ledger)


HEADER_BYTES = 1024  # read for the header line of an appended file


def _read_append(fh, known: Known | None, size: int) -> tuple[Body, int, str] | None:
    """(the appended lines, the file's line count, its new tail hash) when the
    file is the known file plus new lines at its end, else None. One read
    covers the old tail (to check it), the new bytes and so the new tail."""
    if known is None or size <= known.size or known.lines < 1:
        return None
    start = max(0, known.size - TAIL_BYTES)
    fh.seek(start)
    data = fh.read(size - start)
    old = known.size - start
    if (
        len(data) != size - start
        or data[old - 1 : old] != b"\n"
        or hashlib.sha256(data[:old]).hexdigest() != known.tail_sha256
    ):
        return None
    fh.seek(0)
    first = fh.read(HEADER_BYTES).partition(b"\n")[0]
    header = parse_header(decode(first if len(first) < HEADER_BYTES else first + fh.readline()))
    body = decode(data[old:])
    # The old content ended with "\n", so the ledger's last line was empty.
    return (
        Body(body, header, first_line=known.lines),
        known.lines + body.count("\n"),
        hashlib.sha256(data[-TAIL_BYTES:]).hexdigest(),
    )


def _read_whole(fh, size: int) -> tuple[Body, int, str]:
    fh.seek(0)
    data = fh.read(size)
    if not data.strip():
        raise UnreadableFileError("empty file")
    text = decode(data)
    first, body = split_header(text)
    return (
        Body(body, parse_header(first), first_line=2),
        text.count("\n") + 1,
        hashlib.sha256(data[-TAIL_BYTES:]).hexdigest(),
    )
