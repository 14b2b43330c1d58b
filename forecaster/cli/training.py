"""Commands on prices -> model -> ONNX file: train, export, verify, info."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import click

from ..artifact.config import DEFAULT_OPSET, VERIFY_WINDOWS
from ..devices import DEVICES
from ..training.config import PRECISIONS, SCALINGS, STEP_BUDGET, TUTORIAL_EPOCHS
from .base import (
    TRAIN,
    data_option,
    db_option,
    main,
    open_store,
    option,
    parse_tickers,
    quiet_option,
    reports_errors,
    settle_option,
    tickers_option,
    tolerance_option,
)


@main.command()
@tickers_option
@option("--all", "all_tickers", is_flag=True, help="Train on every ticker in the database.")
@option(
    "--out",
    command="train",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoint to write, e.g. exports/NAME.pt; metrics and plots go beside it.",
)
@data_option
@db_option
@option(
    "--seq-len", default=TRAIN.seq_len, show_default=True, type=click.IntRange(2), help="Days in each input window."
)
@option("--hidden", default=TRAIN.hidden, show_default=True, type=click.IntRange(1), help="LSTM hidden size.")
@option("--layers", default=TRAIN.layers, show_default=True, type=click.IntRange(1), help="Stacked LSTM layers.")
@option(
    "--epochs",
    default=TRAIN.epochs,
    type=click.IntRange(1),
    help=f"Passes over the training windows [default: {TUTORIAL_EPOCHS} when that is at most "
    f"{STEP_BUDGET:,} optimiser steps, else --steps {STEP_BUDGET:,}].",
)
@option(
    "--steps",
    default=TRAIN.steps,
    type=click.IntRange(1),
    help="A budget in optimiser steps instead of epochs (for large universes).",
)
@option(
    "--lr", default=TRAIN.lr, show_default=True, type=click.FloatRange(0, min_open=True), help="Adam learning rate."
)
@option(
    "--batch-size",
    default=TRAIN.batch_size,
    show_default=True,
    type=click.IntRange(0),
    help="Windows per optimiser step, all processes together; 0 = the whole training set (the tutorial's).",
)
@option(
    "--test-fraction",
    default=TRAIN.test_fraction,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Share of each ticker's latest windows held out for the test.",
)
@option(
    "--scaling",
    default=TRAIN.scaling,
    show_default=True,
    type=click.Choice(SCALINGS),
    help="relative: each window divided by its last close; minmax: per ticker/column to [-1, 1] "
    "fitted on training rows.",
)
@option(
    "--seed",
    command="train",
    default=TRAIN.seed,
    show_default=True,
    type=click.IntRange(0),
    help="Seed for weights and shuffling.",
)
@option(
    "--precision",
    default=TRAIN.precision,
    show_default=True,
    type=click.Choice(PRECISIONS),
    help="bf16: run the training forward pass in bfloat16 (faster on CPUs with AVX512-BF16/AMX; "
    "fp32 with a warning where the CPU cannot); weights and the exported model stay float32.",
)
@option(
    "--device",
    command="train",
    default=TRAIN.device,
    show_default=True,
    type=click.Choice(DEVICES),
    help="auto: CUDA when torch can use it, else CPU; cuda: fail unless CUDA is usable.",
)
@option(
    "--patience",
    default=TRAIN.patience,
    show_default=True,
    type=click.IntRange(0),
    help="Stop after this many validation checks (40 per budget) in a row without a step better beyond noise; "
    "0 trains the whole budget.",
)
@option(
    "--keep-flagged/--skip-flagged",
    default=not TRAIN.skip_flagged,
    show_default=True,
    help="--skip-flagged leaves out of training and calibration the windows that cross a flagged price "
    "(price_flags: a likely split, bad print or unexplained jump); the held-out test keeps every window.",
)
@option(
    "--resume",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Carry on a stopped training from its NAME.state.pt (its own settings; other options ignored).",
)
@settle_option
@quiet_option
@reports_errors
def train(
    tickers,
    all_tickers,
    out,
    data,
    db,
    seq_len,
    hidden,
    layers,
    epochs,
    steps,
    lr,
    batch_size,
    test_fraction,
    scaling,
    seed,
    precision,
    device,
    patience,
    keep_flagged,
    resume,
    settle,
    quiet,
):
    """Fit one stacked LSTM on --tickers (or --all) and report held-out
    accuracy next to the naive forecast (tomorrow's close = today's close).

    Writes the checkpoint (--out), NAME.metrics.json, NAME.loss.png and
    NAME.test.<ticker>.png plots beside it (for many tickers: a summary and
    the best, median and worst few). The same command runs under
    `torchrun --nproc-per-node N -m forecaster train ...` as one DDP job; rank
    0 writes. SIGTERM or Ctrl-C save NAME.state.pt to resume from.
    """
    from ..training.job import TrainJob, resume_job, run_job  # torch: only once the cheap checks passed

    state = None
    if resume:
        given = None if click.get_current_context().get_parameter_source("db").name == "DEFAULT" else db
        job, state, db = resume_job(resume, given)  # by default the database the stopped run trained on
    else:
        if bool(tickers) == all_tickers:
            raise click.UsageError("give either --tickers A,B or --all")
        if out is None:
            raise click.UsageError("give --out NAME.pt (where the checkpoint goes)")
        settings = dict(seq_len=seq_len, hidden=hidden, layers=layers, epochs=epochs, steps=steps, lr=lr)
        settings.update(batch_size=batch_size, test_fraction=test_fraction, scaling=scaling, seed=seed)
        config = dataclasses.replace(
            TRAIN, **settings, precision=precision, device=device, patience=patience, skip_flagged=not keep_flagged
        )
        job = TrainJob(tickers=parse_tickers(tickers), all_tickers=all_tickers, config=config, out=out)
    say = functools.partial(click.echo, err=quiet)
    outcome = run_job(job, db, resume=state, data=data, progress=not quiet, settle=settle, say=say)
    if outcome is None:  # another rank of a torchrun job: rank 0 reports
        return
    for line in outcome.warnings:
        click.echo(f"warning: {line}", err=True)
    for line in outcome.notes:
        click.echo(line, err=True)
    click.echo(outcome.table)
    click.echo(outcome.verdict)
    click.echo(f"wrote {', '.join(str(p) for p in outcome.written)}")


@main.command()
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(dir_okay=False, path_type=Path))
@option(
    "--out",
    command="export",
    type=click.Path(dir_okay=False, path_type=Path),
    help="ONNX file to write [default: CHECKPOINT with .onnx].",
)
@option("--opset", default=DEFAULT_OPSET, show_default=True, type=click.IntRange(14), help="ONNX opset version.")
@tolerance_option
@reports_errors
def export(checkpoint_path, out, opset, tolerance):
    """Write CHECKPOINT as one self-contained ONNX file, after checking it
    against torch on held-out windows; on a mismatch nothing is written."""
    from ..artifact.export import export as run_export

    result = run_export(checkpoint_path, out or checkpoint_path.with_suffix(".onnx"), opset=opset, tolerance=tolerance)
    click.echo(f"wrote {result.path} (sha256 {result.sha256})")
    click.echo(
        f"ONNX Runtime vs torch on {result.n_checked} held-out windows: largest difference "
        f"{result.max_abs:.3g} (relative {result.max_rel:.3g})"
    )


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@tickers_option
@db_option
@option(
    "--windows", default=VERIFY_WINDOWS, show_default=True, type=click.IntRange(1), help="How many windows to check."
)
@option("--seed", command="verify", default=0, show_default=True, type=int, help="Seed for the random windows.")
@tolerance_option
@reports_errors
def verify(model, tickers, db, windows, seed, tolerance):
    """Run MODEL in ONNX Runtime and the tutorial's LSTM equations (NumPy, with
    the file's own weights) on the same windows; print the largest difference.
    Exits non-zero above the tolerance.

    The windows are random, or with --tickers the latest stored ones of those
    tickers (from --db).
    """
    from ..artifact.verify import verify as run_verify

    names = parse_tickers(tickers)
    result = run_verify(
        model,
        engine=open_store(db, read_only=True) if names else None,
        tickers=names,
        n_windows=windows,
        seed=seed,
        tolerance=tolerance,
    )
    click.echo(
        f"ONNX Runtime vs NumPy reference on {result.source}: largest difference "
        f"{result.max_abs:.3g} (relative {result.max_rel:.3g}, within the relative tolerance {tolerance:g})"
    )


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
@reports_errors
def info(model, as_json):
    """Print what MODEL was trained on, its held-out metrics and its sha256."""
    import json

    from ..artifact.model_file import describe

    meta = describe(model)
    if as_json:
        click.echo(json.dumps(meta, indent=2))
        return
    training = meta["training"]
    click.echo(f"model     {meta['path']}\nsha256    {meta['sha256']}\ncreated   {meta['created_at']}")
    click.echo(
        f"network   {meta['model_config']['layers']}x{meta['model_config']['hidden']} LSTM, "
        f"seq_len {meta['seq_len']}, features {', '.join(meta['features'])}"
    )
    click.echo(f"scaling   {meta['scaling']['method']}")
    calibration = meta.get("intervals")
    why = ""
    if meta["input_rows"] != meta["seq_len"] and calibration:
        why = (
            f" (the network the newest {meta['seq_len']}, the {calibration['method']} volatility {calibration['rows']})"
        )
    click.echo(f"reads     {meta['input_rows']} rows per ticker{why}")
    if calibration:
        quantiles = ", ".join(
            f"{round(100 * level)}% {q:.3f}"
            for level, q in zip(calibration["levels"], calibration["quantiles"], strict=True)
        )
        click.echo(
            f"intervals {calibration['method']} volatility, score quantiles {quantiles} "
            f"(from {calibration['n']} validation windows)"
        )
    click.echo(f"data      sha256 {training['data_sha256']}")
    for ticker, t in training["tickers"].items():
        m = meta["metrics"].get("tickers", {}).get(ticker, {})
        click.echo(
            f"  {ticker:<10} {t['first_date']}..{t['last_date']} ({t['rows']} rows, trained to "
            f"{t['train_end_date']})  held-out RMSE {m.get('test_rmse', float('nan')):.4f} vs naive "
            f"{m.get('naive_rmse', float('nan')):.4f}"
        )
    click.echo(f"versions  {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}")
