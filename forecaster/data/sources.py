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
import functools
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SourceError

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


VALUES = ("open", "high", "low", "close", "volume")


@dataclass
class Rows:
    """Kept rows as plain arrays, sorted by date, one row per date."""

    dates: np.ndarray  # (n,) ISO date strings
    values: np.ndarray  # (n, 5) float64 in VALUES order; volume NaN when not given
    lines: np.ndarray  # (n,) int64 file line numbers

    def __len__(self) -> int:
        return len(self.dates)

    def take(self, index: np.ndarray) -> Rows:
        return Rows(self.dates[index], self.values[index], self.lines[index])


@dataclass
class ParsedRows:
    rows: Rows
    rejects: list[Rejection] = field(default_factory=list)
    # Rows fit to keep but dated after `today`: not set aside, read again by a later ingest.
    waiting: list[Rejection] = field(default_factory=list)

    @property
    def n_read(self) -> int:
        return len(self.rows) + len(self.rejects) + len(self.waiting)


class UnreadableFileError(SourceError):
    """The file has no usable header or is not text."""


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


def decode(data: bytes) -> str:
    if b"\x00" in data:
        raise UnreadableFileError("binary content (NUL bytes), not a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Old vendor exports are often cp1252; latin-1 decodes any byte, and
        # a row with odd characters is then rejected field by field.
        return data.decode("latin-1")


@functools.lru_cache(maxsize=256)  # thousands of files share a handful of headers
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
        raise UnreadableFileError(
            f"header has no {', '.join(m.capitalize() for m in missing)} column (found: {line.strip()[:200]!r})"
        )
    return Header(positions, len(names))


def split_header(text: str) -> tuple[str, str]:
    """(first line, the rest). The rest starts at line 2."""
    first, _, rest = text.partition("\n")
    return first, rest


FAST_PATH_BYTES = 4096  # below this, plain Python beats pandas' fixed costs


@dataclass
class Fields:
    """One file's non-blank lines, typed but not yet judged."""

    header: Header
    lines: np.ndarray  # (n,) int64 line numbers
    date_text: np.ndarray  # (n,) str
    values: np.ndarray  # (n, 5) float64, NaN where missing or not a number
    width_ok: np.ndarray  # (n,) bool: the line has the header's number of fields
    raw_line: callable  # i -> the line's text, for messages (only bad rows ask)

    def __len__(self) -> int:
        return len(self.lines)


@dataclass
class Body:
    """A file's data lines as read (after its header), waiting to be parsed."""

    text: str
    header: Header
    first_line: int  # the file line number of its first line


def read_many(bodies: list[Body]) -> list[Fields]:
    """Split and type the lines of many bodies. Large, regular ones: NumPy
    for the line structure and dates, and one C-parser call for the numbers
    of all of them alike (that call's fixed cost, ~0.3 ms, is more than the
    parsing of a few hundred lines); the rest line by line. Judging the
    values is `validate`'s job."""
    fields: list[Fields | None] = [None] * len(bodies)
    alike: dict[tuple, list[tuple[int, _Regular]]] = {}
    for i, body in enumerate(bodies):
        regular = _regular(body) if len(body.text) >= FAST_PATH_BYTES else None
        if regular is not None:
            alike.setdefault(_number_layout(body.header), []).append((i, regular))
    for group in alike.values():
        values = _numbers([r for _, r in group])
        if values is None:  # text where a number belongs, somewhere: find where
            values = [None if v is None else v[0] for v in (_numbers([r]) for _, r in group)]
        for (i, regular), v in zip(group, values, strict=True):
            if v is not None:
                fields[i] = regular.fields(v)
    rest = [i for i, f in enumerate(fields) if f is None]
    for i, f in zip(rest, _fields_by_line([bodies[i] for i in rest]), strict=True):
        fields[i] = f
    return fields


def _fields_by_line(bodies: list[Body]) -> list[Fields]:
    """Line by line, in plain Python, but with one pass per header layout for
    all these bodies: a nightly run brings thousands of one-line bodies, and
    per-body NumPy calls would cost more than the parsing."""
    out: list[Fields | None] = [None] * len(bodies)
    by_layout: dict[tuple, list[int]] = {}
    for i, body in enumerate(bodies):
        by_layout.setdefault((body.header.n_fields, tuple(sorted(body.header.positions.items()))), []).append(i)
    for members in by_layout.values():
        header = bodies[members[0]].header
        numbers, texts, sizes = [], [], []
        for i in members:
            before = len(texts)
            first = bodies[i].first_line
            for offset, raw in enumerate(bodies[i].text.split("\n")):
                text = raw.rstrip("\r")
                if text.strip():
                    numbers.append(first + offset)
                    texts.append(text)
            sizes.append(len(texts) - before)
        split = [t.split(",") for t in texts]
        width_ok = np.fromiter((len(f) == header.n_fields for f in split), bool, len(split))
        pos = header.positions
        date_text = np.array(
            [f[pos["date"]].strip() if ok else "" for f, ok in zip(split, width_ok, strict=True)], dtype=object
        )
        values = np.full((len(split), len(VALUES)), np.nan)
        for j, name in enumerate(VALUES):
            if name in pos:
                values[:, j] = _floats(
                    [f[pos[name]].strip() if ok else "" for f, ok in zip(split, width_ok, strict=True)]
                )
        at = 0
        for i, n in zip(members, sizes, strict=True):
            mine = slice(at, at + n)
            out[i] = Fields(
                bodies[i].header,
                np.asarray(numbers[mine], dtype=np.int64),
                date_text[mine],
                values[mine],
                width_ok[mine],
                texts[mine].__getitem__,
            )
            at += n
    return out


# Up to this many values plain Python reads numbers faster than importing
# pandas (~0.2 s) would let it; beyond, pandas' to_numeric (5x faster per value).
PYTHON_FLOATS_MAX = 100_000


def _floats(texts: list[str]) -> np.ndarray:
    """Numbers from text; NaN for anything that is not one (reasons come later)."""
    if len(texts) > PYTHON_FLOATS_MAX:
        import pandas as pd  # only for large bodies: a nightly run of one-line appends never loads it

        return pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    out = np.empty(len(texts))
    for i, t in enumerate(texts):
        try:
            # float() also takes "1_000" and non-ASCII digits ("１２"); pandas
            # does not, and both paths must judge a row the same way.
            out[i] = float(t) if t.isascii() and "_" not in t else np.nan
        except ValueError:
            out[i] = np.nan
    return out


@dataclass
class _Regular:
    """A body whose every line has the header's width and a 10-character date."""

    body: Body
    data: bytes
    date_text: np.ndarray  # (n,) U10

    def fields(self, values: np.ndarray) -> Fields:
        n, first = len(self.date_text), self.body.first_line
        lines = functools.cache(self.body.text.split)  # split only if a row's text is asked for
        return Fields(
            self.body.header,
            np.arange(first, first + n, dtype=np.int64),
            self.date_text,
            values,
            np.ones(n, dtype=bool),
            lambda i: lines("\n")[i].rstrip("\r"),
        )


def _regular(body: Body) -> _Regular | None:
    """NumPy on the bytes: the line and field structure, and the dates. None
    (read it line by line) when the body is not plain ASCII or has quotes, a
    lone CR, a blank line, a line of the wrong width or a date that is not 10
    characters: those files get exact per-line messages instead."""
    if not body.text.isascii() or not body.text:
        return None
    data = body.text.encode()
    b = np.frombuffer(data, dtype=np.uint8)
    if (b == ord('"')).any() or (b == 0).any():
        return None
    ends = np.flatnonzero(b == ord("\n"))
    cr = np.flatnonzero(b == ord("\r"))
    if len(cr) and (cr[-1] + 1 == len(b) or (b[cr + 1] != ord("\n")).any()):
        return None  # a lone CR is a line break to the C parser
    n = len(ends) + (b[-1] != ord("\n"))
    starts = np.concatenate([[0], ends + 1])[:n]
    stops = np.concatenate([ends, [len(b)]])[:n]
    stops -= (stops > starts) & (b[np.maximum(stops - 1, 0)] == ord("\r"))
    # Exactly k commas on every line: k*n in all, and line i holds the i-th group of k.
    k = body.header.n_fields - 1
    commas = np.flatnonzero(b == ord(","))
    if len(commas) != n * k:
        return None
    grid = commas.reshape(n, k)
    if not ((grid[:, 0] >= starts) & (grid[:, -1] < stops)).all():
        return None  # also catches blank lines: they hold no comma
    date = body.header.positions["date"]
    field_start = starts if date == 0 else grid[:, date - 1] + 1
    field_stop = stops if date == k else grid[:, date]
    if not (field_stop - field_start == 10).all():
        return None
    date_text = b[field_start[:, None] + np.arange(10)].view("S10").ravel().astype("U10")
    return _Regular(body, data if data.endswith(b"\n") else data + b"\n", date_text)


def _number_layout(header: Header) -> tuple:
    """Bodies with the same layout can share one C-parser call."""
    return header.n_fields, tuple(sorted((p, name) for name, p in header.positions.items() if name != "date"))


def _numbers(group: list[_Regular]) -> list[np.ndarray] | None:
    """Each body's (n, 5) values, from one C-parser call over all of them;
    None when any field holds text where a number belongs."""
    import pandas as pd  # only for large bodies (FAST_PATH_BYTES and up)

    header = group[0].body.header
    numbers = [p for p, _ in _number_layout(header)[1]]
    try:
        frame = pd.read_csv(
            io.BytesIO(b"".join(r.data for r in group)),
            header=None,
            usecols=numbers,
            engine="c",
            dtype=np.float64,
            keep_default_na=False,
            na_values={p: [""] for p in numbers},
        )
    except (ValueError, pd.errors.ParserError):
        return None
    sizes = [len(r.date_text) for r in group]
    if len(frame) != sum(sizes):
        return None
    values = np.full((len(frame), len(VALUES)), np.nan)
    for j, name in enumerate(VALUES):
        if name in header.positions:
            values[:, j] = frame[header.positions[name]].to_numpy(dtype=np.float64)
    return np.split(values, np.cumsum(sizes)[:-1])


def iso_dates(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(valid mask, yyyymmdd ints) for "YYYY-MM-DD" strings, checked with
    NumPy on the digits: same answer for one row or ten million."""
    texts = np.asarray(texts)
    if texts.dtype != np.dtype("U10"):  # the fast path's dates are U10 already
        # An 11th code point that is not 0 marks a string longer than 10 characters.
        texts = texts.astype("U11")
    codes = texts.view(np.uint32).reshape(len(texts), texts.dtype.itemsize // 4)
    d = codes[:, :10].astype(np.int32) - ord("0")
    digit = (d >= 0) & (d <= 9)
    shape_ok = (
        digit[:, [0, 1, 2, 3, 5, 6, 8, 9]].all(axis=1)
        & (codes[:, 4] == ord("-"))
        & (codes[:, 7] == ord("-"))
        & ((codes[:, 10] == 0) if codes.shape[1] > 10 else True)
    )
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    month = d[:, 5] * 10 + d[:, 6]
    day = d[:, 8] * 10 + d[:, 9]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(month, 0, 12)] + (
        leap & (month == 2)
    )
    valid = shape_ok & (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
    return valid, np.where(valid, year * 10000 + month * 100 + day, 0)


def validate(batch: list[Fields], today: dt.date | None = None) -> list[ParsedRows]:
    """Judge the rows of many files in one vectorised pass (a nightly run
    brings thousands of files with a row each: per-file NumPy calls would
    cost more than the work), then hand each file back its own result.

    `today` is the exchange's current day: a good row dated after it may be a
    vendor's early or mis-dated line, or the ingesting host's clock behind
    the exchange's; it waits (ParsedRows.waiting) rather than being set aside."""
    today = today or dt.date.today()
    sizes = [len(f) for f in batch]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    file_of = np.repeat(np.arange(len(batch)), sizes)
    n = int(offsets[-1])

    def cat(name, empty):
        return np.concatenate([getattr(f, name) for f in batch]) if n else empty

    date_text = cat("date_text", np.empty(0, dtype=object))
    values = cat("values", np.empty((0, len(VALUES))))
    line_no = cat("lines", np.empty(0, dtype=np.int64))
    width_ok = cat("width_ok", np.empty(0, dtype=bool))
    has_volume = np.repeat([("volume" in f.header.positions) for f in batch], sizes).astype(bool)

    def raw(i: int) -> str:
        k = file_of[i]
        return batch[k].raw_line(i - int(offsets[k]))

    def field_text(i: int, name: str) -> str:
        return raw(i).split(",")[batch[file_of[i]].header.positions[name]].strip()

    bad = ~width_ok
    reasons: dict[int, str] = {
        int(i): f"expected {batch[file_of[i]].header.n_fields} fields, found {len(raw(int(i)).split(','))}"
        for i in np.flatnonzero(bad)
    }

    def flag(mask: np.ndarray, reason_of) -> None:
        nonlocal bad
        new = np.asarray(mask, dtype=bool) & ~bad
        for i in np.flatnonzero(new):
            reasons[int(i)] = reason_of(int(i))
        bad = bad | new

    date_ok, date_int = iso_dates(date_text)
    flag(
        ~date_ok,
        lambda i: (
            "missing date"
            if not date_text[i]
            else f"impossible or unrecognised date {str(date_text[i])!r} (expected YYYY-MM-DD)"
        ),
    )
    o, h, lo, c, v = (values[:, j] for j in range(len(VALUES)))
    for j, name in enumerate(PRICE_COLUMNS):
        column = values[:, j]
        flag(~np.isfinite(column), lambda i, name=name: _number_problem(name, field_text(i, name)))
        flag(column <= 0, lambda i, column=column, name=name: f"{name} is not positive ({column[i]:g})")
    # An empty volume is allowed (NULL); text that is not a number is not.
    unparsed = np.flatnonzero(has_volume & np.isnan(v) & ~bad)
    text_given = np.zeros(n, dtype=bool)
    text_given[unparsed] = [field_text(int(i), "volume") != "" for i in unparsed]
    flag(text_given | np.isinf(v), lambda i: _number_problem("volume", field_text(i, "volume")))
    flag(v < 0, lambda i: f"volume is negative ({v[i]:g})")
    flag(h < lo, lambda i: f"high {h[i]:g} is below low {lo[i]:g}")
    flag(h < np.maximum(o, c), lambda i: f"high {h[i]:g} is below open/close {max(o[i], c[i]):g}")
    flag(lo > np.minimum(o, c), lambda i: f"low {lo[i]:g} is above open/close {min(o[i], c[i]):g}")
    today_int = today.year * 10000 + today.month * 100 + today.day
    future = (date_int > today_int) & ~bad

    keep = np.flatnonzero(~bad & ~future)
    # yyyymmdd < 10^8, so this key is unique per (file, date).
    keep, dup_rejects = _resolve_duplicate_dates(
        keep, file_of * 100_000_000 + date_int, date_text, values, line_no, raw
    )
    rejects_of: list[list[Rejection]] = [[] for _ in batch]
    for i, r in reasons.items():
        rejects_of[file_of[i]].append(Rejection(int(line_no[i]), raw(i), r))
    for i, rejection in dup_rejects:
        rejects_of[file_of[i]].append(rejection)
    waiting_of: list[list[Rejection]] = [[] for _ in batch]
    for i in np.flatnonzero(future):
        waiting_of[file_of[i]].append(
            Rejection(int(line_no[i]), raw(int(i)), f"dated {date_text[i]}, after the exchange's current day {today}")
        )
    order_key = file_of[keep] * 100_000_000 + date_int[keep]
    if not (np.diff(order_key) > 0).all():  # most files are in date order already
        keep = keep[np.argsort(order_key, kind="stable")]  # by file, then date
    bounds = np.searchsorted(file_of[keep], np.arange(len(batch) + 1))
    out = []
    for k in range(len(batch)):
        mine = keep[bounds[k] : bounds[k + 1]]
        out.append(
            ParsedRows(
                Rows(date_text[mine], values[mine], line_no[mine]),
                sorted(rejects_of[k], key=lambda r: r.line),
                waiting_of[k],
            )
        )
    return out


def _number_problem(name: str, text: str) -> str:
    if text == "":
        return f"missing {name}"
    try:
        value = float(text) if text.isascii() and "_" not in text else float("x")
    except ValueError:
        return f"non-numeric {name} {text[:40]!r}"
    if not math.isfinite(value):
        return f"{name} is not finite ({text[:40]})"
    return f"non-numeric {name} {text[:40]!r}"


def _resolve_duplicate_dates(keep, key, date_text, values, line_no, raw):
    """A date given twice in a file with the same values keeps its first line;
    given with different values it is ambiguous, and every line for it is set
    aside. Returns (rows kept, [(row, Rejection)])."""
    keys = key[keep]
    unique, counts = np.unique(keys, return_counts=True)
    if (counts == 1).all():
        return keep, []
    rejects, drop = [], set()
    for dup in unique[counts > 1]:
        group = keep[keys == dup]  # in file order
        first = group[0]
        same = all(np.array_equal(values[g], values[first], equal_nan=True) for g in group[1:])
        iso = date_text[first]
        listed = ", ".join(str(line_no[g]) for g in group)
        for g in group[1:] if same else group:
            drop.add(int(g))
            reason = (
                f"repeats line {line_no[first]} ({iso})"
                if same
                else f"date {iso} appears on lines {listed} with different values"
            )
            rejects.append((int(g), Rejection(int(line_no[g]), raw(int(g)), reason)))
    return np.array([k for k in keep if int(k) not in drop], dtype=np.int64), rejects
