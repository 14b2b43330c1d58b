"""`forecaster retrain`: make a challenger the way the champion was made,
judge it at the gate, and record the decision.

Backtest gate (the default): the challenger trains with the champion's own
settings and tickers on the prices that stop `gate_days` sessions before the
newest; champion, challenger and naive are then scored point-in-time on
those held-back sessions (gate.py) and the challenger is promoted or
rejected at once.

Realized gate: every challenger that has been shadow-scored beside the
champion for `gate_days` nights with known outcomes is promoted or rejected
on those nights; when none is left waiting, a new challenger is trained on
every stored price and registered to be shadow-scored from the next run.

A promoted challenger serves as it is: the file the gate scored, not a refit
on the held-back days (measured in docs/operations.md: a refit on 60 more
sessions moved the ratio to naive by -0.4% to +0.2%, either way, about the
size of seed-to-seed noise, and would serve a file no gate has seen).

Nothing is recorded until the decision, in one transaction: a crash or a
kill anywhere before it leaves the registry as it was (the challenger's
files may stay in the models folder, unregistered).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from ..artifact.export import export
from ..artifact.model_file import ModelFile, load_model
from ..artifact.verify import verify
from ..data.universe import iso_day, load_universe
from ..db import store
from ..db.schema import Decision, ModelStatus
from ..errors import DataError, ForecasterError
from ..serving import registry
from ..training.config import TrainConfig
from ..training.job import TrainJob, run_training
from ..training.loop import TrainingStoppedError
from . import gate, promotion
from .config import GATES, RetrainConfig

WAITING = "waiting"  # a challenger not yet judged: too few nights of evidence


class RetrainStoppedError(ForecasterError):
    """A retrain was asked to stop before its decision: nothing was recorded."""


@dataclass
class RetrainOutcome:
    decision: str  # promoted, rejected, challenger (registered for shadow scoring) or waiting
    model_id: str | None
    path: Path | None
    reason: str
    metrics: dict = field(default_factory=dict)


@dataclass
class _Retrain:
    """One retrain's settings and the means to report and stop, handed to each step."""

    engine: sa.Engine
    config: RetrainConfig
    progress: bool
    should_stop: Callable[[], bool]
    say: Callable[[str], None]

    def stop_point(self, before: str) -> None:
        """Honour a stop asked for (SIGTERM) at one of the retrain's safe points."""
        if self.should_stop():
            raise RetrainStoppedError(f"retrain stopped before {before}: nothing recorded, the champion keeps serving")


def retrain(
    engine: sa.Engine,
    config: RetrainConfig,
    *,
    progress: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    say: Callable[[str], None] = lambda line: None,
) -> list[RetrainOutcome]:
    """One retrain under `config`; what was decided, one entry per model judged or made."""
    if config.gate not in GATES:
        raise ForecasterError(f"unknown gate {config.gate!r}: choose {', '.join(GATES)}")
    if config.gate_days < 1:
        raise ForecasterError(f"--gate-days must be at least 1, not {config.gate_days}")
    entry = registry.champion(engine)
    champion = registry.load_registered(entry)
    say(f"champion {entry.model_id[:12]} ({entry.path})")
    run = _Retrain(engine, config, progress, should_stop, say)
    return [_backtest(run, champion)] if config.gate == "backtest" else _realized(run, champion)


def _backtest(run: _Retrain, champion: ModelFile) -> RetrainOutcome:
    universe = load_universe(run.engine, champion.training_tickers)
    sessions, gate_days = np.unique(universe.dates), run.config.gate_days
    if len(sessions) <= gate_days + 1:
        raise DataError(
            f"{len(sessions)} sessions stored for the champion's tickers: too few to hold back "
            f"{gate_days} gate days (--gate-days) and train on the rest"
        )
    through, first_target = iso_day(sessions[-gate_days - 1]), int(sessions[-gate_days])
    run.say(f"training a challenger on prices up to {through}; the last {gate_days} sessions are the gate")
    challenger = _make_challenger(run, champion, through, loaded=universe)
    with _removed_if_stopped(challenger.path):
        figures = gate.backtest(universe, champion, challenger, first_target)
        run.stop_point("the decision")
    extra = {"trained_through": through, "champion_trained_through": registry.trained_through(champion.metadata)}
    caveat = (
        "the champion trained on some gate days, which favours it"
        if extra["champion_trained_through"] > through
        else ""
    )
    return _judge(run, champion, challenger, figures, extra, caveat)


def _realized(run: _Retrain, champion: ModelFile) -> list[RetrainOutcome]:
    outcomes, gate_days = [], run.config.gate_days
    for entry in registry.challengers(run.engine):
        challenger = registry.load_registered(entry)
        since = registry.data_through(challenger.metadata)
        with run.engine.connect() as conn:
            figures = gate.realized(conn, champion.sha256, entry.model_id, gate_days, since)
        if figures.days < gate_days:
            reason = (
                f"waiting: {figures.days} of {gate_days} nights from {since} on scored beside the champion "
                "with outcomes"
            )
            run.say(f"challenger {entry.model_id[:12]} {reason}")
            outcomes.append(RetrainOutcome(WAITING, entry.model_id, challenger.path, reason, figures.to_plain()))
            continue
        run.stop_point("the decision")
        outcomes.append(_judge(run, champion, challenger, figures, {}, ""))
        if outcomes[-1].decision == Decision.PROMOTED:
            champion = challenger  # any other challenger waits to be judged against the new champion
            break
    if any(o.decision == WAITING for o in outcomes):
        return outcomes
    run.say("training a challenger on every stored price, to be scored beside the champion from the next run")
    challenger = _make_challenger(run, champion, None)
    with _removed_if_stopped(challenger.path):
        run.stop_point("registering the challenger")
    with store.write_transaction(run.engine) as conn:
        promotion.decide(conn, challenger, ModelStatus.CHALLENGER, "")
    reason = f"registered as a challenger: judged after {gate_days} nights of realised outcomes"
    outcomes.append(RetrainOutcome(ModelStatus.CHALLENGER, challenger.sha256, challenger.path, reason))
    return outcomes


def settings_of(champion: ModelFile, device: str) -> TrainConfig:
    """The champion's training settings, from its metadata; a file made before
    they were stored gives its network's shape, and defaults for the rest."""
    stored = champion.metadata.get("train_config") or {
        k: v for k, v in champion.metadata["model_config"].items() if k in ("seq_len", "hidden", "layers", "scaling")
    }
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return dataclasses.replace(TrainConfig(**{k: v for k, v in stored.items() if k in known}), device=device)


@contextlib.contextmanager
def _removed_if_stopped(challenger: Path) -> Iterator[None]:
    """A stopped retrain's challenger leaves nothing behind: checkpoint, ONNX file, metrics, plots."""
    try:
        yield
    except RetrainStoppedError:
        for made in Path(challenger).parent.glob(f"{Path(challenger).stem}.*"):
            made.unlink(missing_ok=True)
        raise


def challenger_path(models_dir: Path) -> Path:
    """A new, unused NAME.pt for a challenger: the time to the second, and a
    suffix when two retrains start within the same second."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(models_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        out = folder / f"challenger-{stamp}{f'-{n}' if n else ''}.pt"
        try:
            out.with_suffix(".onnx").open("x").close()  # claimed: the next retrain picks another name
            return out
        except FileExistsError:
            continue
    raise ForecasterError(f"{folder}: no free challenger file name for {stamp}")


def _make_challenger(run: _Retrain, champion: ModelFile, through: str | None, loaded=None) -> ModelFile:
    """Train, export and verify a challenger like the champion on the prices
    up to `through` (all of them: None); the verified file. `loaded`: the
    champion's tickers' prices, when already read (read once, not twice)."""
    out = challenger_path(run.config.models_dir)
    try:
        with _removed_if_stopped(out):
            return _train_export_verify(run, champion, through, out, loaded)
    except BaseException:
        claimed = out.with_suffix(".onnx")
        if claimed.exists() and claimed.stat().st_size == 0:  # the name was claimed, never written
            claimed.unlink()
        raise


def _train_export_verify(run: _Retrain, champion: ModelFile, through: str | None, out: Path, loaded) -> ModelFile:
    job = TrainJob(champion.training_tickers, False, settings_of(champion, run.config.device), out, through)
    try:
        outcome = run_training(
            run.engine, job, progress=run.progress, should_stop=run.should_stop, loaded=loaded, resumable=False
        )
    except TrainingStoppedError:
        raise RetrainStoppedError(
            "retrain stopped while training its challenger: nothing recorded, the champion keeps serving"
        ) from None
    for line in outcome.warnings:
        run.say(f"warning: {line}")
    run.say(outcome.verdict)
    run.stop_point("the export")
    exported = export(out, out.with_suffix(".onnx"))
    run.stop_point("the verification")
    checked = verify(exported.path)
    run.say(f"exported and verified {exported.path} (largest difference from the reference {checked.max_abs:.2e})")
    run.stop_point("the gate")
    return load_model(exported.path, "cpu")


def _judge(
    run: _Retrain, champion: ModelFile, challenger: ModelFile, figures: gate.GateFigures, extra: dict, caveat: str
) -> RetrainOutcome:
    """Apply the gate's rule and record the decision with its numbers, in one
    transaction, provided the champion is still the one judged against."""
    promote, reason = gate.judge(figures, run.config.min_improvement)
    reason += f"; {caveat}" if caveat else ""
    decision = Decision.PROMOTED if promote else Decision.REJECTED
    metrics = {
        **figures.to_plain(),
        **extra,
        "min_improvement": run.config.min_improvement,
        "champion": champion.sha256,
    }
    with store.write_transaction(run.engine) as conn:
        current = registry.champion_id(conn)
        if current != champion.sha256:
            raise ForecasterError(
                f"the champion changed while the challenger was judged (now {str(current)[:12]}, judged against "
                f"{champion.sha256[:12]}): nothing recorded; run retrain again"
            )
        promotion.decide(conn, challenger, decision, reason, metrics)
    run.say(reason)
    return RetrainOutcome(decision, challenger.sha256, challenger.path, reason, metrics)
