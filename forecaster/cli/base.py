"""What every command shares: the group, options defined once, the error
boundary and the database a command opens."""

from __future__ import annotations

import atexit
import dataclasses
import datetime as dt
import functools
import gc
import os
import sys
from pathlib import Path

import click

from ..artifact.config import DEFAULT_TOLERANCE
from ..data.config import DEFAULT_CALENDAR, SETTLE_SECONDS
from ..db.config import DEFAULT_DB_URL
from ..devices import DEFAULT_DEVICE, DEVICES
from ..errors import ForecasterError, os_error_line
from ..lifecycle.config import GATES, DaemonConfig, RetrainConfig
from ..serving.config import STALE_SHARE
from ..training.config import TrainConfig

TRAIN = TrainConfig()
RETRAIN = RetrainConfig()


def daemon_default(name: str):
    return next(f.default for f in dataclasses.fields(DaemonConfig) if f.name == name)


def option(*decls, command: str = "", **kwargs):
    """click.option whose environment variable is FORECASTER_<LONG NAME>, or
    FORECASTER_<COMMAND>_<LONG NAME> for an option whose meaning is the
    command's own (one variable name, one meaning: tests/cli/test_cli.py)."""
    long_name = next(d for d in decls if d.startswith("--")).split("/")[0]
    prefix = f"FORECASTER_{command.upper().replace('-', '_')}_" if command else "FORECASTER_"
    kwargs.setdefault("envvar", prefix + long_name[2:].upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    return click.option(*decls, **kwargs)


db_option = option("--db", default=DEFAULT_DB_URL, show_default=True, metavar="URL", help="SQLAlchemy database URL.")
data_option = option(
    "--data",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Ingest new rows from these files/folders first (repeatable).",
)
tickers_option = option("--tickers", metavar="A,B", help="Comma-separated tickers, e.g. aaxj,a (any case).")
settle_option = option(
    "--settle",
    default=SETTLE_SECONDS,
    show_default=True,
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="Read a file's unterminated last line only once the file has been unchanged this long (before "
    "that a writer may be in the middle of it); 0: at once.",
)
tolerance_option = option(
    "--tolerance",
    default=DEFAULT_TOLERANCE,
    show_default=True,
    type=click.FloatRange(0),
    help="Largest relative difference allowed between the two implementations compared.",
)
quiet_option = option("--quiet", "-q", is_flag=True, help="Print only the result lines (for scripts).")
device_option = option(
    "--device",
    default=DEFAULT_DEVICE,
    show_default=True,
    type=click.Choice(DEVICES),
    help="auto: CUDA when ONNX Runtime can really use it, else CPU; cuda: fail "
    "unless CUDA is active; cpu: never try CUDA.",
)
model_option = option(
    "--model",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The exported ONNX model, or `champion`: the registry's champion, resolved at every run and "
    "scored with its challengers beside it (see `forecaster models`).",
)


def _shard(ctx, param, text):
    """K/N as a Shard; a mistyped one is a usage error (exit 2)."""
    from ..serving.shards import Shard

    try:
        return Shard.parse(text) if text else None
    except ForecasterError as exc:
        raise click.BadParameter(str(exc).removeprefix(f"--shard {text!r}: ")) from None


def _read_job(ctx: click.Context, param, path: Path | None):
    """Apply a job file (TOML) as the command's defaults: the command line and
    the environment still win. Keys are the command's long options, dashes or
    underscores; an unknown key is an error naming it and the file."""
    if path is None:
        return None
    import tomllib

    try:
        with open(path, "rb") as fh:
            settings = tomllib.load(fh)
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror}", param_hint="--job") from None
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{path}: not TOML: {exc}", param_hint="--job") from None
    mine = _long_names(ctx.command)
    shared = {key for command in JOB_COMMANDS for key in _long_names(ctx.find_root().command.commands[command])}
    defaults = {}
    for key, value in settings.items():
        key = key.replace("_", "-")
        if key not in mine:
            if key in shared:  # another command's (one file serves the daemon, predict, retrain and status)
                continue
            raise click.BadParameter(
                f"{path}: unknown key {key!r}: no option of {', '.join(JOB_COMMANDS)} is called that "
                f"(`forecaster {ctx.command.name}` takes: {', '.join(sorted(mine))})",
                param_hint="--job",
            )
        value = [str(v) for v in value] if isinstance(value, list) else value
        param = next(p for p in ctx.command.params if p.name == mine[key])
        try:  # a bad value is the file's fault: say so, not the option's or its variable's
            param.type_cast_value(ctx, value)
        except (click.BadParameter, TypeError, ValueError) as exc:
            why = exc.message if isinstance(exc, click.ClickException) else str(exc)
            why += ' (a list: ["..."])' if param.multiple and not isinstance(value, list) else ""
            raise click.BadParameter(f"{path}: key {key!r}: {why}", param_hint="--job") from None
        defaults[mine[key]] = value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return path


JOB_COMMANDS = ("daemon", "predict", "retrain", "status")  # the commands that take --job


def _long_names(command: click.Command) -> dict[str, str]:
    """{long option name without dashes: parameter name} of a command's options
    (`from` for --from, whose parameter is `start`)."""
    out = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "job":
            for opt in param.opts:
                if opt.startswith("--"):
                    out[opt[2:]] = param.name
    return out


job_option = click.option(
    "--job",
    type=click.Path(dir_okay=False, path_type=Path),
    is_eager=True,  # read before the other options, whose defaults it sets
    expose_value=False,
    callback=_read_job,
    envvar="FORECASTER_JOB",
    show_envvar=True,
    help="A job file (TOML, e.g. jobs/nightly.toml) whose keys are this command's options; "
    "the command line and the environment win over it.",
)
log_format_option = option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: the log on stderr as one object per line (time, level, logger, event, message, fields) for a log "
    "collector, an error as a failed event (a usage error stays text); docs/operations.md lists the events.",
)


def debugging() -> bool:
    """Whether `forecaster --debug` was given."""
    return bool(click.get_current_context().find_root().params.get("debug"))


metrics_file_option = option(
    "--metrics-file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the health as Prometheus metrics here (node_exporter's textfile format, replaced atomically).",
)


def _moment(ctx, param, text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a moment (expected YYYY-MM-DDTHH:MM)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


at_option = option(
    "--at",
    command="status",  # one meaning wherever it is taken: FORECASTER_STATUS_AT
    metavar="YYYY-MM-DDTHH:MM",
    callback=_moment,
    help="Judge the health as of this moment (UTC unless it has an offset) instead of now: a replay, a test.",
)
stale_share_option = option(
    "--stale-share",
    default=STALE_SHARE,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="The stale check is degraded (status's exit 3) when more than this share of the owed session's tickers "
    "has no close.",
)
html_option = option(
    "--html",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the night's HTML report here (one self-contained page, replaced atomically); predict and "
    "the daemon rewrite it after every run, a failed one too (said at its top).",
)
shard_option = option(
    "--shard",
    metavar="K/N",
    callback=_shard,
    help="Score only shard K of N (stable hash of the ticker), so N machines can split "
    "a universe and write into one database without overlap.",
)
calendar_option = option(
    "--calendar",
    default=DEFAULT_CALENDAR,
    show_default=True,
    help="Exchange calendar for the next trading day (exchange_calendars code).",
)


RETRAIN_OPTIONS = [
    option(
        "--gate-days",
        default=RETRAIN.gate_days,
        show_default=True,
        type=click.IntRange(1),
        help="Sessions the gate scores on: held back from the challenger (backtest), or nights "
        "of realised outcomes beside the champion (realized).",
    ),
    option(
        "--min-improvement",
        default=RETRAIN.min_improvement,
        show_default=True,
        type=click.FloatRange(0, 1, max_open=True),
        help="Promote only when the challenger's RMSE is at most the champion's x (1 - this); it must "
        "also beat the champion beyond noise (a paired test, 2 standard errors) and be no worse than naive.",
    ),
    option(
        "--gate",
        default=RETRAIN.gate,
        show_default=True,
        type=click.Choice(GATES),
        help="backtest: score a challenger trained without the last gate days on them, decide at "
        "once; realized: register it, shadow-score it nightly, decide after gate-days nights.",
    ),
    option(
        "--models-dir",
        default=RETRAIN.models_dir,
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder for the challengers' checkpoints, ONNX files and plots.",
    ),
    option(
        "--train-device",
        command="retrain",
        default=RETRAIN.device,
        show_default=True,
        type=click.Choice(DEVICES),
        help="Where the challenger trains: auto: CUDA when torch can use it, else CPU; cuda: fail unless "
        "CUDA is usable.",
    ),
]


def retrain_options(func):
    """The options of a retrain, shared by `retrain` and `daemon --retrain-cron`."""
    for decorator in reversed(RETRAIN_OPTIONS):
        func = decorator(func)
    return func


def retrain_config(gate_days, min_improvement, gate, models_dir, train_device) -> RetrainConfig:
    return RetrainConfig(
        gate_days=gate_days, min_improvement=min_improvement, gate=gate, models_dir=models_dir, device=train_device
    )


def reports_errors(func):
    """Turn library errors into `Error: <one line>` and a non-zero exit
    (with --debug: the traceback, causes included). Anything else is a bug
    and keeps its traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            # The reader stopped reading (`forecaster sql ... | head`): what it
            # wanted was written. Nothing more goes to the closed pipe, not
            # even the flush at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(0) from None
        except ForecasterError as exc:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            _fail(str(exc), getattr(exc, "exit_code", 1))
        except OSError as exc:  # e.g. an output folder that cannot be written
            _fail(os_error_line(exc), 1)

    return wrapper


def _fail(said: str, exit_code: int):
    """`Error: <said>` and the exit status; with --log-format json, a `failed` event instead."""
    context = click.get_current_context()
    if context.params.get("log_format") == "json":  # every stderr line an object, the error too
        from .. import logs

        logs.json_logger(context.command.name).error(said, extra={"event": "failed"})
        raise SystemExit(exit_code) from None
    failure = click.ClickException(said)
    failure.exit_code = exit_code
    raise failure from None


def open_store(url: str, *, read_only: bool = False):
    """The command's database, closed when the command ends (SQLite then
    checkpoints its WAL and removes it, so no -wal file is left beside it)."""
    from ..db import store

    engine = store.connect(url, read_only=read_only)
    click.get_current_context().call_on_close(engine.dispose)
    return engine


def parse_tickers(text: str | None) -> list[str]:
    return [t.strip().lower() for t in (text or "").split(",") if t.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="forecaster")
@option("--debug", is_flag=True, help="On an error, show the full traceback (with its causes), not one line.")
def main(debug):
    """Next-day close forecasts from daily OHLC history: ingest prices, train a
    stacked LSTM, export it to ONNX, and score every night into SQL."""
    # Nothing a command leaves needs collecting at exit (open_store closes the
    # database first): freezing what is alive skips the interpreter's final
    # full collection over everything SQLAlchemy, NumPy and ONNX Runtime
    # loaded, about 0.1 s of a nightly run's ~1.5 s.
    atexit.register(gc.freeze)
