"""Settings of the nightly run and the daemon, and their defaults, in one
place: the CLI reads its defaults from here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from ..data.config import DEFAULT_CALENDAR
from ..devices import DEFAULT_DEVICE
from .shards import Shard

DEFAULT_LOOKBACK = 5  # sessions in which a ticker whose close arrived late is still scored


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
