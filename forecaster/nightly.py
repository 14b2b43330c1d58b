"""One nightly run: new rows in, next-day predictions out, atomically.

The CLI (`forecaster predict`), cron and the daemon all call `predict()`.
For each as_of it records a `runs` row as running, scores every ticker with
a close on as_of (point in time: rows dated <= as_of only), then writes the
`models` row, the predictions and the run's success in one transaction.
Any failure marks the run failed with its reason and writes no prediction.
Nothing here imports torch.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from . import store
from .calendar import DEFAULT_CALENDAR, next_trading_day
from .errors import DataError, ForecasterError, StoreError, first_line
from .ingest import IngestReport, ingest
from .scoring import ModelFile, load_model
from .shards import Shard
from .windows import latest_windows

FLAG_OUT_OF_RANGE = "out_of_range"
LISTED = 10  # tickers named in a message before "and N more"
DEFAULT_LOOKBACK = 5  # sessions in which a late ticker's close is still scored


@dataclass
class RunResult:
    run_id: int
    as_of: str
    target_date: str
    n_predictions: int            # written by this run
    n_already: int                # stored before by a run of the same model
    late: list[str]               # scored now, after an earlier run of this as_of: their close came late
    stale: list[str]
    skipped: dict[str, str]
    flagged: list[str]
    device: str
    seconds: float
    message: str


@dataclass
class PredictOutcome:
    runs: list[RunResult]
    ingest: IngestReport | None = None
    model_id: str = ""
    device: str = ""
    recovered: list[int] = field(default_factory=list)  # abandoned runs marked failed


def predict(engine: sa.Engine, model_path: str | Path, *, as_of: str | None = None,
            start: str | None = None, end: str | None = None, data=(), device: str = "auto",
            calendar: str = DEFAULT_CALENDAR, progress: bool = False, should_stop=lambda: False,
            shard: Shard | None = None, on_run=lambda run: None) -> PredictOutcome:
    """Ingest `data` (if any), then score each as_of: the given one, every
    date with prices in [start, end], or by default the newest date stored.
    With a `shard`, only the tickers of that shard are scored. `on_run` is
    called with each run's result as soon as it has committed."""
    return _score_dates(engine, model_path, lambda model: as_of_dates(engine, as_of, start, end),
                        data=data, device=device, calendar=calendar, progress=progress,
                        should_stop=should_stop, shard=shard, as_of=as_of, on_run=on_run)


def catch_up(engine: sa.Engine, model_path: str | Path, *, data=(), device: str = "auto",
             calendar: str = DEFAULT_CALENDAR, should_stop=lambda: False,
             shard: Shard | None = None, lookback: int = DEFAULT_LOOKBACK, on_run=lambda run: None
             ) -> PredictOutcome:
    """What the daemon runs: ingest, then score every as_of this model still
    owes (owed_dates). The model is reloaded each time, so a re-exported file
    is picked up."""
    return _score_dates(engine, model_path, lambda model: owed_dates(engine, model, shard, lookback),
                        data=data, device=device, calendar=calendar, should_stop=should_stop, shard=shard,
                        on_run=on_run)


def _score_dates(engine, model_path, dates_for, *, data, device, calendar, should_stop, shard, on_run,
                 progress=False, as_of=None) -> PredictOutcome:
    """Ingest, recover abandoned runs, load the model (a failure to load is a
    failed `runs` row too), then one all-or-nothing run per date."""
    report = ingest(engine, data, progress=progress) if data else None
    recovered = recover_abandoned_runs(engine)
    try:
        model = load_model(model_path, device)
    except ForecasterError as exc:
        record_failed_run(engine, as_of, None, device, str(exc), shard)
        raise
    outcome = PredictOutcome([], report, model.sha256, model.device, recovered)
    for day in dates_for(model):
        if should_stop():
            break
        outcome.runs.append(run_one(engine, model, day, calendar, shard))
        on_run(outcome.runs[-1])
    return outcome


def as_of_dates(engine: sa.Engine, as_of: str | None, start: str | None, end: str | None) -> list[str]:
    for value in (as_of, start, end):
        if value is not None:
            _check_date(value)
    d = store.price_dates.c
    with engine.connect() as conn:
        if start or end:
            dates = list(conn.execute(sa.select(d.date).where(
                d.date >= (start or "0000-00-00"), d.date <= (end or "9999-99-99")).order_by(d.date)).scalars())
            if not dates:
                raise DataError(f"no prices stored between {start or 'the start'} and {end or 'the end'}")
            return dates
        if as_of:
            return [as_of]
        newest = conn.execute(sa.select(sa.func.max(d.date))).scalar()
    if newest is None:
        raise DataError("the database holds no prices yet: ingest some first, or pass --data")
    return [newest]


def owed_dates(engine: sa.Engine, model: ModelFile, shard: Shard | None = None,
               lookback: int = DEFAULT_LOOKBACK) -> list[str]:
    """The as_of dates this model still owes, from the ledgers (not from the
    scheduler's memory), so downtime, a crash or late files lose nothing:

    * every date with prices after its last succeeded run (with no run yet,
      the newest date only);
    * any of the last `lookback` dates since its first run on which some
      ticker has a close and enough history but no prediction from this
      model: its file arrived after that night was scored.
    """
    r, d = store.runs.c, store.price_dates.c
    with engine.connect() as conn:
        first, last = conn.execute(sa.select(sa.func.min(r.as_of), sa.func.max(r.as_of)).where(
            r.model_id == model.sha256, r.status == "succeeded", _same_shard(shard))).one()
        if last is None:
            newest = conn.execute(sa.select(sa.func.max(d.date))).scalar()
            return [newest] if newest else []
        after = list(conn.execute(sa.select(d.date).where(d.date > last).order_by(d.date)).scalars())
        recent = conn.execute(sa.select(d.date).where(d.date <= last, d.date >= first).order_by(d.date.desc())
                              .limit(max(0, lookback - len(after)))).scalars().all()
        late = [day for day in recent if late_tickers(conn, model, day, shard)]
    return sorted(late) + after


def late_tickers(conn: sa.Connection, model: ModelFile, as_of: str, shard: Shard | None = None) -> list[str]:
    """Tickers with a close on as_of and enough history up to it that this
    model has not scored for as_of (and could: its shard, its tickers)."""
    t, p, q = store.tickers.c, store.prices.c, store.predictions.c
    unscored = conn.execute(
        sa.select(t.ticker).select_from(store.tickers.join(
            store.prices, sa.and_(p.ticker == t.ticker, p.date == as_of)))  # one key seek per ticker
        .where(t.first_date <= as_of, t.last_date >= as_of,
               ~sa.exists().where(q.model_id == model.sha256, q.ticker == t.ticker, q.as_of == as_of))
        .order_by(t.ticker)).scalars().all()
    known = set(model.training_tickers) if model.uses_ticker_index else None
    history = sa.select(sa.func.count()).select_from(
        sa.select(p.date).where(p.ticker == sa.bindparam("ticker"), p.date <= as_of)
        .limit(model.seq_len).subquery())
    return [ticker for ticker in unscored
            if (shard is None or ticker in shard) and (known is None or ticker in known)
            and conn.execute(history, {"ticker": ticker}).scalar() >= model.seq_len]


def run_one(engine: sa.Engine, model: ModelFile, as_of: str, calendar: str = DEFAULT_CALENDAR,
            shard: Shard | None = None) -> RunResult:
    """Score one as_of; all or nothing."""
    started = time.perf_counter()
    run_id = _start_run(engine, model.sha256, as_of, model.device, shard)
    try:
        batch = latest_windows(engine, as_of, model.seq_len)
        if shard is not None:
            batch = batch.only(lambda ticker: ticker in shard)
        tickers, windows, last = batch.tickers, batch.windows, batch.last_close
        skipped, index = dict(batch.skipped), None
        if model.uses_ticker_index:
            tickers, windows, last, index = _known_to_model(model, tickers, windows, last, skipped)
        predicted, extent = model.score(windows, index) if tickers else (np.empty(0), np.empty(0))
        target = next_trading_day(as_of, calendar, engine=engine)
        flagged = [t for t, e in zip(tickers, extent) if not e <= model.train_input_extent]
        with store.write_transaction(engine) as conn:
            _ensure_model_row(conn, model)
            already = _stored_tickers(conn, model.sha256, as_of)
            flagged_set = set(flagged)
            rows = [{"run_id": run_id, "model_id": model.sha256, "ticker": t, "as_of": as_of,
                     "target_date": target, "predicted_close": float(y), "last_close": float(c),
                     "flags": FLAG_OUT_OF_RANGE if t in flagged_set else None}
                    for t, y, c in zip(tickers, predicted, last) if t not in already]
            if rows:
                conn.execute(store.predictions.insert(), rows)
            late = [row["ticker"] for row in rows] if _scored_before(conn, model.sha256, as_of, shard) else []
            result = RunResult(run_id, as_of, target, len(rows), len(tickers) - len(rows), late, batch.stale,
                               skipped, flagged, model.device, 0.0, "")
            result.message = _message(result)
            _finish_run(conn, run_id, "succeeded", result.message, len(rows))
    except Exception as exc:
        reason = str(exc) if isinstance(exc, ForecasterError) else first_line(exc)
        _mark_failed(engine, run_id, reason)
        if isinstance(exc, ForecasterError):
            raise
        raise StoreError(f"run {run_id} for {as_of} failed: {reason}") from exc
    result.seconds = time.perf_counter() - started
    return result


def _known_to_model(model: ModelFile, tickers, windows, last, skipped):
    """Per-ticker minmax scaling has numbers only for the training tickers."""
    position = {t: i for i, t in enumerate(model.training_tickers)}
    keep = [i for i, t in enumerate(tickers) if t in position]
    for t in tickers:
        if t not in position:
            skipped[t] = "not a training ticker of this model (its minmax scaling has no numbers for it)"
    return ([tickers[i] for i in keep], windows[keep], last[keep],
            np.array([position[tickers[i]] for i in keep], dtype=np.int64))


def _message(r: RunResult) -> str:
    parts = [f"as_of {r.as_of}: {r.n_predictions} predictions for {r.target_date}"]
    if r.late:
        parts.append(f"{len(r.late)} late (their close arrived after this as_of was first scored): "
                     f"{_names(r.late)}")
    if r.n_already:
        parts.append(f"{r.n_already} already stored by an earlier run of this model, not added again")
    if r.stale:
        parts.append(f"{len(r.stale)} stale (no close on {r.as_of}): {_names(r.stale)}")
    if r.skipped:
        parts.append(f"{len(r.skipped)} skipped: " + "; ".join(
            f"{t} ({why})" for t, why in list(r.skipped.items())[:LISTED]))
    if r.flagged:
        parts.append(f"{len(r.flagged)} flagged {FLAG_OUT_OF_RANGE} (window beyond anything seen in "
                     f"training): {_names(r.flagged)}")
    return "; ".join(parts)


def _names(tickers: list[str]) -> str:
    more = len(tickers) - LISTED
    return ", ".join(tickers[:LISTED]) + (f" and {more} more" if more > 0 else "")


# -- the runs ledger -------------------------------------------------------

def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _start_run(engine: sa.Engine, model_id: str, as_of: str, device: str, shard: Shard | None) -> int:
    with store.write_transaction(engine) as conn:
        return conn.execute(store.runs.insert().values(
            started_at=_now(), status="running", as_of=as_of, model_id=model_id, device=device,
            host=socket.gethostname(), pid=os.getpid(), shard=_text(shard))).inserted_primary_key[0]


def _text(shard: Shard | None) -> str | None:
    return None if shard is None else str(shard)


def _finish_run(conn: sa.Connection, run_id: int, status: str, message: str, n: int | None) -> None:
    conn.execute(store.runs.update().where(store.runs.c.run_id == run_id).values(
        status=status, finished_at=_now(), message=message, n_predictions=n))


def _mark_failed(engine: sa.Engine, run_id: int, reason: str) -> None:
    """Best effort: when the database itself is failing, this may fail too."""
    try:
        with store.write_transaction(engine) as conn:
            _finish_run(conn, run_id, "failed", reason, 0)
    except StoreError:
        pass


def record_failed_run(engine: sa.Engine, as_of: str | None, model_id: str | None, device: str,
                      reason: str, shard: Shard | None = None) -> None:
    try:
        with store.write_transaction(engine) as conn:
            conn.execute(store.runs.insert().values(
                started_at=_now(), finished_at=_now(), status="failed", as_of=as_of, model_id=model_id,
                device=device, n_predictions=0, message=reason, host=socket.gethostname(), pid=os.getpid(),
                shard=_text(shard)))
    except StoreError:
        pass


def recover_abandoned_runs(engine: sa.Engine) -> list[int]:
    """Mark failed the runs left `running` by a process of this host that no longer exists."""
    r = store.runs.c
    host = socket.gethostname()
    with engine.connect() as conn:
        running = conn.execute(sa.select(r.run_id, r.pid).where(r.status == "running", r.host == host)).all()
    dead = [row for row in running if not _alive(row.pid)]
    if dead:
        with store.write_transaction(engine) as conn:
            for row in dead:
                conn.execute(store.runs.update().where(r.run_id == row.run_id, r.status == "running").values(
                    status="failed", finished_at=_now(), n_predictions=0,
                    message=f"abandoned: process {row.pid} on {host} ended before finishing (killed or crashed)"))
    return [row.run_id for row in dead]


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ensure_model_row(conn: sa.Connection, model: ModelFile) -> None:
    m = store.models.c
    if conn.execute(sa.select(m.model_id).where(m.model_id == model.sha256)).first() is None:
        conn.execute(store.models.insert().values(
            model_id=model.sha256, path=str(model.path.resolve()), created_at=model.metadata["created_at"],
            metadata=json.dumps(model.metadata)))


def _stored_tickers(conn: sa.Connection, model_id: str, as_of: str) -> set[str]:
    p = store.predictions.c
    return set(conn.execute(sa.select(p.ticker).where(p.model_id == model_id, p.as_of == as_of)).scalars())


def _scored_before(conn: sa.Connection, model_id: str, as_of: str, shard: Shard | None) -> bool:
    r = store.runs.c
    return conn.execute(sa.select(sa.exists().where(
        r.model_id == model_id, r.as_of == as_of, r.status == "succeeded", _same_shard(shard)))).scalar()


def _same_shard(shard: Shard | None):
    """Runs of this shard only: each shard keeps its own ledger."""
    column = store.runs.c.shard
    return column.is_(None) if shard is None else column == str(shard)


def _check_date(value: str) -> None:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise DataError(f"{value!r} is not a date (expected YYYY-MM-DD)") from None
