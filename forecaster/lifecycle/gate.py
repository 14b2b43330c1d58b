"""The promotion gate: champion, challenger and naive scored on the same
(ticker, day) pairs, and the rule that decides.

Errors are measured relative to each prediction's last close, so a universe
of $2 and $2,000 stocks is judged on every ticker and not on the dearest
ones; the figures are root mean squares over every pair (pooled).

The rule (judge): promoted when the challenger beats the champion beyond
noise (its squared errors smaller pair by pair, on average by at least
evidence.EVIDENCE standard errors: the test training uses for its kept
step), its RMSE is at most the champion's x (1 - min_improvement), and no
worse than naive's. A tie, or a difference within noise, keeps the champion.

Two ways to get the pairs:
- backtest: the last `gate_days` sessions of stored prices, which the
  challenger never saw, each scored point-in-time (the window ends on the
  day before the target, exactly what the nightly run would have scored)
  by the ONNX files themselves, as they would serve;
- realized: the last N nights on which both models were scored by the
  nightly run (the challenger as a shadow) and the next close has arrived.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import sqlalchemy as sa

from ..artifact.model_file import ModelFile
from ..data.universe import Universe, iso_day
from ..data.windows import gather
from ..errors import DataError
from ..evidence import EVIDENCE, paired_z, z_from_moments
from ..features import CLOSE


@dataclass
class GateFigures:
    gate: str  # "backtest" or "realized"
    n: int  # (ticker, day) pairs scored by all three
    days: int
    first_day: str  # first and last as_of of the pairs
    last_day: str
    champion_rmse: float  # RMS of (predicted - actual) / last close
    challenger_rmse: float
    naive_rmse: float
    z: float = 0.0  # the challenger's paired improvement on the champion, in standard errors (evidence.py)

    @property
    def challenger_vs_naive(self) -> float | None:
        return _ratio(self.challenger_rmse, self.naive_rmse)

    @property
    def challenger_vs_champion(self) -> float | None:
        return _ratio(self.challenger_rmse, self.champion_rmse)

    def to_plain(self) -> dict:
        """What `promotions.metrics` holds."""
        return {
            **asdict(self),
            "z": max(min(self.z, 1e9), -1e9),  # JSON has no infinity
            "unit": "relative to last close",
            "challenger_vs_naive": self.challenger_vs_naive,
            "champion_vs_naive": _ratio(self.champion_rmse, self.naive_rmse),
            "challenger_vs_champion": self.challenger_vs_champion,
        }


def judge(figures: GateFigures, min_improvement: float) -> tuple[bool, str]:
    """(promote?, why): the module's rule, on the same pairs."""
    bar = figures.champion_rmse * (1.0 - min_improvement)
    beyond_noise = figures.z >= EVIDENCE
    beats_naive = figures.challenger_rmse <= figures.naive_rmse
    said = (
        f"challenger RMSE {figures.challenger_rmse:.5f} vs champion {figures.champion_rmse:.5f}"
        + (f" (bar {bar:.5f}, {min_improvement:.1%} better)" if min_improvement else "")
        + f" and naive {figures.naive_rmse:.5f} (ratios {_fmt(figures.challenger_vs_champion)} and "
        f"{_fmt(figures.challenger_vs_naive)}; paired improvement {_z_text(figures.z)} standard errors, "
        f"{EVIDENCE:g} needed), relative to last close, "
        f"{figures.n} predictions over {figures.days} {figures.gate} days {figures.first_day}..{figures.last_day}"
    )
    if beyond_noise and figures.challenger_rmse <= bar and beats_naive:
        return True, "promoted: " + said
    if figures.z <= -EVIDENCE:
        against_champion = "worse than the champion"
    elif not beyond_noise:
        tie = figures.challenger_rmse == figures.champion_rmse
        against_champion = "not better than the champion" + (" (a tie)" if tie else " beyond noise")
    elif figures.challenger_rmse > bar:
        against_champion = f"short of the bar ({min_improvement:.1%} better than the champion)"
    else:
        against_champion = ""
    failed = [w for w in (against_champion, "" if beats_naive else "worse than naive") if w]
    return False, f"rejected ({'; '.join(failed)}): " + said


def _z_text(z: float) -> str:
    return f"{z:+.2f}" if np.isfinite(z) else ("+inf" if z > 0 else "-inf")


def backtest(universe: Universe, champion: ModelFile, challenger: ModelFile, first_target: int) -> GateFigures:
    """Score both files and naive on every stored close dated on or after
    first_target (yyyymmdd) whose full window lies before it."""
    reach = max(champion.input_rows, challenger.input_rows)
    if champion.uses_ticker_index or challenger.uses_ticker_index:  # per-ticker scaling: their common tickers
        known = set(champion.training_tickers) & set(challenger.training_tickers)
        universe = universe.without({k for k, t in enumerate(universe.tickers) if t not in known})
    targets = target_rows(universe, reach, first_target)
    if not len(targets):
        raise DataError("no stored close to score the gate on: too few sessions after the challenger's data")
    actual = universe.ohlc[targets, CLOSE].astype(np.float64)
    last = universe.ohlc[targets - 1, CLOSE].astype(np.float64)
    errors = {
        name: (_predict(model, universe, targets) - actual) / last
        for name, model in (("champion", champion), ("challenger", challenger))
    }
    days = np.unique(universe.dates[targets - 1])
    z = paired_z(np.square(errors["champion"]), np.square(errors["challenger"]))
    return GateFigures(
        "backtest",
        len(targets),
        len(days),
        iso_day(days[0]),
        iso_day(days[-1]),
        _rms(errors["champion"]),
        _rms(errors["challenger"]),
        _rms((last - actual) / last),
        z,
    )


def target_rows(universe: Universe, seq_len: int, first: int, last: int | None = None) -> np.ndarray:
    """The rows whose close is dated in [first, last] (yyyymmdd) and that
    have a full window of seq_len rows of their own ticker before them."""
    rows = np.arange(len(universe.dates), dtype=np.int64)
    own_start = universe.starts[universe.ticker_of(rows)]
    keep = (rows - own_start >= seq_len) & (universe.dates >= first)
    if last is not None:
        keep &= universe.dates <= last
    return rows[keep]


def _predict(model: ModelFile, universe: Universe, targets: np.ndarray) -> np.ndarray:
    """The file's forecasts for the closes at `targets`, each from the window just before it."""
    windows, _ = gather(universe, targets - model.input_rows, model.input_rows)
    index = None
    if model.uses_ticker_index:  # its per-ticker scaling numbers, by its own ticker order
        position = {t: i for i, t in enumerate(model.training_tickers)}
        index = np.array([position[universe.tickers[k]] for k in universe.ticker_of(targets)], dtype=np.int64)
    predicted, _ = model.score(windows, index)
    return predicted


REALIZED_PAIRS = """
    WITH pairs AS (
        SELECT a.as_of, a.last_close, a.error AS champion_error, b.error AS challenger_error,
               a.naive_error
        FROM prediction_outcomes a
        JOIN prediction_outcomes b ON b.ticker = a.ticker AND b.as_of = a.as_of
        WHERE a.model_id = :champion AND b.model_id = :challenger
          AND a.actual_close IS NOT NULL AND a.last_close > 0 AND a.as_of >= :since
    ),
    nights AS (SELECT DISTINCT as_of FROM pairs ORDER BY as_of DESC LIMIT :nights)
    SELECT COUNT(*) AS n, COUNT(DISTINCT as_of) AS days, MIN(as_of) AS first_day, MAX(as_of) AS last_day,
           AVG((champion_error / last_close) * (champion_error / last_close)) AS champion_ms,
           AVG((challenger_error / last_close) * (challenger_error / last_close)) AS challenger_ms,
           AVG((naive_error / last_close) * (naive_error / last_close)) AS naive_ms,
           SUM(d) AS d_sum, SUM(d * d) AS d_sq
    FROM (SELECT pairs.*,
                 (champion_error / last_close) * (champion_error / last_close)
                 - (challenger_error / last_close) * (challenger_error / last_close) AS d
          FROM pairs) AS paired
    WHERE as_of IN (SELECT as_of FROM nights)
"""


def realized(conn: sa.Connection, champion_id: str, challenger_id: str, nights: int, since: str) -> GateFigures:
    """The last `nights` nights both models were scored on and whose outcome
    is known, from `since` on (the challenger's last day of data: a night it
    trained on is no evidence)."""
    r = conn.execute(
        sa.text(REALIZED_PAIRS),
        {"champion": champion_id, "challenger": challenger_id, "nights": nights, "since": since},
    ).one()
    if not r.n:
        return GateFigures("realized", 0, 0, "", "", float("nan"), float("nan"), float("nan"))
    return GateFigures(
        "realized",
        r.n,
        r.days,
        r.first_day,
        r.last_day,
        float(np.sqrt(r.champion_ms)),
        float(np.sqrt(r.challenger_ms)),
        float(np.sqrt(r.naive_ms)),
        z_from_moments(r.n, float(r.d_sum), float(r.d_sq)),
    )


def _ratio(a: float, b: float) -> float | None:
    """a / b; None where b is 0 (naive made no error on any pair: every close flat)."""
    return a / b if b else None


def _fmt(ratio: float | None) -> str:
    return "n/a" if ratio is None or not np.isfinite(ratio) else f"{ratio:.4f}"


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))
