"""Closes that moved too far to be true: found, classified, never rejected.

A vendor's files carry misplaced decimals and unadjusted splits beside real
crashes. A day is flagged when its close moved from the previous one by more
than JUMP_SIGMAS times the ticker's own typical move (a robust scale of its
previous returns) and by at least MIN_MOVE. The flag says what the move most
likely was:

- bad_print: the close returns to about where it was within REVERT_SESSIONS
  sessions (a misplaced decimal, a wrong print); the day it returns is
  flagged `revert`, so every window holding the bad value is known;
- split: the ratio is within SPLIT_TOLERANCE of 2, 3, 4, 5 or 10 or of their
  inverses, the day opened at the new level, and the new level holds;
- jump: anything else (a real crash or a takeover may well be one).

Flags are judgements, so rows are stored all the same; training and
calibration leave out windows that cross a flagged day, and the nightly run
marks a prediction whose window holds one. A flag is decided from the rows
up to REVERT_SESSIONS after it, so the newest days are judged again by the
next ingest (a jump may turn out a bad print); `detect` over any stretch
that starts CONTEXT rows before the days in question, told of a bad print
still being undone there (`revert_in_progress` of the flags stored before),
gives the same flags as over the whole history.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby, pairwise
from operator import itemgetter

import numpy as np
import sqlalchemy as sa
from tqdm import tqdm

from ..db import bulk, schema

JUMP_SIGMAS = 10.0  # times the ticker's typical daily move
MIN_MOVE = np.log(1.4)  # and at least 40% either way: no ordinary day of any ticker
SCALE_RETURNS = 60  # previous returns whose robust scale is "typical"
SCALE_FLOOR = 0.005  # a typical move of at least 0.5%: a ticker that barely moved does not flag every tick
REVERT_SESSIONS = 2  # a bad print is undone within this many sessions
REVERT_TOLERANCE = 0.25  # "about where it was": within a quarter of the move
SPLIT_FACTORS = (2, 3, 4, 5, 10)
SPLIT_TOLERANCE = 0.03  # within 3% of the factor
SPLIT_OPEN_TOLERANCE = 0.25  # the open gapped by the ratio, give or take a quarter of the move
CONTEXT = SCALE_RETURNS + 2 * REVERT_SESSIONS + 1  # rows before the first day judged that detection reads
KINDS = ("split", "bad_print", "revert", "jump")
# detect() looks at a move only if it is at least MIN_MOVE, and only from 2 x
# REVERT_SESSIONS rows before the first row judged (a bad print that started
# there may be undone in it): this many rows up to the last judged show them all.
CANDIDATE_ROWS = 3 * REVERT_SESSIONS + 1


@dataclass(frozen=True)
class Flag:
    index: int  # the row whose close moved (from the row before it)
    kind: str
    ratio: float  # this close over the previous one


def detect(closes: np.ndarray, first: int = 1, opens: np.ndarray | None = None, reverted_at: int = -1) -> list[Flag]:
    """Flags for rows first.. of one ticker's closes (in date order), with
    its opens when known (a split opens at the new level). Rows before
    `first` are context only (CONTEXT of them are enough), and `reverted_at`
    is the revert row of a bad print that started before the rows looked at
    again (first - 2 x REVERT_SESSIONS on; `revert_in_progress`; -1: none)."""
    closes = np.asarray(closes, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        moves = np.diff(np.log(closes))  # moves[i - 1]: row i over row i - 1
    flags: list[Flag] = []
    # reverted_at: the revert row of the last bad print, not a move of its own.
    # Bad prints can follow one another (a vendor's run of misplaced decimals),
    # so whether a move is a revert can hang on the bad print before it.
    with np.errstate(invalid="ignore"):
        large = np.flatnonzero(np.abs(moves) >= MIN_MOVE) + 1  # rare: the rest needs no look
    # A bad print that started just before `first` explains a move after it.
    for i in large[large >= first - 2 * REVERT_SESSIONS].tolist():
        move = moves[i - 1]
        if i <= reverted_at:
            continue
        if abs(move) < JUMP_SIGMAS * _typical_move(moves[max(0, i - 1 - SCALE_RETURNS) : i - 1]):
            continue
        ratio = float(closes[i] / closes[i - 1])
        back = _reverts_at(closes, i)
        if back is not None:
            flags.append(Flag(i, "bad_print", ratio))
            flags.extend(Flag(j, "bad_print", float(closes[j] / closes[j - 1])) for j in range(i + 1, back))
            flags.append(Flag(back, "revert", float(closes[back] / closes[back - 1])))
            reverted_at = back
        elif _near_split(ratio) and _opened_there(opens, closes, i) and _level_holds(closes, i):
            flags.append(Flag(i, "split", ratio))
        else:
            flags.append(Flag(i, "jump", ratio))
    return [f for f in flags if f.index >= first]


def revert_in_progress(kinds: dict[int, str], first: int) -> int:
    """The revert row of a bad print that started before `first - 2 x
    REVERT_SESSIONS` and is undone at or after it, from one ticker's flags
    {row: kind} before `first` (final: the rows after them are known; a row
    that arrives late is judged as a night's first new row, and an older
    schema's flags are judged again whole), or -1.
    This is what detect() would have carried there over the whole history."""
    start = first - 2 * REVERT_SESSIONS
    for back in sorted((row for row, kind in kinds.items() if kind == "revert" and row >= start), reverse=True):
        began = back
        while kinds.get(began - 1) == "bad_print":
            began -= 1
        if began < start:
            return back
    return -1


def _typical_move(previous: np.ndarray) -> float:
    """A robust scale of the previous returns (1.4826 x their median absolute
    value: one standard deviation for Gaussian moves, unmoved by the odd jump)."""
    previous = previous[np.isfinite(previous)]
    if len(previous) < 5:
        return SCALE_FLOOR
    return max(1.4826 * float(np.median(np.abs(previous))), SCALE_FLOOR)


def _reverts_at(closes: np.ndarray, i: int) -> int | None:
    """The row within REVERT_SESSIONS after i whose close is back near row
    i - 1's, or None."""
    move = np.log(closes[i] / closes[i - 1])
    for j in range(i + 1, min(i + 1 + REVERT_SESSIONS, len(closes))):
        if abs(np.log(closes[j] / closes[i - 1])) <= REVERT_TOLERANCE * abs(move):
            return j
    return None


def _near_split(ratio: float) -> bool:
    return any(abs(ratio * f - 1) <= SPLIT_TOLERANCE or abs(ratio / f - 1) <= SPLIT_TOLERANCE for f in SPLIT_FACTORS)


def _opened_there(opens: np.ndarray | None, closes: np.ndarray, i: int) -> bool:
    """The day opened at the new level: after a split every price of the day
    moved by its ratio, while a crash opens near the old close and falls."""
    if opens is None:
        return True
    gap, move = np.log(opens[i] / closes[i - 1]), np.log(closes[i] / closes[i - 1])
    return bool(abs(gap - move) <= SPLIT_OPEN_TOLERANCE * abs(move))


def _level_holds(closes: np.ndarray, i: int) -> bool:
    """The new level is kept: the next closes (those known) stay nearer it than the old one."""
    after = closes[i + 1 : i + 1 + REVERT_SESSIONS]
    return bool(np.all(np.abs(np.log(after / closes[i])) < np.abs(np.log(after / closes[i - 1]))))


TICKERS_PER_QUERY = 500  # bound parameters per query
PROGRESS_MIN_HISTORIES = 20  # whole histories judged at once that get a progress bar
_OWED = sa.or_(schema.tickers.c.judged_through.is_(None), schema.tickers.c.judged_through < schema.tickers.c.last_date)


def judge_new_rows(
    conn: sa.Connection,
    now: str,
    in_memory: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    progress: bool = False,
) -> None:
    """Judge every ticker's rows after its `judged_through` (all of them where
    it is NULL), in the caller's transaction; the REVERT_SESSIONS days
    before are judged again, since what followed them is now known.
    `in_memory`: {ticker: (dates, closes, opens)} of tickers whose whole stored
    history is at hand (a ticker new in this ingest), read from nowhere else.
    `progress`: a bar when many stored histories are judged whole (once, on a
    database upgraded to a schema that judges again: tens of seconds at 5,000)."""
    t = schema.tickers.c
    owed = bulk.fetch_plain(conn, sa.select(t.ticker, t.judged_through).where(_OWED))
    by_anchor: dict[str | None, list[str]] = defaultdict(list)
    judged = []  # (ticker, the first date judged, {date: (kind, ratio)} found from there)
    for ticker, judged_through in owed:
        if ticker in in_memory:
            judged.append((ticker, *_judge(*in_memory[ticker], None)))
        else:
            by_anchor[judged_through].append(ticker)
    whole = len(by_anchor.get(None, ()))
    bar = tqdm(
        total=whole,
        desc="judging stored price histories (once)",
        unit="ticker",
        disable=not progress or whole < PROGRESS_MIN_HISTORIES,
        leave=False,
    )
    for anchor, tickers in by_anchor.items():
        for first in range(0, len(tickers), TICKERS_PER_QUERY):
            batch = tickers[first : first + TICKERS_PER_QUERY]
            # Most nights no new move is large enough to be judged: the few rows
            # that show it are read, and the context only where one is. Without
            # an anchor every row is judged, so there is nothing to look at first.
            moved = batch if anchor is None else []
            for ticker, rows in _recent_rows(conn, batch, anchor, CANDIDATE_ROWS) if anchor is not None else ():
                if _any_large_move([close for _, close, _ in rows]):
                    moved.append(ticker)
                else:
                    judged.append((ticker, _judged_since([d for d, _, _ in rows], anchor), {}))
            context = dict(_recent_rows(conn, moved, anchor, CONTEXT + REVERT_SESSIONS))
            earlier = _kinds_before(conn, context, anchor)
            for ticker, rows in context.items():
                dates, closes, opens = zip(*rows, strict=True)
                columns = np.array(dates, dtype=object), np.array(closes), np.array(opens)
                judged.append((ticker, *_judge(*columns, anchor, earlier[ticker])))
                if anchor is None:
                    bar.update(1)
    bar.close()
    for first in range(0, len(judged), TICKERS_PER_QUERY):
        _store(conn, judged[first : first + TICKERS_PER_QUERY], now)
    if owed:
        conn.execute(schema.tickers.update().where(_OWED).values(judged_through=t.last_date))


def any_owed(conn: sa.Connection) -> bool:
    """Whether some ticker has rows not judged yet (a database upgraded from
    before flags, or an ingest that stopped between its batches)."""
    return conn.execute(sa.select(sa.literal(1)).select_from(schema.tickers).where(_OWED).limit(1)).first() is not None


def _recent_rows(conn: sa.Connection, tickers: list[str], anchor: str | None, before: int):
    """(ticker, [(date, close, open), ...] in date order) for each ticker: every
    row if anchor is None, else from the row `before` rows before its first
    after `anchor` on (every row if it has fewer). Two index-only reads: each
    ticker's start by a primary-key seek, then the rows from the earliest
    start, cut per ticker here (a join on per-ticker starts was planned as a
    scan of every row on PostgreSQL)."""
    if not tickers:
        return
    p, t = schema.prices.c, schema.tickers.c
    starts: dict[str, str | None] = dict.fromkeys(tickers)
    if anchor is not None:
        back = schema.prices.alias("back")
        start = (
            sa.select(back.c.date)
            .where(back.c.ticker == t.ticker, back.c.date <= anchor)
            .order_by(back.c.date.desc())
            .limit(1)
            .offset(before - 1)
            .scalar_subquery()
        )
        starts.update(bulk.fetch_plain(conn, sa.select(t.ticker, start).where(t.ticker.in_(tickers))))
    # A ticker with fewer rows before is read whole, on its own: one young
    # ticker does not make the whole batch read its history.
    bounded = [ticker for ticker, start in starts.items() if start is not None]
    whole = [ticker for ticker, start in starts.items() if start is None]
    query = sa.select(p.ticker, p.date, p.close, p.open).order_by(p.ticker, p.date)
    reads = [query.where(p.ticker.in_(whole))] if whole else []
    if bounded:
        reads.append(query.where(p.ticker.in_(bounded), p.date >= min(starts[t] for t in bounded)))
    for read in reads:
        for ticker, rows in groupby(bulk.fetch_plain(conn, read), key=itemgetter(0)):
            first = starts[ticker]
            yield ticker, [(d, close, open_) for _, d, close, open_ in rows if first is None or d >= first]


def _judge(
    dates: np.ndarray, closes: np.ndarray, opens: np.ndarray, anchor, earlier: dict[str, str] | None = None
) -> tuple[str | None, dict]:
    """(since, found): the flags of the rows after `anchor` (every row if None)
    and of the REVERT_SESSIONS rows before it, from `since` on (None: no row to
    judge). `earlier`: the stored flags {date: kind} of the rows just before."""
    first = _first_judged(dates, anchor)
    row_of = {str(d): i for i, d in enumerate(dates)}
    kinds = {row_of[d]: kind for d, kind in (earlier or {}).items() if d in row_of}
    reverted_at = revert_in_progress(kinds, first)
    found = {str(dates[f.index]): (f.kind, f.ratio) for f in detect(closes, first, opens, reverted_at)}
    return _judged_since(dates, anchor), found


def _kinds_before(conn: sa.Connection, context: dict[str, list], anchor) -> dict[str, dict[str, str]]:
    """{ticker: {date: kind}} of the flags stored on the 3 x REVERT_SESSIONS
    rows before each ticker's first row judged (where a bad print still being
    undone there began), from its rows read with their context: final, since
    the rows after them are known."""
    f = schema.price_flags.c
    bounds = {
        ticker: (rows[max(0, first - 3 * REVERT_SESSIONS)][0], rows[first][0])
        for ticker, rows in context.items()
        if (first := _first_judged([d for d, _, _ in rows], anchor)) < len(rows)
    }
    kinds: dict[str, dict[str, str]] = {ticker: {} for ticker in context}
    if bounds:
        query = sa.select(f.ticker, f.date, f.kind).where(
            f.ticker.in_(list(bounds)),
            f.date >= min(low for low, _ in bounds.values()),
            f.date < max(high for _, high in bounds.values()),
        )
        for ticker, d, kind in bulk.fetch_plain(conn, query):
            low, high = bounds[ticker]
            if low <= d < high:
                kinds[ticker][d] = kind
    return kinds


def _first_judged(dates: Sequence[str], anchor) -> int:
    """The first row judged: REVERT_SESSIONS before the first after `anchor`."""
    new_at = 0 if anchor is None else bisect_right(dates, anchor)
    return max(1, new_at - REVERT_SESSIONS)


def _judged_since(dates: Sequence[str], anchor) -> str | None:
    first = _first_judged(dates, anchor)
    return str(dates[first]) if first < len(dates) else None


def _any_large_move(closes: list[float]) -> bool:
    """Whether detect() would look at any move of these closes (read with
    CANDIDATE_ROWS). A hair below MIN_MOVE: math.log and NumPy's may differ
    in the last bit, and a move looked at needlessly costs only a read."""
    logs = [math.log(c) for c in closes]
    return any(abs(b - a) >= MIN_MOVE - 1e-9 for a, b in pairwise(logs))


def _store(conn: sa.Connection, judged: list[tuple[str, str | None, dict]], now: str) -> None:
    """Replace the stored flags of each (ticker, since, found) from `since` on
    by `found`: the stored ones of all these tickers in one read (a query per
    ticker was most of a 5,000-ticker night), then only what changed
    written; a flag that is unchanged keeps its detected_at."""
    f = schema.price_flags.c
    judging = {ticker: since for ticker, since, _ in judged if since is not None}
    stored: dict[str, dict] = defaultdict(dict)
    if judging:
        query = sa.select(f.ticker, f.date, f.kind, f.ratio).where(
            f.ticker.in_(list(judging)), f.date >= min(judging.values())
        )
        for ticker, d, k, r in bulk.fetch_plain(conn, query):
            if d >= judging[ticker]:
                stored[ticker][d] = (k, r)
    fresh = []
    for ticker, _, found in judged:
        mine = stored.get(ticker, {})
        gone = [d for d in mine if found.get(d) != mine[d]]
        if gone:
            conn.execute(schema.price_flags.delete().where(f.ticker == ticker, f.date.in_(gone)))
        fresh += [
            {"ticker": ticker, "date": d, "kind": k, "ratio": r, "detected_at": now}
            for d, (k, r) in found.items()
            if mine.get(d) != (k, r)
        ]
    if fresh:
        conn.execute(schema.price_flags.insert(), fresh)
