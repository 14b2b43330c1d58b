"""Which rows are fit to keep: the rules that set a row aside, in order.

Every row read ends up kept, set aside with its line number, raw text and a
reason, or waiting (dated after the exchange's current day, by at most
WAITING_DAYS: it may become valid, so a later ingest reads it again).
Nothing is dropped silently.

A row is set aside for the first rule of RULES it breaks, so the table reads
as the list of what is set aside and why. After the rules, a date given
twice in one file with different values is ambiguous and every line of it is
set aside; an identical repeat keeps its first line.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .parsing import PRICE_COLUMNS, VALUES, Fields

# A row dated up to this many days after the exchange's current day waits for
# it (a host's clock a day behind, an early file); one dated later is a
# mis-dated row, set aside for good rather than re-read every night.
WAITING_DAYS = 3


@dataclass
class Rejection:
    line: int | None  # None: the whole file
    raw: str
    reason: str


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


class Batch:
    """The rows of many files end to end, as the rules read them."""

    def __init__(self, fields: list[Fields]):
        self.fields = fields
        sizes = [len(f) for f in fields]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.file_of = np.repeat(np.arange(len(fields)), sizes)
        self.n = n = int(self.offsets[-1])

        def cat(name, empty):
            return np.concatenate([getattr(f, name) for f in fields]) if n else empty

        self.date_text = cat("date_text", np.empty(0, dtype=object))
        self.values = cat("values", np.empty((0, len(VALUES))))
        self.lines = cat("lines", np.empty(0, dtype=np.int64))
        self.width_ok = cat("width_ok", np.empty(0, dtype=bool))
        self.has_volume = np.repeat([("volume" in f.header.positions) for f in fields], sizes).astype(bool)
        self.date_ok, self.date_int = iso_dates(self.date_text)

    def column(self, name: str) -> np.ndarray:
        return self.values[:, VALUES.index(name)]

    def raw(self, i: int) -> str:
        k = self.file_of[i]
        return self.fields[k].raw_line(i - int(self.offsets[k]))

    def field_text(self, i: int, name: str) -> str:
        return self.raw(i).split(",")[self.fields[self.file_of[i]].header.positions[name]].strip()

    def volume_text_given(self, pending: np.ndarray) -> np.ndarray:
        """Rows whose volume field holds text that is not a number (an empty one is allowed: NULL)."""
        unparsed = np.flatnonzero(self.has_volume & np.isnan(self.column("volume")) & pending)
        given = np.zeros(self.n, dtype=bool)
        given[unparsed] = [self.field_text(int(i), "volume") != "" for i in unparsed]
        return given


@dataclass(frozen=True)
class Rule:
    """Rows break it where `breaks(batch, pending)` is true (`pending`: not
    set aside by an earlier rule); `reason(batch, i)` says why for row i."""

    breaks: Callable[[Batch, np.ndarray], np.ndarray]
    reason: Callable[[Batch, int], str]


def _price_rules(name: str) -> list[Rule]:
    return [
        Rule(
            lambda b, _, name=name: ~np.isfinite(b.column(name)),
            lambda b, i, name=name: _number_problem(name, b.field_text(i, name)),
        ),
        Rule(
            lambda b, _, name=name: b.column(name) <= 0,
            lambda b, i, name=name: f"{name} is not positive ({b.column(name)[i]:g})",
        ),
    ]


# In order: a row is set aside for the first one it breaks.
RULES: list[Rule] = [
    Rule(
        lambda b, _: ~b.width_ok,
        lambda b, i: f"expected {b.fields[b.file_of[i]].header.n_fields} fields, found {len(b.raw(i).split(','))}",
    ),
    Rule(
        lambda b, _: ~b.date_ok,
        lambda b, i: (
            "missing date"
            if not b.date_text[i]
            else f"impossible or unrecognised date {str(b.date_text[i])!r} (expected YYYY-MM-DD)"
        ),
    ),
    *(rule for name in PRICE_COLUMNS for rule in _price_rules(name)),
    Rule(
        lambda b, pending: b.volume_text_given(pending) | np.isinf(b.column("volume")),
        lambda b, i: _number_problem("volume", b.field_text(i, "volume")),
    ),
    Rule(lambda b, _: b.column("volume") < 0, lambda b, i: f"volume is negative ({b.column('volume')[i]:g})"),
    Rule(
        lambda b, _: b.column("high") < b.column("low"),
        lambda b, i: f"high {b.column('high')[i]:g} is below low {b.column('low')[i]:g}",
    ),
    Rule(
        lambda b, _: b.column("high") < np.maximum(b.column("open"), b.column("close")),
        lambda b, i: (
            f"high {b.column('high')[i]:g} is below open/close {max(b.column('open')[i], b.column('close')[i]):g}"
        ),
    ),
    Rule(
        lambda b, _: b.column("low") > np.minimum(b.column("open"), b.column("close")),
        lambda b, i: (
            f"low {b.column('low')[i]:g} is above open/close {min(b.column('open')[i], b.column('close')[i]):g}"
        ),
    ),
]


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
    b = Batch(batch)
    bad = np.zeros(b.n, dtype=bool)
    reasons: dict[int, str] = {}
    for rule in RULES:
        new = np.asarray(rule.breaks(b, ~bad), dtype=bool) & ~bad
        for i in np.flatnonzero(new):
            reasons[int(i)] = rule.reason(b, int(i))
        bad |= new
    horizon = today + dt.timedelta(days=WAITING_DAYS)
    too_far = (b.date_int > horizon.year * 10000 + horizon.month * 100 + horizon.day) & ~bad
    for i in np.flatnonzero(too_far):
        reasons[int(i)] = (
            f"date {b.date_text[i]} is more than {WAITING_DAYS} days after the exchange's current day {today}"
        )
    bad |= too_far
    future = (b.date_int > today.year * 10000 + today.month * 100 + today.day) & ~bad

    keep = np.flatnonzero(~bad & ~future)
    # yyyymmdd < 10^8, so this key is unique per (file, date).
    keep, dup_rejects = _resolve_duplicate_dates(
        keep, b.file_of * 100_000_000 + b.date_int, b.date_text, b.values, b.lines, b.raw
    )
    rejects_of: list[list[Rejection]] = [[] for _ in batch]
    for i, r in reasons.items():
        rejects_of[b.file_of[i]].append(Rejection(int(b.lines[i]), b.raw(i), r))
    for i, rejection in dup_rejects:
        rejects_of[b.file_of[i]].append(rejection)
    waiting_of: list[list[Rejection]] = [[] for _ in batch]
    for i in np.flatnonzero(future):
        waiting_of[b.file_of[i]].append(
            Rejection(
                int(b.lines[i]), b.raw(int(i)), f"dated {b.date_text[i]}, after the exchange's current day {today}"
            )
        )
    order_key = b.file_of[keep] * 100_000_000 + b.date_int[keep]
    if not (np.diff(order_key) > 0).all():  # most files are in date order already
        keep = keep[np.argsort(order_key, kind="stable")]  # by file, then date
    bounds = np.searchsorted(b.file_of[keep], np.arange(len(batch) + 1))
    out = []
    for k in range(len(batch)):
        mine = keep[bounds[k] : bounds[k + 1]]
        out.append(
            ParsedRows(
                Rows(b.date_text[mine], b.values[mine], b.lines[mine]),
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
