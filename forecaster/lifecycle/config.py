"""Settings of the daemon and of retraining, and their defaults, in one
place: the CLI reads its defaults from here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from ..data.config import DEFAULT_CALENDAR, SETTLE_SECONDS
from ..devices import DEFAULT_DEVICE
from ..serving.config import DEFAULT_LOOKBACK, STALE_SHARE
from ..serving.shards import Shard

GATES = ("backtest", "realized")


@dataclass
class RetrainConfig:
    """How a challenger is made and judged (docs/operations.md, "Keeping the model fresh")."""

    gate_days: int = 60  # sessions held back from the challenger and scored point-in-time
    min_improvement: float = 0.0  # the challenger's RMSE must be <= the champion's x (1 - this)
    gate: str = "backtest"  # or "realized": judge challengers on the nights they were shadow-scored
    models_dir: Path = Path("exports")  # where challengers' checkpoints and ONNX files are written
    device: str = DEFAULT_DEVICE  # where the challenger trains


@dataclass
class DaemonConfig:
    db_url: str
    model: Path
    data: list[Path] = field(default_factory=list)
    cron: str = "0 22 * * 1-5"
    timezone: str = "America/New_York"
    misfire_grace: int = 3600  # seconds; APScheduler's default of 1 s silently drops a late run
    device: str = DEFAULT_DEVICE
    calendar: str = DEFAULT_CALENDAR
    shard: Shard | None = None
    lock_path: Path | None = None
    lookback: int = DEFAULT_LOOKBACK
    min_fresh: float = 0.9  # share of the previous session's tickers to wait for; 0: no wait
    wait_max: dt.timedelta = dt.timedelta(hours=2)
    recheck: dt.timedelta = dt.timedelta(minutes=5)
    retrain_cron: str | None = None  # e.g. "0 6 * * 6"; needs model "champion"
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    settle: float = SETTLE_SECONDS  # seconds before a file's unterminated last line is read
    lock_check: dt.timedelta = dt.timedelta(seconds=30)  # how often the daemon checks it still holds its lock
    metrics_file: Path | None = None  # the health as Prometheus metrics, rewritten after every nightly run
    html_file: Path | None = None  # the HTML report (serving/page.py), rewritten after every nightly run
    log_format: str = "text"  # or "json": one object per line (logs.py)
    stale_share: float = STALE_SHARE  # `--once`'s exit status: degraded above this share of stale tickers
    debug: bool = False  # other libraries' INFO and DEBUG lines too
