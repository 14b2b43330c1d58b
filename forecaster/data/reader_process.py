"""Reading a large ingest's files in a second process.

In one process, parsing (pandas, NumPy) and writing (SQLite) take turns, and
each takes about half of a large ingest. A thread did not help (measured:
within noise, some runs slower): both sides hold the GIL often enough to wait
for each other. So for a large ingest the parent starts
`python -m forecaster.data.reader_process`, sends it the file list and the ledger
as JSON on stdin, and writes one batch to the database while the child reads
the next.

Batches come back on stdout as frames: an 8-byte length, a JSON header, then
the raw bytes of the kept rows' three arrays (no pickle). The pipe's small
buffer keeps the child at most about one batch ahead. If the parent dies, the
child's next write fails and it exits; if the child dies, the parent raises
ReaderError, keeping the batches already committed, as a crash in one process
would.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import ReaderError
from .reading import Batch, FileResult, Known
from .reading import read_batches as read_batches_here
from .rules import Rejection, Rows

# The kept rows of a batch, all files end to end: (name, dtype).
ARRAYS = (("dates", "<U10"), ("values", "<f8"), ("lines", "<i8"))
LENGTH = struct.Struct("<Q")
MAX_HEADER_BYTES = 1 << 30  # a batch's header is kilobytes to megabytes; more means garbage
COMMAND = [sys.executable, "-m", "forecaster.data.reader_process"]  # the child; tests swap it


def read_batches(
    files: list[Path], ledger: dict[str, Known], today: dt.date, settle: float, complete: Collection[str] = ()
) -> Iterator[Batch]:
    """The same batches as reading.read_batches, read by a child process."""
    job = {
        "files": [str(f) for f in files],
        "ledger": {path: vars(k) for path, k in ledger.items()},
        "today": today.isoformat(),
        "settle": settle,
        "complete": sorted(complete),
    }
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        try:
            try:
                child.stdin.write(json.dumps(job).encode())
                child.stdin.close()
                while (batch := _receive(child.stdout)) is not None:
                    yield batch
            except (EOFError, BrokenPipeError):
                child.wait()
                errors.seek(0)
                said = errors.read().decode(errors="replace").strip().splitlines()
                raise ReaderError(
                    f"the process reading the files stopped (exit status {child.returncode})"
                    + (f": {said[-1]}" if said else "")
                ) from None
            except (ValueError, KeyError, TypeError) as exc:  # not our frames: something else wrote to its stdout
                raise ReaderError(f"the process reading the files sent something that is not a batch ({exc})") from None
        finally:
            if child.poll() is None:  # we stopped early (an error while writing): stop it too
                child.kill()
            child.wait()
            child.stdout.close()


def _send(out: BinaryIO, header: dict, arrays: list[np.ndarray] = ()) -> None:
    data = json.dumps(header).encode()
    out.write(LENGTH.pack(len(data)) + data)
    for array in arrays:
        out.write(memoryview(np.ascontiguousarray(array)).cast("B"))
    out.flush()


def _send_batch(out: BinaryIO, batch: Batch) -> None:
    kept = [r.rows for r in batch.results if r.rows is not None]
    arrays = [
        np.concatenate([getattr(rows, name) for rows in kept]).astype(dtype) if kept else np.empty(0, dtype)
        for name, dtype in ARRAYS
    ]
    _send(
        out,
        {
            "files": batch.files,
            "skipped": batch.skipped,
            "results": [
                {
                    "path": r.path,
                    "ticker": r.ticker,
                    "ledger": r.ledger,
                    "rows": None if r.rows is None else len(r.rows),
                    "rejects": [[j.line, j.raw, j.reason] for j in r.rejects],
                    "waiting": [[j.line, j.raw, j.reason] for j in r.waiting],
                }
                for r in batch.results
            ],
            "shapes": [a.shape for a in arrays],
        },
        arrays,
    )


def _receive(stream: BinaryIO) -> Batch | None:
    """The next batch; None after the last. EOFError if the stream breaks off."""
    size = LENGTH.unpack(_read_exactly(stream, LENGTH.size))[0]
    if size > MAX_HEADER_BYTES:
        raise ValueError(f"a header of {size} bytes")
    header = json.loads(_read_exactly(stream, size))
    if header.get("end"):
        return None
    arrays = {}
    for (name, dtype), shape in zip(ARRAYS, header["shapes"], strict=True):
        dtype = np.dtype(dtype)
        arrays[name] = np.frombuffer(_read_exactly(stream, int(np.prod(shape)) * dtype.itemsize), dtype=dtype).reshape(
            shape
        )
    results, at = [], 0
    for r in header["results"]:
        rows = None
        if r["rows"] is not None:
            mine = slice(at, at + r["rows"])
            rows = Rows(arrays["dates"][mine], arrays["values"][mine], arrays["lines"][mine])
            at += r["rows"]
        results.append(
            FileResult(
                r["path"],
                r["ticker"],
                None,
                [Rejection(*j) for j in r["rejects"]],
                r["ledger"],
                rows,
                [Rejection(*j) for j in r["waiting"]],
            )
        )
    return Batch(results, header["files"], header["skipped"])


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError
    return data


def main() -> None:
    job = json.load(sys.stdin)
    ledger = {path: Known(**known) for path, known in job["ledger"].items()}
    out = sys.stdout.buffer
    today = dt.date.fromisoformat(job["today"])
    files = [Path(f) for f in job["files"]]
    for batch in read_batches_here(files, ledger, today, job["settle"], set(job["complete"])):
        _send_batch(out, batch)
    _send(out, {"end": True})


if __name__ == "__main__":
    main()
