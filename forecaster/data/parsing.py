"""Reading OHLC text into typed fields, not yet judged (rules.py judges them).

The layout is the public dataset's: one file per ticker, `<ticker>.us.txt`
(or `.csv`), header `Date,Open,High,Low,Close,Volume,OpenInt`. Vendor
variants are accepted: any header case, a byte-order mark, CRLF, an unnamed
first column holding the date, extra columns, no Volume, rows in any order.

Two ways to the same fields: large, regular bodies through NumPy and one
C-parser call for many files at once; the rest line by line in plain Python.
Both read every line to the same fields (tests/data/test_rules.py, and the
fuzz tests of tests/test_reliability.py).
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np

from ..errors import UnreadableFileError

PRICE_COLUMNS = ("open", "high", "low", "close")
ROW_COLUMNS = ("date", *PRICE_COLUMNS, "volume")
VALUES = ("open", "high", "low", "close", "volume")  # the columns of Fields.values and Rows.values


@dataclass
class Header:
    """Where each field we use sits in a row, read from the file's first line."""

    positions: dict[str, int]  # column name -> field index
    n_fields: int


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
