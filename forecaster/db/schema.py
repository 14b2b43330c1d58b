"""The database's tables and views, and the version of their shape.

SQLAlchemy Core table definitions, so any URL works. migrations.py creates a
new database or upgrades an older one (store.connect calls it under the
write lock).
"""

from __future__ import annotations

from enum import StrEnum

import sqlalchemy as sa

from ..intervals import COLUMNS as INTERVAL_COLUMNS

SCHEMA_VERSION = 9
# latest_predictions shows a ticker while its newest prediction is at most this
# many sessions (dates with prices) behind the newest served: one that stopped
# trading is retired from it, not shown as tomorrow's forecast for weeks.
RETIRED_AFTER_SESSIONS = 5

metadata = sa.MetaData()

schema_info = sa.Table(
    "schema_info",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

prices = sa.Table(
    "prices",
    metadata,
    sa.Column("ticker", sa.String, primary_key=True),
    # ISO "YYYY-MM-DD" text: sorts and compares as a date on every backend.
    sa.Column("date", sa.String(10), primary_key=True),
    sa.Column("open", sa.Float, nullable=False),
    sa.Column("high", sa.Float, nullable=False),
    sa.Column("low", sa.Float, nullable=False),
    sa.Column("close", sa.Float, nullable=False),
    sa.Column("volume", sa.Float),
    # Clustered on (ticker, date): one B-tree, appends land together, and a
    # ticker's last N rows are one short range scan. No index on date alone:
    # inserting ticker by ticker would scatter writes all over it.
    sqlite_with_rowid=False,
)

# The distinct trading dates present in `prices`, kept in the same
# transaction, so "which dates exist" never scans millions of price rows.
price_dates = sa.Table(
    "price_dates",
    metadata,
    sa.Column("date", sa.String(10), primary_key=True),
    sa.Column("n_rows", sa.Integer, nullable=False),
)

# One row per ticker, kept in step with `prices` inside the same transaction,
# so the nightly run finds fresh and stale tickers without scanning history.
tickers = sa.Table(
    "tickers",
    metadata,
    sa.Column("ticker", sa.String, primary_key=True),
    sa.Column("first_date", sa.String(10), nullable=False),
    sa.Column("last_date", sa.String(10), nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
    # The last date data/flags.py has judged (NULL: none yet, or all again after a revision).
    sa.Column("judged_through", sa.String(10)),
)

rejected_rows = sa.Table(
    "rejected_rows",
    metadata,
    sa.Column("rejection_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String, nullable=False),
    sa.Column("line", sa.Integer),  # NULL when the whole file was unreadable
    sa.Column("ticker", sa.String),
    sa.Column("raw", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("rejected_at", sa.String, nullable=False),
)

# Every stored row a vendor's revised history replaced or removed
# (`ingest --revise`), with the values it had: the audit of a revision.
price_revisions = sa.Table(
    "price_revisions",
    metadata,
    sa.Column("revision_row_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("revised_at", sa.String, nullable=False),
    sa.Column("source", sa.String, nullable=False),  # the file the revision came from
    sa.Column("ticker", sa.String, nullable=False),
    sa.Column("date", sa.String(10), nullable=False),
    sa.Column("change", sa.String(8), nullable=False),  # replaced | removed
    sa.Column("open", sa.Float, nullable=False),  # the values before the revision
    sa.Column("high", sa.Float, nullable=False),
    sa.Column("low", sa.Float, nullable=False),
    sa.Column("close", sa.Float, nullable=False),
    sa.Column("volume", sa.Float),
    sa.Column("new_close", sa.Float),  # NULL when removed
    sa.CheckConstraint("change IN ('replaced', 'removed')", name="ck_price_revisions_change"),
    sa.Index("ix_price_revisions_ticker_date", "ticker", "date"),
)

# Closes that moved too far to be true (data/flags.py): stored, not
# rejected. `date` is the day whose close moved from the row before it.
price_flags = sa.Table(
    "price_flags",
    metadata,
    sa.Column("ticker", sa.String, primary_key=True),
    sa.Column("date", sa.String(10), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # split | bad_print | revert | jump
    sa.Column("ratio", sa.Float, nullable=False),  # this close over the previous one
    sa.Column("detected_at", sa.String, nullable=False),
    sa.CheckConstraint("kind IN ('split', 'bad_print', 'revert', 'jump')", name="ck_price_flags_kind"),
)

# What was ingested from where: lets an unchanged file be skipped from its
# size and mtime alone, and an appended file be read from its old end.
source_files = sa.Table(
    "source_files",
    metadata,
    sa.Column("path", sa.String, primary_key=True),
    sa.Column("ticker", sa.String, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("tail_sha256", sa.String(64), nullable=False),
    sa.Column("rows_added", sa.Integer, nullable=False),
    sa.Column("rows_rejected", sa.Integer, nullable=False),
    sa.Column("ingested_at", sa.String, nullable=False),
)


class ModelStatus(StrEnum):
    """models.status: the registry (NULL for a model only ever named by path)."""

    CHAMPION = "champion"  # serves; at most one
    CHALLENGER = "challenger"  # scored beside the champion every night
    RETIRED = "retired"  # served before
    REJECTED = "rejected"  # failed its gate


class RunStatus(StrEnum):
    """runs.status."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Decision(StrEnum):
    """promotions.decision."""

    PROMOTED = "promoted"
    REJECTED = "rejected"


def _one_of(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


models = sa.Table(
    "models",
    metadata,
    sa.Column("model_id", sa.String(64), primary_key=True),  # sha256 of the ONNX file
    sa.Column("path", sa.String, nullable=False),
    sa.Column("created_at", sa.String, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),  # JSON
    # The registry: NULL for a model only ever named by path (predict --model M.onnx).
    sa.Column("status", sa.String(16)),
    sa.Column("promoted_at", sa.String),
)

# At most one champion, enforced by the database itself: a partial unique
# index, the same SQL on SQLite and PostgreSQL. Plain DDL rather than
# sa.Index(postgresql_where=...): that option imports SQLAlchemy's PostgreSQL
# dialect (~30 ms) at every start, on SQLite too.
ONE_CHAMPION_INDEX = sa.DDL(
    "CREATE UNIQUE INDEX IF NOT EXISTS uq_models_one_champion ON models (status) "
    f"WHERE status = '{ModelStatus.CHAMPION}'"
)
sa.event.listen(models, "after_create", ONE_CHAMPION_INDEX)

# Every gate decision, with its numbers.
promotions = sa.Table(
    "promotions",
    metadata,
    sa.Column("promotion_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("decided_at", sa.String, nullable=False),
    sa.Column("model_id", sa.String(64), sa.ForeignKey("models.model_id"), nullable=False),
    sa.Column("previous_model_id", sa.String(64)),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text),  # JSON: each candidate's RMSE, naive's, n, on the gate days
    # The newest run when it was decided: the runs after it (to the next promotion) are the new champion's.
    sa.Column("after_run_id", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint(_one_of("decision", Decision), name="ck_promotions_decision"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.String, nullable=False),
    sa.Column("finished_at", sa.String),
    sa.Column("status", sa.String(16), nullable=False),  # RunStatus
    sa.Column("as_of", sa.String(10)),
    sa.Column("model_id", sa.String(64)),
    sa.Column("device", sa.String(16)),
    sa.Column("n_predictions", sa.Integer),
    sa.Column("message", sa.Text),
    sa.Column("host", sa.String),
    sa.Column("pid", sa.Integer),
    sa.Column("shard", sa.String(16)),  # "K/N" when only shard K of N tickers was scored
    # A challenger's shadow run: the run of the champion it was scored beside (NULL: a served run).
    sa.Column("shadow_of", sa.Integer),
    sa.CheckConstraint(_one_of("status", RunStatus), name="ck_runs_status"),
)

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("prediction_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("model_id", sa.String(64), sa.ForeignKey("models.model_id"), nullable=False),
    sa.Column("ticker", sa.String, nullable=False),
    sa.Column("as_of", sa.String(10), nullable=False),
    sa.Column("target_date", sa.String(10), nullable=False),
    sa.Column("predicted_close", sa.Float, nullable=False),
    sa.Column("last_close", sa.Float, nullable=False),
    # e.g. "out_of_range": the window moved further than anything seen in training.
    sa.Column("flags", sa.String),
    # The 80% and 95% intervals, in price units (NULL for a model without intervals).
    *(sa.Column(name, sa.Float) for name in INTERVAL_COLUMNS),
    sa.UniqueConstraint("model_id", "ticker", "as_of", name="uq_predictions_model_ticker_asof"),
    sa.Index("ix_predictions_ticker_asof", "ticker", "as_of"),
)

# Trading sessions of an exchange calendar, copied from exchange_calendars
# once per range (by `source`, its version: a new one may know new holidays).
# A nightly run then reads its next trading day here instead of importing
# the library and building the calendar (about 0.4 s a night).
calendar_sessions = sa.Table(
    "calendar_sessions",
    metadata,
    sa.Column("calendar", sa.String(16), primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("date", sa.String(10), primary_key=True),
)

# The days each (calendar, source) covers: every session in [first_day, last_day] is stored.
calendar_coverage = sa.Table(
    "calendar_coverage",
    metadata,
    sa.Column("calendar", sa.String(16), primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("first_day", sa.String(10), nullable=False),
    sa.Column("last_day", sa.String(10), nullable=False),
)

# The runs that served: succeeded, not a shadow, of the champion of their
# time (after its promotion and up to the next one, by the promotions'
# after_run_id), or from before any model was promoted; per model and as_of,
# the newest. A prediction was served when such a run of its model scored its
# as_of, whichever run wrote it (a champion rescoring a day it scored in the
# shadows serves those rows); the newest serving run wins a ticker and as_of.
# Both views below look predictions up by (ticker, as_of) through its index,
# so asking them about one ticker, or one night, reads only those rows.
_SERVING_RUNS = f"""
    serving_runs AS (
        SELECT r.model_id, r.as_of, MAX(r.run_id) AS served_run
        FROM runs r
        WHERE r.shadow_of IS NULL AND r.status = '{RunStatus.SUCCEEDED}' AND (
            r.run_id <= COALESCE(
                (SELECT MIN(f.after_run_id) FROM promotions f WHERE f.decision = '{Decision.PROMOTED}'), r.run_id)
            OR EXISTS (
                SELECT 1 FROM promotions pr
                WHERE pr.model_id = r.model_id AND pr.decision = '{Decision.PROMOTED}'
                  AND r.run_id > pr.after_run_id
                  AND r.run_id <= COALESCE(
                      (SELECT MIN(nx.after_run_id) FROM promotions nx
                       WHERE nx.decision = '{Decision.PROMOTED}' AND nx.promotion_id > pr.promotion_id),
                      r.run_id)))
        GROUP BY r.model_id, r.as_of
    )
"""


def _served_prediction(ticker: str, as_of_condition: str) -> str:
    """The id of the served prediction of `ticker` (an SQL expression) whose as_of meets the condition, newest first."""
    return f"""(
        SELECT p2.prediction_id FROM predictions p2
        JOIN serving_runs s ON s.model_id = p2.model_id AND s.as_of = p2.as_of
        WHERE p2.ticker = {ticker} AND {as_of_condition}
        ORDER BY p2.as_of DESC, s.served_run DESC LIMIT 1)"""


VIEWS = {
    # The newest served prediction per ticker (a promotion never empties it:
    # until the new champion has scored, the previous one's forecasts show).
    # sessions_behind: dates with prices after its as_of up to the newest
    # served as_of (0: current); beyond RETIRED_AFTER_SESSIONS the ticker has
    # stopped trading or lost its file, and is not shown.
    "latest_predictions": f"""
        WITH {_SERVING_RUNS}
        SELECT ticker, as_of, target_date, predicted_close, lo80, hi80, lo95, hi95, last_close, model_id,
               run_id, flags, sessions_behind
        FROM (
            SELECT p.*,
                   (SELECT COUNT(*) FROM price_dates d
                    WHERE d.date > p.as_of AND d.date <= (SELECT MAX(as_of) FROM serving_runs)) AS sessions_behind
            FROM tickers t
            JOIN predictions p ON p.prediction_id = {_served_prediction("t.ticker", "1 = 1")}
        ) AS latest
        WHERE sessions_behind <= {RETIRED_AFTER_SESSIONS}
    """,
    # Each prediction with the next close stored after its as_of (NULL while
    # that day has not arrived). error = predicted - actual; naive_error is
    # the same for "tomorrow's close = today's close"; in80 / in95: 1 when the
    # actual close fell inside the interval, 0 outside, NULL before it is known.
    # served: 1 for the one prediction per ticker and as_of that was served,
    # 0 for a challenger's shadow or a model scored aside.
    "prediction_outcomes": f"""
        WITH {_SERVING_RUNS}
        SELECT p.prediction_id, p.ticker, p.as_of, p.target_date, p.predicted_close, p.last_close,
               nx.date AS actual_date, nx.close AS actual_close,
               p.predicted_close - nx.close AS error,
               p.last_close - nx.close AS naive_error,
               p.lo80, p.hi80, p.lo95, p.hi95,
               CASE WHEN nx.close IS NULL OR p.lo80 IS NULL THEN NULL
                    WHEN nx.close BETWEEN p.lo80 AND p.hi80 THEN 1 ELSE 0 END AS in80,
               CASE WHEN nx.close IS NULL OR p.lo95 IS NULL THEN NULL
                    WHEN nx.close BETWEEN p.lo95 AND p.hi95 THEN 1 ELSE 0 END AS in95,
               p.model_id, p.run_id, p.flags,
               CASE WHEN p.prediction_id = {_served_prediction("p.ticker", "p2.as_of = p.as_of")}
                    THEN 1 ELSE 0 END AS served
        FROM predictions p
        LEFT JOIN prices nx
          ON nx.ticker = p.ticker
         AND nx.date = (SELECT MIN(q.date) FROM prices q
                        WHERE q.ticker = p.ticker AND q.date > p.as_of)
    """,
    # Realised accuracy per model, beside naive (the same days), and how often its intervals held.
    "model_scoreboard": """
        SELECT o.model_id, m.status, COUNT(*) AS n,
               sqrt(AVG(o.error * o.error)) AS rmse, AVG(ABS(o.error)) AS mae,
               sqrt(AVG(o.naive_error * o.naive_error)) AS naive_rmse,
               sqrt(AVG(o.error * o.error)) / NULLIF(sqrt(AVG(o.naive_error * o.naive_error)), 0) AS ratio,
               AVG(o.in80) AS coverage80, AVG(o.in95) AS coverage95,
               MIN(o.as_of) AS first_as_of, MAX(o.as_of) AS last_as_of
        FROM prediction_outcomes o JOIN models m ON m.model_id = o.model_id
        WHERE o.actual_close IS NOT NULL
        GROUP BY o.model_id, m.status
    """,
}
