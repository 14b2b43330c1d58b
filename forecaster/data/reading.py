"""Which bytes of which files are new, read and judged in batches.

No database here: this runs in the ingesting process, or for a large ingest
in a reader process beside it (reader_process.py), given the ledger
(`source_files`) as plain values. For each file:
  * same size and mtime as the ledger -> skipped without opening it;
  * larger, same old tail             -> only the appended bytes are parsed;
  * anything else                     -> parsed whole.

The ledger never moves past a line that may still change or become valid,
so the next ingest reads it again:
  * an unterminated last line while the file may still be being written (it
    changed less than `settle` seconds ago): `2017-11-10,10.5,11,10,10.`
    may become `...,10.85` a moment later. A file that has been left alone
    that long is complete, newline or not, and its last line is read.
  * a row dated after the exchange's current day (validate's `today`).
Such rows are reported as waiting, not set aside.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UnreadableFileError
from .config import SETTLE_SECONDS
from .discovery import ticker_from_path
from .parsing import Body, Header, decode, parse_header, read_many
from .rules import Rejection, Rows, validate

TAIL_BYTES = 4096  # how much of a file's old end must match to trust an append
FLUSH_ROWS = 200_000  # batches (one transaction each) of about this many rows...
FLUSH_FILES = 8192  # ...or this many files (a nightly run of one-line appends: one transaction)
UNTERMINATED = "an unterminated last line: the file may still be being written; read once it ends or settles"


@dataclass
class Known:
    """A file as the ledger remembers it."""

    size: int  # bytes consumed: up to the end of the last line read
    mtime_ns: int
    lines: int  # the number of the line that starts at `size`
    tail_sha256: str  # of the TAIL_BYTES before `size`


@dataclass
class Region:
    """The bytes read from one file, and where its new lines start in them."""

    data: bytes  # the file's bytes from offset `base`
    base: int
    start: int  # index in `data` of the first new line
    first_line: int  # that line's number
    header: Header | None  # None: the header line is in `data` (a whole file)

    def line_start(self, line: int) -> int:
        """The index in `data` where line number `line` (>= first_line) starts."""
        if line == self.first_line:
            return self.start
        ends = np.flatnonzero(np.frombuffer(self.data, dtype=np.uint8, offset=self.start) == ord("\n"))
        return self.start + int(ends[line - self.first_line - 1]) + 1

    def ledger(self, end: int) -> tuple[int, int, str]:
        """(size, lines, tail hash) of the ledger when the file is consumed up to `end` (an index in `data`)."""
        lines = self.first_line + self.data.count(b"\n", self.start, end)
        return self.base + end, lines, hashlib.sha256(self.data[max(0, end - TAIL_BYTES) : end]).hexdigest()

    def body(self, end: int) -> Body:
        """The new lines up to `end`, decoded. A whole file is decoded whole, so
        its header and rows agree on the encoding."""
        if self.header is not None:
            return Body(decode(self.data[self.start : end]), self.header, self.first_line)
        first, _, rest = decode(self.data[:end]).partition("\n")
        return Body(rest, parse_header(first), self.first_line)


@dataclass
class FileResult:
    path: str
    ticker: str | None  # None: the whole file is unreadable
    body: Body | None  # what was read; parsed and judged in batches
    rejects: list[Rejection]  # whole-file problems, then the rows set aside
    ledger: dict | None  # the file's new ledger entry (None: do not remember it)
    rows: Rows | None = None  # the rows kept, once validated
    waiting: list[Rejection] = field(default_factory=list)  # read again next time: not yet valid or complete
    region: Region | None = None  # kept until validated (the ledger may have to stop at a waiting row)


@dataclass
class Batch:
    results: list[FileResult]  # the files read, validated: written in one transaction
    files: int  # files looked at, unchanged ones included
    skipped: int  # of which unchanged since the last ingest


def read_batches(
    files: list[Path],
    ledger: dict[str, Known],
    today: dt.date,
    settle: float = SETTLE_SECONDS,
    complete: Collection[str] = (),
) -> Iterator[Batch]:
    """Read and validate `files` in batches of about FLUSH_ROWS rows. Rows
    dated after `today` and an unterminated last line of a file changed less
    than `settle` seconds ago wait for a later ingest; the files named in
    `complete` are taken as they are (a revision)."""
    pending: list[FileResult] = []
    pending_rows = looked = skipped = 0
    now = time.time()
    for path in files:
        looked += 1
        key = str(path)  # absolute: find_files resolved the folder it came from
        result = _read_file(path, key, ledger.get(key), settled_before=math.inf if key in complete else now - settle)
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
    if readable:
        fields = read_many([r.body for r in readable])
        for res, parsed in zip(readable, validate(fields, today), strict=True):
            res.rows = parsed.rows
            res.rejects.extend(parsed.rejects)
            if parsed.waiting:
                # The ledger stops where the first row that may become valid starts.
                first = min(r.line for r in parsed.waiting)
                size, lines, tail = res.region.ledger(res.region.line_start(first))
                res.ledger.update(size=size, lines=lines, tail_sha256=tail)
                res.waiting = parsed.waiting + res.waiting
            res.body = None  # done with: frees the text
    for res in results:
        res.region = None
    return results


def _read_file(path: Path, key: str, known: Known | None, settled_before: float) -> FileResult | None:
    """Parse what is new in one file; None when it is unchanged."""
    try:
        stat = path.stat()
    except OSError as exc:
        return FileResult(key, None, None, [Rejection(None, "", f"cannot read: {exc.strerror}")], None)
    if known is not None and known.size == stat.st_size and known.mtime_ns == stat.st_mtime_ns:
        return None
    ledger = {"path": key, "ticker": "", "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "lines": 0}
    ledger["tail_sha256"] = ""
    settled = stat.st_mtime_ns / 1e9 <= settled_before
    try:
        ledger["ticker"] = ticker = ticker_from_path(path)
        with open(path, "rb") as fh:
            # Read exactly the bytes the ledger will record, even if a writer is
            # still appending: the rest is the next ingest's tail.
            region = _read_append(fh, known, stat.st_size) or _read_whole(fh, stat.st_size, header_complete=settled)
        if region is None:  # not even a whole header line yet
            return FileResult(key, ticker, None, [], None, waiting=[Rejection(1, "", UNTERMINATED)])
        end, waiting = len(region.data), []
        if not settled and not region.data.endswith(b"\n"):
            end = max(region.data.rfind(b"\n") + 1, region.start)
            partial = region.data[end:].decode("utf-8", errors="replace")
            waiting.append(Rejection(region.ledger(end)[1], partial[:200], UNTERMINATED))
        body = region.body(end)
    except UnreadableFileError as exc:
        # Remembered in the ledger too, so it is reported once, not every night.
        reason = str(exc).removeprefix(f"{path}: ")
        return FileResult(key, None, None, [Rejection(None, "", reason)], ledger)
    except OSError as exc:
        return FileResult(key, None, None, [Rejection(None, "", f"cannot read: {exc.strerror}")], None)
    ledger["size"], ledger["lines"], ledger["tail_sha256"] = region.ledger(end)
    return FileResult(key, ticker, body, [], ledger, waiting=waiting, region=region)


HEADER_BYTES = 1024  # read for the header line of an appended file


def _read_append(fh, known: Known | None, size: int) -> Region | None:
    """The appended bytes when the file is the known file plus new lines at its
    end, else None. One read covers the old tail (to check it) and the new bytes."""
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
    return Region(data, start, old, known.lines, header)


def _read_whole(fh, size: int, *, header_complete: bool = False) -> Region | None:
    """The whole file; None when its first line has not ended yet (unless
    `header_complete` says the file is complete as it is)."""
    fh.seek(0)
    data = fh.read(size)
    if not data.strip():
        raise UnreadableFileError("empty file")
    header_end = data.find(b"\n")
    if header_end < 0 and not header_complete:
        decode(data)  # binary content is unreadable whether or not it is complete
        return None
    return Region(data, 0, len(data) if header_end < 0 else header_end + 1, 2, None)
