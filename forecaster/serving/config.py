"""Settings of the nightly run and their defaults, in one place: the CLI
reads its defaults from here."""

from __future__ import annotations

DEFAULT_LOOKBACK = 5  # sessions in which a ticker whose close arrived late is still scored
MODEL_CHAMPION = "champion"  # what `--model champion` names: the registry's champion, looked up at every run
STALE_SHARE = 0.05  # health degraded when more of the owed session's tickers than this have no close
