"""One nightly run: new rows in, next-day predictions out, atomically.

The CLI (`forecaster predict`), cron and the daemon all call `predict()` or
`catch_up()`. For each as_of, `run_one` reads one step at a time:

  1. open a `runs` row as running (runs.py);
  2. the windows to score: every ticker with a close on as_of, point in time
     (rows dated <= as_of only), of this shard, that the model can scale;
  3. score them with ONNX Runtime;
  4. in one transaction: the `models` row, the predictions not stored yet,
     and the run's success with its message.

A failure marks the run failed with its reason and writes no prediction.
Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from ..artifact.model_file import ModelFile, file_sha256, load_model
from ..data.calendar import next_trading_day
from ..data.config import DEFAULT_CALENDAR, SETTLE_SECONDS
from ..data.ingest import IngestReport, ingest
from ..data.windows import ScoringBatch, latest_windows
from ..db import bulk, schema, store
from ..db.schema import RunStatus
from ..devices import DEFAULT_DEVICE
from ..errors import ForecasterError, first_line
from ..intervals import COLUMNS
from . import registry, runs
from .config import DEFAULT_LOOKBACK
from .dates import as_of_dates, check_dates, owed_dates
from .shards import Shard

# The `flags` of a prediction, comma-separated: why not to take it at face value.
FLAG_OUT_OF_RANGE = "out_of_range"  # its window lies beyond anything seen in training
FLAG_PRICES = "flagged_prices"  # the rows it read hold a flagged close (price_flags): a split, bad print or jump
LISTED = 10  # tickers named in a message before "and N more"


@dataclass
class RunResult:
    run_id: int
    as_of: str
    target_date: str
    n_predictions: int  # written by this run
    n_already: int  # stored before by a run of the same model
    late: list[str]  # scored now, after an earlier run of this as_of: their close came late
    stale: list[str]
    skipped: dict[str, str]
    flagged: list[str]  # out of range
    device: str
    flagged_prices: list[str] = field(default_factory=list)  # a flagged close in the rows read
    model_id: str = ""  # the served model's
    shadows: dict[str, int] = field(default_factory=dict)  # challenger model_id -> predictions written
    unscored: dict[str, str] = field(default_factory=dict)  # challenger model_id -> why it was not scored
    seconds: float = 0.0  # the whole run, scoring and writing
    phases: dict[str, float] = field(default_factory=dict)  # seconds: "score" (read windows, run ONNX), "write"

    @property
    def message(self) -> str:
        """What the run did in one line (runs.message)."""
        return _message(self)


@dataclass
class PredictOutcome:
    runs: list[RunResult]
    ingest: IngestReport | None = None
    model_id: str = ""
    device: str = ""
    recovered: list[int] = field(default_factory=list)  # abandoned runs marked failed
    ingest_seconds: float | None = None  # the ingest of `data` before the runs


def predict(
    engine: sa.Engine,
    model_path: str | Path,
    *,
    as_of: str | None = None,
    start: str | None = None,
    end: str | None = None,
    data: Iterable[str | Path] = (),
    device: str = DEFAULT_DEVICE,
    calendar: str = DEFAULT_CALENDAR,
    progress: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    shard: Shard | None = None,
    on_run: Callable[[RunResult], None] = lambda run: None,
    settle: float = SETTLE_SECONDS,
) -> PredictOutcome:
    """Ingest `data` (if any), then score each as_of: the given one, every
    date with prices in [start, end], or by default the newest date stored.
    With a `shard`, only the tickers of that shard are scored. `on_run` is
    called with each run's result as soon as it has committed."""
    check_dates(as_of, start, end)  # a typo fails at once, not after the ingest
    return _score_dates(
        engine,
        model_path,
        lambda model: as_of_dates(engine, as_of, start, end, calendar),
        data=data,
        device=device,
        calendar=calendar,
        progress=progress,
        should_stop=should_stop,
        shard=shard,
        as_of=as_of,
        on_run=on_run,
        settle=settle,
    )


def catch_up(
    engine: sa.Engine,
    model_path: str | Path,
    *,
    data: Iterable[str | Path] = (),
    device: str = DEFAULT_DEVICE,
    calendar: str = DEFAULT_CALENDAR,
    should_stop: Callable[[], bool] = lambda: False,
    shard: Shard | None = None,
    lookback: int = DEFAULT_LOOKBACK,
    on_run: Callable[[RunResult], None] = lambda run: None,
) -> PredictOutcome:
    """What the daemon runs: ingest, then score every as_of this model still
    owes (dates.owed_dates). The model is reloaded each time, so a
    re-exported file is picked up."""
    return _score_dates(
        engine,
        model_path,
        lambda model: owed_dates(engine, model, shard, lookback),
        data=data,
        device=device,
        calendar=calendar,
        should_stop=should_stop,
        shard=shard,
        on_run=on_run,
    )


def _score_dates(
    engine,
    model_path,
    dates_for,
    *,
    data,
    device,
    calendar,
    should_stop,
    shard,
    on_run,
    progress=False,
    as_of=None,
    settle=SETTLE_SECONDS,
) -> PredictOutcome:
    """Ingest, recover abandoned runs, load the model (a failure to load is a
    failed `runs` row too), then one all-or-nothing run per date. `model_path`
    "champion" names the registry's champion, scored with every challenger
    beside it (shadow scoring), resolved afresh at every call."""
    started = time.perf_counter()
    report = ingest(engine, data, progress=progress, calendar=calendar, settle=settle) if data else None
    ingest_seconds = time.perf_counter() - started if data else None
    recovered = runs.recover_abandoned_runs(engine)
    try:
        model, shadows, unloadable = _models(engine, model_path, device)
    except ForecasterError as exc:
        runs.record_failed_run(engine, as_of, _intended_model_id(engine, model_path), device, str(exc), shard)
        raise
    outcome = PredictOutcome([], report, model.sha256, model.device, recovered, ingest_seconds)
    for day in dates_for(model):
        if should_stop():
            break
        outcome.runs.append(run_one(engine, model, day, calendar, shard, shadows, unloadable))
        on_run(outcome.runs[-1])
    store.refresh_statistics(engine, ["predictions", "runs"], sum(r.n_predictions for r in outcome.runs))
    return outcome


def _models(engine: sa.Engine, model_path: str | Path, device: str) -> tuple[ModelFile, list[ModelFile], dict]:
    """The model to serve, the challengers to score beside it, and the
    challengers that cannot be loaded ({model_id: why}): those are skipped,
    never the reason the champion does not serve."""
    if str(model_path) != registry.CHAMPION:
        return load_model(model_path, device), [], {}
    champion = registry.load_registered(registry.champion(engine), device)
    shadows, unloadable = [], {}
    for entry in registry.challengers(engine):
        try:
            shadows.append(registry.load_registered(entry, device))
        except ForecasterError as exc:
            unloadable[entry.model_id] = str(exc)
    return champion, shadows, unloadable


def _intended_model_id(engine: sa.Engine, model_path: str | Path) -> str | None:
    """The model a run that could not load it meant to serve: the registry's
    champion, or the file's sha256 (None when neither can be known)."""
    try:
        if str(model_path) == registry.CHAMPION:
            return registry.champion(engine).model_id
        return file_sha256(model_path)
    except (ForecasterError, OSError):
        return None


@dataclass
class _Scored:
    model: ModelFile
    batch: ScoringBatch
    predicted: np.ndarray
    extent: np.ndarray
    bounds: list[np.ndarray] | None


def run_one(
    engine: sa.Engine,
    model: ModelFile,
    as_of: str,
    calendar: str = DEFAULT_CALENDAR,
    shard: Shard | None = None,
    shadows: list[ModelFile] = (),
    unloadable: dict[str, str] | None = None,
) -> RunResult:
    """Score one as_of with `model` (and the `shadows` beside it, each under
    its own model_id and runs row; challengers that could not be loaded get a
    failed shadow run with the reason); all or nothing. Any failure is recorded
    in the run's row; a library error is then raised as it is, anything else
    (a bug) keeps its traceback."""
    started = time.perf_counter()
    run_id = runs.start_run(engine, model.sha256, as_of, model.device, shard)
    unscored = dict(unloadable or {})
    try:
        scored = [_score(engine, model, as_of, shard)]
        for shadow in shadows:  # a challenger that fails here is skipped: it never stops the champion
            try:
                scored.append(_score(engine, shadow, as_of, shard))
            except Exception as exc:
                unscored[shadow.sha256] = _why(exc)
        target = next_trading_day(as_of, calendar, engine=engine)
        scored_at = time.perf_counter()
        result = _write(engine, run_id, as_of, target, scored, shard, unscored)
    except BaseException as exc:
        runs.mark_failed(engine, run_id, _why(exc))
        raise
    done = time.perf_counter()
    return dataclasses.replace(
        result, seconds=done - started, phases={"score": scored_at - started, "write": done - scored_at}
    )


def _why(exc: BaseException) -> str:
    """A failure in one line: a library error's own words, else its type and first line (a bug)."""
    return str(exc) if isinstance(exc, ForecasterError) else f"{type(exc).__name__}: {first_line(exc)}"


def _score(engine: sa.Engine, model: ModelFile, as_of: str, shard: Shard | None) -> _Scored:
    batch, index = _to_score(engine, model, as_of, shard)
    if batch.tickers:
        return _Scored(model, batch, *model.score_with_intervals(batch.windows, index))
    return _Scored(model, batch, np.empty(0), np.empty(0), None)


def _to_score(
    engine: sa.Engine, model: ModelFile, as_of: str, shard: Shard | None
) -> tuple[ScoringBatch, np.ndarray | None]:
    """The windows this model scores for as_of, and each one's row in its
    per-ticker scaling table when it has one."""
    batch = latest_windows(engine, as_of, model.input_rows)
    if shard is not None:
        batch = batch.only(lambda ticker: ticker in shard)
    if not model.uses_ticker_index:
        return batch, None
    # A per-ticker scaling (minmax) has numbers only for the training tickers.
    position = {t: i for i, t in enumerate(model.training_tickers)}
    unknown = [t for t in batch.tickers if t not in position]
    known = batch.only(lambda ticker: ticker not in unknown)
    known.skipped.update(
        {
            t: f"not a training ticker of this model (its {model.scaling.method} scaling has no numbers for it)"
            for t in unknown
        }
    )
    return known, np.array([position[t] for t in known.tickers], dtype=np.int64)


def _write(
    engine: sa.Engine,
    run_id: int,
    as_of: str,
    target: str,
    scored: list[_Scored],
    shard: Shard | None,
    unloadable: dict[str, str],
) -> RunResult:
    """In one transaction: each model's predictions not stored yet (with their
    intervals, when it has them), its `models` row, the shadows' runs rows
    (failed ones for challengers that could not be loaded), and the served
    model's run's success."""
    with store.write_transaction(engine) as conn:
        served, *shadows = scored
        inserted, flagged = _predictions(conn, run_id, as_of, target, served)
        late = inserted if runs.scored_before(conn, served.model.sha256, as_of, shard) else []
        shadow_counts = {}
        for shadow in shadows:
            shadow_run = runs.add_shadow_run(conn, shadow.model.sha256, as_of, shadow.model.device, shard, run_id)
            shadow_inserted, _ = _predictions(conn, shadow_run, as_of, target, shadow)
            shadow_counts[shadow.model.sha256] = len(shadow_inserted)
            runs.finish_run(
                conn,
                shadow_run,
                RunStatus.SUCCEEDED,
                f"as_of {as_of}: {len(shadow_inserted)} shadow predictions beside champion {served.model.sha256[:12]}",
                len(shadow_inserted),
            )
        for model_id, why in unloadable.items():
            shadow_run = runs.add_shadow_run(conn, model_id, as_of, served.model.device, shard, run_id)
            runs.finish_run(conn, shadow_run, RunStatus.FAILED, f"challenger not scored: {why}", 0)
        batch = served.batch
        result = RunResult(
            run_id=run_id,
            as_of=as_of,
            target_date=target,
            n_predictions=len(inserted),
            n_already=len(batch.tickers) - len(inserted),
            late=late,
            stale=batch.stale,
            skipped=batch.skipped,
            flagged=flagged,
            flagged_prices=sorted(set(inserted) & batch.flagged_prices),
            model_id=served.model.sha256,
            device=served.model.device,
            shadows=shadow_counts,
            unscored=dict(unloadable),
        )
        runs.finish_run(conn, run_id, RunStatus.SUCCEEDED, result.message, len(inserted))
    return result


# `predictions` columns a run writes (prediction_id is the database's).
PREDICTION_COLUMNS = (
    "run_id",
    "model_id",
    "ticker",
    "as_of",
    "target_date",
    "predicted_close",
    "last_close",
    "flags",
    *COLUMNS,
)


def _predictions(
    conn: sa.Connection, run_id: int, as_of: str, target: str, scored: _Scored
) -> tuple[list[str], list[str]]:
    """Insert one model's predictions for as_of that are not stored yet; (the
    tickers inserted, the tickers flagged). Rows are built column by column
    and go in through the driver (SQLAlchemy's per-row parameter work cost
    as much as the insert, for 5,000 rows)."""
    model, batch = scored.model, scored.batch
    runs.ensure_model_row(conn, model)
    flagged = [t for t, e in zip(batch.tickers, scored.extent, strict=True) if not e <= model.train_input_extent]
    p = schema.predictions.c
    already = set(conn.execute(sa.select(p.ticker).where(p.model_id == model.sha256, p.as_of == as_of)).scalars())
    new = np.array([t not in already for t in batch.tickers], dtype=bool)
    tickers = [t for t, keep in zip(batch.tickers, new, strict=True) if keep]
    flagged_set = set(flagged)
    columns = {
        "run_id": run_id,
        "model_id": model.sha256,
        "ticker": tickers,
        "as_of": as_of,
        "target_date": target,
        "predicted_close": scored.predicted[new].astype(np.float64),
        "last_close": batch.last_close[new],
        "flags": [
            ",".join(
                f for f, on in ((FLAG_OUT_OF_RANGE, t in flagged_set), (FLAG_PRICES, t in batch.flagged_prices)) if on
            )
            or None
            for t in tickers
        ],
        **dict.fromkeys(COLUMNS),  # NULL for a model without intervals
    }
    if scored.bounds is not None:
        columns.update(zip(COLUMNS, (b[new].astype(np.float64) for b in scored.bounds), strict=True))
    records = np.empty((len(tickers), len(PREDICTION_COLUMNS)), dtype=object)
    for j, name in enumerate(PREDICTION_COLUMNS):
        records[:, j] = columns[name]
    bulk.bulk_insert(conn, schema.predictions, records, PREDICTION_COLUMNS)
    return tickers, flagged


def _message(r: RunResult) -> str:
    parts = [f"as_of {r.as_of}: {r.n_predictions} predictions for {r.target_date}"]
    if r.late:
        parts.append(f"{len(r.late)} late (their close arrived after this as_of was first scored): {names(r.late)}")
    if r.n_already:
        parts.append(f"{r.n_already} already stored by an earlier run of this model, not added again")
    if r.stale:
        parts.append(f"{len(r.stale)} stale (no close on {r.as_of}): {names(r.stale)}")
    if r.skipped:
        parts.append(
            f"{len(r.skipped)} skipped: " + "; ".join(f"{t} ({why})" for t, why in list(r.skipped.items())[:LISTED])
        )
    for model_id, n in r.shadows.items():
        parts.append(f"shadow {model_id[:12]}: {n} predictions")
    for model_id, why in r.unscored.items():
        parts.append(f"challenger {model_id[:12]} not scored: {why}")
    if r.flagged:
        parts.append(
            f"{len(r.flagged)} flagged {FLAG_OUT_OF_RANGE} (window beyond anything seen in "
            f"training): {names(r.flagged)}"
        )
    if r.flagged_prices:
        parts.append(
            f"{len(r.flagged_prices)} flagged {FLAG_PRICES} (a split, bad print or jump in the window, "
            f"see price_flags): {names(r.flagged_prices)}"
        )
    return "; ".join(parts)


def names(tickers: list[str]) -> str:
    """The first LISTED tickers, "and N more"."""
    more = len(tickers) - LISTED
    return ", ".join(tickers[:LISTED]) + (f" and {more} more" if more > 0 else "")
