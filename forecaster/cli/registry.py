"""Commands that keep the model fresh: promote, retrain, models."""

from __future__ import annotations

from pathlib import Path

import click

from .base import (
    db_option,
    debugging,
    job_option,
    log_format_option,
    main,
    open_store,
    option,
    quiet_option,
    reports_errors,
    retrain_config,
    retrain_options,
)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@option("--reason", required=True, command="promote", help="Why: recorded in the promotions table.")
@db_option
@reports_errors
def promote(model, reason, db):
    """Make MODEL (an exported ONNX file) the champion: the first one, or a
    manual override. The previous champion is retired; the decision is
    recorded in `promotions`. Warns when MODEL was worse than naive on its
    own held-out days."""
    from ..lifecycle.promotion import promote as promote_model

    for line in promote_model(open_store(db), model, reason):
        click.echo(f"warning: {line}", err=True)
    click.echo(f"{model} is the champion; `--model champion` serves it from the next run")


@main.command()
@job_option
@retrain_options
@log_format_option
@db_option
@quiet_option
@reports_errors
def retrain(gate_days, min_improvement, gate, models_dir, train_device, log_format, db, quiet):
    """Train a challenger with the champion's settings and tickers (from its
    metadata), export and verify it, and judge it on the gate days: promoted
    only when it beats the champion beyond noise (its squared errors smaller
    pair by pair by 2 standard errors), its RMSE is at most the champion's x
    (1 - --min-improvement) and no worse than naive's; else recorded as
    rejected, with the numbers. SIGTERM or Ctrl-C stop it with nothing
    recorded and the half-made challenger's files removed (exit 1)."""
    from ..db.schema import Decision
    from ..lifecycle.retrain import retrain as run_retrain
    from ..signals import stop_on_signals

    as_json = log_format == "json"
    if as_json:
        from .. import logs

        log = logs.json_logger("retrain", debugging())

    def say(line: str) -> None:  # the steps as they happen: training, export, the gate
        if as_json:
            log.info(line, extra={"event": "retrain_step"})
        else:
            click.echo(line, err=True)

    with stop_on_signals() as should_stop:
        outcomes = run_retrain(
            open_store(db),
            retrain_config(gate_days, min_improvement, gate, models_dir, train_device),
            progress=not quiet and not as_json,
            should_stop=should_stop,
            say=say,
        )
    promoted = "the new champion serves from the next run (`forecaster predict --model champion` runs one now)"
    for o in outcomes:
        said = f"{o.decision}: {o.path} ({(o.model_id or '')[:12]})"
        if as_json:
            fields = {"decision": o.decision, "path": str(o.path or ""), "model": (o.model_id or "")[:12]}
            log.info(said, extra={"event": "retrain_decision", "fields": {**fields, "reason": o.reason}})
        else:
            click.echo(said)
    if any(o.decision == Decision.PROMOTED for o in outcomes):
        if as_json:
            log.info(promoted, extra={"event": "promoted"})
        else:
            click.echo(promoted)


@main.command()
@option("--json", "as_json", is_flag=True, command="models", help="Print JSON instead of a table.")
@db_option
@reports_errors
def models(as_json, db):
    """Every model that served, is scored in the shadows or was judged: its
    status, the day its training data ended, its last gate decision and
    ratio to naive there, and its realised ratio to naive since promotion."""
    import json

    from ..serving.registry import REGISTRY_COLUMNS, models_table
    from ..tables import format_table

    rows = models_table(open_store(db, read_only=True))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    columns = [*REGISTRY_COLUMNS, "realised_n", "realised_ratio", "path"]
    click.echo(format_table(columns, [tuple(r[c][:12] if c == "model_id" else r[c] for c in columns) for r in rows]))
