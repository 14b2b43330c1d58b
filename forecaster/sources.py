"""Reading daily OHLC files and deciding which rows are fit to keep.

The layout is the public dataset's: one file per ticker, `<ticker>.us.txt`
(or `.csv`), header `Date,Open,High,Low,Close,Volume,OpenInt`. Vendor
variants are accepted: any header case, a byte-order mark, CRLF, an unnamed
first column holding the date, extra columns, no Volume, rows in any order.

Every row read ends up either kept or set aside with its line number, raw
text and a reason; nothing is dropped silently.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .errors import SourceError

SUFFIXES = (".txt", ".csv")
PRICE_COLUMNS = ("open", "high", "low", "close")
ROW_COLUMNS = ("date", *PRICE_COLUMNS, "volume")


@dataclass
class Rejection:
    line: int | None  # None: the whole file
    raw: str
    reason: str


@dataclass
class Header:
    """Where each field we use sits in a row, read from the file's first line."""
    positions: dict[str, int]  # column name -> field index
    n_fields: int


@dataclass
class ParsedRows:
    rows: pd.DataFrame  # ROW_COLUMNS + "line", sorted by date, one row per date
    rejects: list[Rejection] = field(default_factory=list)

    @property
    def n_read(self) -> int:
        return len(self.rows) + len(self.rejects)


class UnreadableFile(SourceError):
    """The file has no usable header or is not text."""


def find_files(paths: list[str | Path]) -> Iterator[Path]:
    """Every `*.txt` / `*.csv` under `paths` (folders searched recursively), in a stable order."""
    for p in map(Path, paths):
        if not p.exists():
            raise SourceError(f"{p}: no such file or folder")
        if p.is_dir():
            yield from sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
        else:
            yield p


def ticker_from_path(path: Path) -> str:
    """The file name up to its first dot, lower-case: `Stocks/AAPL.us.txt` -> `aapl`."""
    ticker = path.name.split(".", 1)[0].strip().lower()
    if not ticker:
        raise UnreadableFile(f"{path}: the file name gives no ticker (it starts with a dot)")
    if any(ord(c) < 32 for c in ticker):
        raise UnreadableFile(f"{path}: the file name holds control characters")
    return ticker


def decode(data: bytes) -> str:
    if b"\x00" in data:
        raise UnreadableFile("binary content (NUL bytes), not a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Old vendor exports are often cp1252; latin-1 decodes any byte, and
        # a row with odd characters is then rejected field by field.
        return data.decode("latin-1")


def parse_header(line: str) -> Header:
    names = [n.strip().strip('"').lower() for n in line.lstrip("\ufeff").rstrip("\r").split(",")]
    positions: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in ROW_COLUMNS and name not in positions:
            positions[name] = i
    if "date" not in positions and names and names[0] in ("", "timestamp", "time", "day"):
        positions["date"] = 0
    missing = [c for c in ("date", *PRICE_COLUMNS) if c not in positions]
    if missing:
        raise UnreadableFile(
            f"header has no {', '.join(m.capitalize() for m in missing)} column "
            f"(found: {line.strip()[:200]!r})")
    return Header(positions, len(names))


def split_header(text: str) -> tuple[str, str]:
    """(first line, the rest). The rest starts at line 2."""
    first, _, rest = text.partition("\n")
    return first, rest


def parse_rows(body: str, header: Header, *, first_line: int, today: dt.date | None = None
               ) -> ParsedRows:
    """Parse and validate the data lines in `body`; `first_line` is the file
    line number of its first line (for messages)."""
    today = today or dt.date.today()
    raw_lines = body.split("\n")
    numbers, texts = [], []
    for offset, raw in enumerate(raw_lines):
        text = raw.rstrip("\r")
        if text.strip():
            numbers.append(first_line + offset)
            texts.append(text)
    if not texts:
        return ParsedRows(_empty_rows())

    fields = [t.split(",") for t in texts]
    line_no = np.asarray(numbers, dtype=np.int64)
    reasons: list[str | None] = [None] * len(texts)

    width_ok = np.fromiter((len(f) == header.n_fields for f in fields), bool, len(fields))
    for i in np.flatnonzero(~width_ok):
        reasons[i] = f"expected {header.n_fields} fields, found {len(fields[i])}"

    good = np.flatnonzero(width_ok)
    columns = {}
    for name, pos in header.positions.items():
        columns[name] = np.array([fields[i][pos].strip() for i in good], dtype=object)
    frame = _typed_frame(columns, len(good))
    for j, reason in _row_problems(frame, columns, today):
        reasons[good[j]] = reason

    keep = np.array([r is None for r in reasons])
    kept_idx = np.flatnonzero(keep[good])
    rows = frame.iloc[kept_idx].copy()
    rows["line"] = line_no[good[kept_idx]]
    rows = rows.reset_index(drop=True)

    rejects = [Rejection(int(line_no[i]), texts[i], r) for i, r in enumerate(reasons) if r]
    rows, dup_rejects = _resolve_duplicate_dates(rows, texts, line_no)
    rejects.extend(dup_rejects)
    rejects.sort(key=lambda r: r.line)
    return ParsedRows(rows.sort_values("date", kind="stable").reset_index(drop=True), rejects)


def _empty_rows() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=float) for c in ROW_COLUMNS})
    frame["date"] = frame["date"].astype(object)
    frame["line"] = pd.Series(dtype=np.int64)
    return frame


def _typed_frame(columns: dict[str, np.ndarray], n: int) -> pd.DataFrame:
    parsed = pd.to_datetime(pd.Series(columns["date"], dtype=object), format="%Y-%m-%d",
                            errors="coerce")
    frame = pd.DataFrame({"date": parsed.dt.strftime("%Y-%m-%d").to_numpy(dtype=object)})
    for name in (*PRICE_COLUMNS, "volume"):
        if name in columns:
            frame[name] = pd.to_numeric(pd.Series(columns[name], dtype=object),
                                        errors="coerce").astype(float)
        else:
            frame[name] = np.full(n, np.nan)
    return frame


def _row_problems(frame: pd.DataFrame, columns: dict[str, np.ndarray], today: dt.date
                  ) -> Iterator[tuple[int, str]]:
    """(row index, reason) for every row that breaks a rule; the first rule broken wins."""
    n = len(frame)
    if n == 0:
        return
    bad = np.zeros(n, dtype=bool)
    reasons = np.empty(n, dtype=object)

    def flag(mask: np.ndarray, reason_of) -> None:
        new = np.asarray(mask, dtype=bool) & ~bad
        for j in np.flatnonzero(new):
            reasons[j] = reason_of(j)
        bad[new] = True

    date_text = columns["date"]
    flag(frame["date"].isna().to_numpy(),
         lambda j: (f"missing date" if not date_text[j] else
                    f"impossible or unrecognised date {date_text[j]!r} (expected YYYY-MM-DD)"))
    for name in PRICE_COLUMNS:
        text = columns[name]
        values = frame[name].to_numpy()
        flag(~np.isfinite(values), lambda j, name=name, text=text: _number_problem(name, text[j]))
        flag(values <= 0, lambda j, name=name, v=values: f"{name} is not positive ({v[j]:g})")
    if "volume" in columns:
        text, values = columns["volume"], frame["volume"].to_numpy()
        # An empty volume is allowed (NULL); text that is not a number is not.
        flag(np.array([t != "" for t in text]) & ~np.isfinite(values),
             lambda j: _number_problem("volume", text[j]))
        flag(values < 0, lambda j: f"volume is negative ({values[j]:g})")
    o, h, l, c = (frame[k].to_numpy() for k in PRICE_COLUMNS)
    flag(h < l, lambda j: f"high {h[j]:g} is below low {l[j]:g}")
    flag(h < np.maximum(o, c), lambda j: f"high {h[j]:g} is below open/close {max(o[j], c[j]):g}")
    flag(l > np.minimum(o, c), lambda j: f"low {l[j]:g} is above open/close {min(o[j], c[j]):g}")
    flag((frame["date"] > today.isoformat()).to_numpy(),
         lambda j: f"date {frame['date'].iat[j]} is in the future")
    for j in np.flatnonzero(bad):
        yield int(j), reasons[j]


def _number_problem(name: str, text: str) -> str:
    if text == "":
        return f"missing {name}"
    try:
        value = float(text)
    except ValueError:
        return f"non-numeric {name} {text[:40]!r}"
    if not math.isfinite(value):
        return f"{name} is not finite ({text[:40]})"
    return f"{name} {text[:40]!r} is not a plain number"


def _resolve_duplicate_dates(rows: pd.DataFrame, texts: list[str], line_no: np.ndarray
                             ) -> tuple[pd.DataFrame, list[Rejection]]:
    """A date given twice with the same values keeps its first line; given with
    different values it is ambiguous, and every line for it is set aside."""
    dup = rows["date"].duplicated(keep=False).to_numpy()
    if not dup.any():
        return rows, []
    text_of_line = dict(zip(line_no.tolist(), texts))
    rejects, drop = [], []
    values = list(ROW_COLUMNS)
    for date, group in rows[dup].groupby("date", sort=False):
        lines = group["line"].tolist()
        same = (group[values].fillna(-1.0).nunique(dropna=False) <= 1).all()
        if same:
            for idx, ln in zip(group.index[1:], lines[1:]):
                drop.append(idx)
                rejects.append(Rejection(ln, text_of_line[ln], f"repeats line {lines[0]} ({date})"))
        else:
            listed = ", ".join(map(str, lines))
            for idx, ln in zip(group.index, lines):
                drop.append(idx)
                rejects.append(Rejection(
                    ln, text_of_line[ln], f"date {date} appears on lines {listed} with different values"))
    return rows.drop(index=drop), rejects
