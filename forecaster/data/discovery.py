"""Finding the OHLC files under the paths given, and the ticker each file names."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import SourceError, UnreadableFileError

SUFFIXES = (".txt", ".csv")


def find_files(paths: list[str | Path]) -> Iterator[Path]:
    """Every `*.txt` / `*.csv` under `paths` (folders searched recursively), in a
    stable order, as absolute paths (each given path is resolved once)."""
    for given in map(Path, paths):
        if not given.exists():
            raise SourceError(f"{given}: no such file or folder")
        p = given.resolve()
        if p.is_dir():
            yield from map(Path, _walk(str(p)))
        else:
            yield p


def _walk(folder: str) -> Iterator[str]:
    """Data files under `folder`, depth first in name order (os.scandir: one
    stat per entry at most, where pathlib's rglob and sort cost ten times more)."""
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path)
        elif os.path.splitext(entry.name)[1].lower() in SUFFIXES and entry.is_file():
            yield entry.path


def ticker_from_path(path: Path) -> str:
    """The file name up to its first dot, lower-case: `Stocks/AAPL.us.txt` -> `aapl`."""
    ticker = path.name.split(".", 1)[0].strip().lower()
    if not ticker:
        raise UnreadableFileError(f"{path}: the file name gives no ticker (it starts with a dot)")
    if any(ord(c) < 32 for c in ticker):
        raise UnreadableFileError(f"{path}: the file name holds control characters")
    return ticker
