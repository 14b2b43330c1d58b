"""Is it healthy? What `forecaster status` says, from the database alone.

Read-only: the served model's last runs against the session the exchange
calendar says should have been scored by now, the data's age, the tickers
that went stale, the rows set aside and prices flagged by the last ingest,
the champion's realised accuracy and interval coverage, and the registry's
last decision. Each check is ok, degraded, failed or waiting, and the worst
gives the exit status scripts use (EXIT_CODES, sysexits.h where one fits).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import asdict, dataclass, field

import sqlalchemy as sa

from ..data.calendar import last_closed_session
from ..data.config import DEFAULT_CALENDAR
from ..db import schema
from ..db.schema import RETIRED_AFTER_SESSIONS, Decision, ModelStatus, RunStatus
from .config import STALE_SHARE
from .freshness import freshness
from .shards import Shard

OK, DEGRADED, FAILED, WAITING = "ok", "degraded", "failed", "waiting"
# The exit status of `status` (and `daemon --once`): the worst check's.
# 75 is sysexits.h's EX_TEMPFAIL: the data is not there yet, try again later.
EXIT_CODES = {OK: 0, DEGRADED: 3, FAILED: 4, WAITING: 75}
SEVERITY = [OK, DEGRADED, FAILED, WAITING]  # worse to the right: no data yet outranks a failed run of old data
COVERAGE_WINDOWS = (20, 60)  # sessions of outcomes whose realised coverage is checked
OUTCOMES_PENDING = 5  # the newest sessions scored whose outcomes may not be known yet
BAND_TAIL = 0.05  # coverage out of band: a binomial tail this unlikely at the nominal level, either side
LEVELS = {"80": 0.80, "95": 0.95}


@dataclass
class Check:
    name: str
    state: str
    said: str


@dataclass
class Health:
    at: str  # the moment judged (UTC, ISO)
    owed_session: str  # the newest session closed by then: what should have been scored
    newest_price_date: str | None
    data_lag_sessions: int | None  # sessions between the newest stored date and the owed one
    model_id: str | None  # the served model: the champion, else the newest served run's model
    champion_since: str | None = None
    last_run: dict | None = None
    last_success: dict | None = None
    stale: list[str] = field(default_factory=list)  # tickers of the previous session without a close on the owed one
    expected_tickers: int = 0  # tickers with a close on the session before the owed one (of the shard)
    served_before_promotion: dict | None = None  # the previous champion's run of the owed session, if it serves it
    retired: int = 0  # tickers without a close for more than RETIRED_AFTER_SESSIONS sessions
    # The newest rejections and flags, whenever they were made (an ingest that
    # set nothing aside leaves them as they were): reason (numbers elided) or kind -> rows.
    set_aside_latest: dict[str, int] = field(default_factory=dict)
    set_aside_at: str | None = None
    rows_set_aside_total: int = 0
    price_flags_latest: dict[str, int] = field(default_factory=dict)
    flagged_at: str | None = None
    realised_ratio: float | None = None  # pooled RMSE relative to the last close, over naive's, since promotion
    coverage: dict[str, dict] = field(default_factory=dict)  # "80"/"95" -> window -> figures
    challengers: list[str] = field(default_factory=list)
    last_decision: dict | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def state(self) -> str:
        return max((c.state for c in self.checks), key=SEVERITY.index, default=OK)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.state]

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "state": self.state, "exit_code": self.exit_code}, indent=2)


def health(
    engine: sa.Engine,
    *,
    at: dt.datetime | None = None,
    calendar: str = DEFAULT_CALENDAR,
    stale_share: float = STALE_SHARE,
    owed: str | None = None,
    model_id: str | None = None,
    shard: Shard | None = None,
    outcomes: bool = True,
) -> Health:
    """Every check, as of `at` (default: now). The session owed is the newest
    closed one on the calendar unless given (`predict` judges the session it
    was asked to score), the model judged the served one unless given.
    Without `outcomes`, the checks a run's own exit status needs (data, run,
    stale): the realised ratio and coverage read outcomes through the
    prediction_outcomes view (those since promotion and of the last sessions:
    seconds on a large database), so a nightly `predict` leaves them to
    `status` and the metrics file."""
    at = at or dt.datetime.now(dt.UTC)
    owed = owed or last_closed_session(at, calendar)
    r, d, m = schema.runs.c, schema.price_dates.c, schema.models.c
    with engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(d.date))).scalar()
        champion = conn.execute(sa.select(m.model_id, m.promoted_at).where(m.status == ModelStatus.CHAMPION)).first()
        # The served model: the champion, else the model of the newest successful run.
        model_id = model_id or (
            champion.model_id
            if champion
            else conn.execute(
                sa.select(r.model_id)
                .where(r.shadow_of.is_(None), r.status == RunStatus.SUCCEEDED)
                .order_by(r.run_id.desc())
                .limit(1)
            ).scalar()
        )
        # Its newest run, or a newer one that failed before it knew its model (a file it could not read).
        unknown_model = sa.or_(r.model_id.is_(None), r.model_id == "")
        last_run = (
            conn.execute(
                sa.select(r)
                .where(r.shadow_of.is_(None), sa.or_(r.model_id == model_id, unknown_model))
                .order_by(r.run_id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        last_success = (
            conn.execute(
                sa.select(r)
                .where(r.model_id == model_id, r.shadow_of.is_(None), r.status == RunStatus.SUCCEEDED)
                # the run that stored the night, not a rerun of it that added nothing
                .order_by(r.as_of.desc(), (r.n_predictions > 0).desc(), r.run_id)
                .limit(1)
            )
            .mappings()
            .first()
            if model_id
            else None
        )
        h = Health(
            at=at.astimezone(dt.UTC).isoformat(timespec="seconds"),
            owed_session=owed,
            newest_price_date=newest,
            data_lag_sessions=_sessions_between(conn, newest, owed, calendar) if newest else None,
            model_id=model_id,
            champion_since=champion.promoted_at if champion and champion.model_id == model_id else None,
            last_run=_run(last_run, at),
            last_success=_run(last_success, at),
        )
        _data(conn, h)
        if h.champion_since and not (last_success and last_success["as_of"] >= owed):
            # Promoted since the owed session was scored: the previous champion's run serves it
            # (latest_predictions shows it) until the new one scores.
            pr = schema.promotions.c
            promoted_after = conn.execute(
                sa.select(sa.func.max(pr.after_run_id)).where(pr.model_id == model_id, pr.decision == Decision.PROMOTED)
            ).scalar()
            served = (
                conn.execute(
                    sa.select(r)
                    .where(
                        r.shadow_of.is_(None),
                        r.status == RunStatus.SUCCEEDED,
                        r.as_of >= owed,
                        r.model_id != model_id,
                        r.run_id <= promoted_after,  # by run ids, not clocks: same-second runs happen
                    )
                    .order_by(r.as_of.desc(), (r.n_predictions > 0).desc(), r.run_id)
                    .limit(1)
                )
                .mappings()
                .first()
            )
            h.served_before_promotion = _run(served, at)
        if model_id and outcomes:
            _model(conn, h, model_id, h.champion_since)
    if newest and newest >= owed:
        fresh = freshness(engine, owed, shard)
        h.stale, h.expected_tickers = fresh.missing, fresh.expected
    h.checks = _checks(h, stale_share)
    return h


def _sessions_between(conn: sa.Connection, newest: str, owed: str, calendar: str) -> int:
    """Exchange sessions after `newest` up to `owed` (0: the data is current)."""
    if newest >= owed:
        return 0
    s = schema.calendar_sessions.c
    counted = conn.execute(
        sa.select(sa.func.count()).where(s.calendar == calendar, s.date > newest, s.date <= owed)
    ).scalar()
    if counted:
        return int(counted)
    # No copy of the calendar covers it (nothing scored that far yet): business days, a close bound.
    import numpy as np

    return int(np.busday_count(dt.date.fromisoformat(newest) + dt.timedelta(days=1), dt.date.fromisoformat(owed)) + 1)


def _run(row, at: dt.datetime) -> dict | None:
    if row is None:
        return None
    finished = row["finished_at"] or row["started_at"]
    age = (at - dt.datetime.fromisoformat(finished)).total_seconds() if finished else None
    return {
        "run_id": row["run_id"],
        "model_id": row["model_id"],
        "as_of": row["as_of"],
        "status": row["status"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "age_seconds": age,
        "device": row["device"],
        "n_predictions": row["n_predictions"],
        "message": row["message"],
    }


def _data(conn: sa.Connection, health: Health) -> None:
    """Retired tickers, the last ingest's rows set aside by reason, its price flags."""
    t, d, rj, f = schema.tickers.c, schema.price_dates.c, schema.rejected_rows.c, schema.price_flags.c
    if health.newest_price_date:
        cutoff = conn.execute(
            sa.select(d.date).order_by(d.date.desc()).limit(1).offset(RETIRED_AFTER_SESSIONS)
        ).scalar()
        if cutoff is not None:
            health.retired = conn.execute(sa.select(sa.func.count()).where(t.last_date < cutoff)).scalar()
    health.rows_set_aside_total = conn.execute(
        sa.select(sa.func.count()).select_from(schema.rejected_rows).where(rj.line.is_not(None))
    ).scalar()
    last = conn.execute(sa.select(sa.func.max(rj.rejected_at))).scalar()
    if last:
        reasons: dict[str, int] = {}
        for (reason,) in conn.execute(sa.select(rj.reason).where(rj.rejected_at == last)):
            key = re.sub(r"\d[\d.:-]*", "N", reason)[:80]  # "dated N, after ..." for every date alike
            reasons[key] = reasons.get(key, 0) + 1
        health.set_aside_latest, health.set_aside_at = reasons, last
    flagged_at = conn.execute(sa.select(sa.func.max(f.detected_at))).scalar()
    if flagged_at:
        health.price_flags_latest = dict(
            conn.execute(sa.select(f.kind, sa.func.count()).where(f.detected_at == flagged_at).group_by(f.kind)).all()
        )
        health.flagged_at = flagged_at


def _model(conn: sa.Connection, health: Health, model_id: str, since: str | None) -> None:
    """The realised ratio since promotion, coverage over the last sessions, challengers, the last decision."""
    # A run scores one as_of, so the runs since promotion bound the as_of read: the view
    # applies that bound before working out each row's outcome (1,000,000 stored
    # predictions, a fifth of them since promotion: 6.9 s -> 0.9 s).
    realised = conn.execute(
        sa.text(
            "SELECT sqrt(AVG((o.error / o.last_close) * (o.error / o.last_close))), "
            "sqrt(AVG((o.naive_error / o.last_close) * (o.naive_error / o.last_close))) "
            "FROM prediction_outcomes o JOIN runs r ON r.run_id = o.run_id "
            "WHERE o.model_id = :m AND o.served = 1 AND o.actual_close IS NOT NULL AND r.started_at >= :since "
            "AND o.as_of >= (SELECT MIN(b.as_of) FROM runs b WHERE b.model_id = :m AND b.started_at >= :since)"
        ),
        {"m": model_id, "since": since or ""},
    ).one()
    health.realised_ratio = realised[0] / realised[1] if realised[1] else None
    for window in COVERAGE_WINDOWS:
        first = _first_of_last_sessions(conn, model_id, window)
        if first is None:
            continue
        sessions, n, in80, in95 = conn.execute(
            sa.text(
                "SELECT COUNT(DISTINCT as_of), COUNT(*), SUM(in80), SUM(in95) FROM prediction_outcomes "
                "WHERE model_id = :m AND served = 1 AND in80 IS NOT NULL AND as_of >= :first"
            ),
            {"m": model_id, "first": first},
        ).one()
        for tag, got in (("80", in80), ("95", in95)):
            low, high = coverage_band(LEVELS[tag], sessions)
            health.coverage.setdefault(tag, {})[str(window)] = {
                "sessions": sessions,
                "outcomes": n,
                "coverage": got / n,
                "band": [low, high],
                "in_band": low <= got / n <= high,
                "complete": sessions >= window,
            }
    mm = schema.models.c
    health.challengers = list(conn.execute(sa.select(mm.model_id).where(mm.status == ModelStatus.CHALLENGER)).scalars())
    p = schema.promotions.c
    decision = conn.execute(
        sa.select(p.decided_at, p.model_id, p.decision, p.reason).order_by(p.promotion_id.desc()).limit(1)
    ).first()
    health.last_decision = dict(decision._mapping) if decision else None


def _first_of_last_sessions(conn: sa.Connection, model_id: str, window: int) -> str | None:
    """The oldest of the newest `window` sessions with an outcome of the
    model's served predictions (all of them if fewer). prediction_outcomes
    works out each row's outcome and whether it was served, so it is asked
    first for the sessions of the model's last runs only (an as_of bound it
    applies before that work: 0.4 s instead of 7 s for 1,000,000 stored
    predictions), and for all sessions only if those hold fewer."""
    r = schema.runs.c
    recent_runs = (
        sa.select(r.as_of)
        .distinct()
        .where(r.model_id == model_id, r.status == RunStatus.SUCCEEDED, r.shadow_of.is_(None), r.as_of.is_not(None))
        .order_by(r.as_of.desc())
        .limit(1)
        .offset(window + OUTCOMES_PENDING)
    )
    bound = conn.execute(recent_runs).scalar()
    query = sa.text(
        "SELECT COUNT(*), MIN(as_of) FROM (SELECT DISTINCT as_of FROM prediction_outcomes "
        "WHERE model_id = :m AND served = 1 AND in80 IS NOT NULL AND as_of >= :bound "
        "ORDER BY as_of DESC LIMIT :n) AS recent"
    )
    found, first = conn.execute(query, {"m": model_id, "n": window, "bound": bound or ""}).one()
    if found < window and bound is not None:  # the runs' sessions held too few outcomes: ask for all
        found, first = conn.execute(query, {"m": model_id, "n": window, "bound": ""}).one()
    return first


def coverage_band(level: float, sessions: int) -> tuple[float, float]:
    """The coverages a calibrated interval shows over `sessions` sessions
    without alarm: the binomial's central range at level, BAND_TAIL in each
    tail. One session counts once: a market-wide move makes every ticker's
    outcome of a day miss together, so a day's outcomes are one draw, not many."""
    low = high = 0
    cumulative = 0.0
    for k in range(sessions + 1):
        p = math.comb(sessions, k) * level**k * (1 - level) ** (sessions - k)
        if cumulative < BAND_TAIL:
            low = k
        cumulative += p
        if cumulative <= 1 - BAND_TAIL:
            high = k + 1
    return low / sessions, min(high, sessions) / sessions


def _checks(h: Health, stale_share: float) -> list[Check]:
    checks = []
    if h.newest_price_date is None:
        return [Check("data", WAITING, "no prices stored yet")]
    if h.newest_price_date < h.owed_session:
        checks.append(
            Check(
                "data",
                WAITING,
                f"the newest close stored is {h.newest_price_date}, {h.data_lag_sessions} session(s) behind "
                f"{h.owed_session}, the newest closed session: its files are not in yet",
            )
        )
    else:
        checks.append(Check("data", OK, f"closes stored through {h.newest_price_date}"))
    if h.model_id is None:
        last = h.last_run
        checks.append(
            Check(
                "run",
                FAILED,
                "no model has scored yet (no champion, no successful run)"
                + (f"; the last run ({last['as_of']}) {last['status']}: {last['message']}" if last else ""),
            )
        )
        return checks
    success, previous = h.last_success, h.served_before_promotion
    if success and success["as_of"] >= h.owed_session:
        checks.append(Check("run", OK, f"run {success['run_id']} scored {success['as_of']}"))
    elif previous:
        checks.append(
            Check(
                "run",
                OK,
                f"the champion promoted {h.champion_since} has not scored yet; {previous['as_of']} is served by "
                f"run {previous['run_id']} of the previous champion {previous['model_id'][:12]}",
            )
        )
    elif h.newest_price_date >= h.owed_session:
        last = h.last_run
        why = f"; the last run ({last['as_of']}) {last['status']}: {last['message']}" if last else ""
        checks.append(
            Check(
                "run",
                FAILED,
                f"no successful run for {h.owed_session}"
                + (f" (the last success scored {success['as_of']})" if success else "")
                + why,
            )
        )
    if (h.last_success or previous) and h.newest_price_date >= h.owed_session:
        share = len(h.stale) / max(h.expected_tickers, 1)  # of the previous session's tickers
        checks.append(
            Check(
                "stale",
                DEGRADED if share > stale_share else OK,
                f"{len(h.stale)} ticker(s) without a close on {h.owed_session} ({100 * share:.1f}%, "
                f"degraded above {100 * stale_share:g}%)",
            )
        )
    for tag, windows in h.coverage.items():
        for window, c in windows.items():
            if not c["complete"]:
                continue
            checks.append(
                Check(
                    f"coverage{tag}_{window}",
                    OK if c["in_band"] else DEGRADED,
                    f"{tag}% intervals held {100 * c['coverage']:.1f}% over the last {c['sessions']} sessions "
                    f"(band {100 * c['band'][0]:.1f}-{100 * c['band'][1]:.1f}%)",
                )
            )
    return checks


def describe(h: Health) -> str:
    """The health in a few lines for people."""
    lines = [f"{h.state.upper()} (exit {h.exit_code}) at {h.at}; owed session {h.owed_session}"]
    for c in h.checks:
        lines.append(f"  {c.state:<8} {c.name}: {c.said}")
    if h.model_id:
        lines.append(
            f"model {h.model_id[:12]}"
            + (f", champion since {h.champion_since}" if h.champion_since else "")
            + (f"; realised ratio to naive {h.realised_ratio:.4f}" if h.realised_ratio is not None else "")
            + (f"; challengers {', '.join(c[:12] for c in h.challengers)}" if h.challengers else "")
        )
    if h.last_decision:
        dd = h.last_decision
        lines.append(f"last decision {dd['decided_at']}: {dd['decision']} {dd['model_id'][:12]}: {dd['reason'][:160]}")
    if h.retired:
        lines.append(f"{h.retired} ticker(s) without a close for more than {RETIRED_AFTER_SESSIONS} sessions (retired)")
    if h.set_aside_latest:
        lines.append(
            f"the newest rows set aside (at {h.set_aside_at}): "
            + "; ".join(f"{n} x {why}" for why, n in h.set_aside_latest.items())
        )
    if h.price_flags_latest:
        lines.append(
            f"the newest price flags (at {h.flagged_at}): "
            + ", ".join(f"{n} {kind}" for kind, n in sorted(h.price_flags_latest.items()))
        )
    return "\n".join(lines)
