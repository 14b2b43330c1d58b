"""Prediction intervals: the conformal calibration, the bounds stored every
night, point in time, checked by verify, and reported beside RiskMetrics."""

import numpy as np
import onnx
import pytest
import sqlalchemy as sa
import torch
from click.testing import CliRunner
from helpers import cut_copy
from onnx import numpy_helper

from forecaster import intervals as iv
from forecaster.artifact.model_file import load_model
from forecaster.artifact.verify import random_windows, verify
from forecaster.cli import main
from forecaster.data.ingest import ingest
from forecaster.errors import ParityError
from forecaster.serving.nightly import predict


def rows(engine, sql):
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_the_conformal_quantile_covers_a_new_score_at_its_level():
    rng = np.random.default_rng(0)
    hits = {0.8: 0, 0.95: 0}
    for _ in range(2000):  # calibration and a new score drawn alike (exchangeable)
        scores = rng.exponential(size=40)
        new = rng.exponential()
        for level in hits:
            hits[level] += new <= iv.conformal_quantile(scores, level)
    assert hits[0.8] / 2000 >= 0.78 and hits[0.95] / 2000 >= 0.94  # at least the level, up to noise
    assert iv.conformal_quantile(np.arange(1.0, 11.0), 0.8) == 9.0  # ceil(11 * 0.8) = 9th smallest


HAR = (-1.1, 0.24, 0.28, 0.38)  # about what the real tickers fit
HAR60 = (-0.5, 0.04, 0.11, 0.10, 1.19, 0.29, -1.29)  # likewise
FITTED = {"har": HAR, "har60": HAR60}


def test_the_volatility_is_the_same_in_numpy_and_torch():
    windows = random_windows(50, iv.LONG_ROWS, seed=4).astype(np.float64)
    for method in iv.METHODS:
        np.testing.assert_allclose(
            iv.window_volatility(torch.from_numpy(windows), method, FITTED.get(method, ())).numpy(),
            iv.window_volatility(windows, method, FITTED.get(method, ())),
            rtol=1e-12,
        )
    flat = np.ones((1, iv.LONG_ROWS, 4))
    for method in iv.METHODS:  # no move, no range: still a width
        zero = (0.0, 1.0) + (0.0,) * (iv.COEFFICIENTS.get(method, 2) - 2) if method in iv.COEFFICIENTS else ()
        assert iv.window_volatility(flat, method, zero)[0] == iv.MIN_VOLATILITY
    with pytest.raises(ValueError, match="needs its 4 fitted coefficients"):
        iv.window_volatility(windows, "har")
    with pytest.raises(ValueError, match="needs its 7 fitted coefficients"):
        iv.window_volatility(windows, "har60", HAR)


def stored_windows(shared_data, n=5, rows=75):
    """The newest windows of stored real rows (aaxj, a.us), as the database holds them."""
    out = []
    for path in (shared_data / "ETFs" / "aaxj.us.txt", shared_data / "Stocks" / "a.us.txt"):
        lines = path.read_text().splitlines()[1:]
        ohlc = np.array([[float(x) for x in line.split(",")[1:5]] for line in lines[-(rows + n) :]])
        out += [ohlc[i : i + rows] for i in range(n)]
    return np.stack(out)


@pytest.mark.parametrize("source", ["random", "stored"])
def test_the_har60_features_against_a_plain_reference(source, shared_data):
    """Loops over the newest 60 rows of longer windows, written from the definitions."""
    windows = random_windows(5, 75, seed=6).astype(np.float64) if source == "random" else stored_windows(shared_data)
    for b in range(len(windows)):
        w = windows[b, -60:]
        variance, squared = [], []
        for t in range(1, 60):
            o, h, lo, c = w[t]
            gk = 0.5 * np.log(h / lo) ** 2 - (2 * np.log(2) - 1) * np.log(c / o) ** 2
            variance.append(max(max(gk, 0.0) + np.log(o / w[t - 1, 3]) ** 2, iv.MIN_VARIANCE))
            squared.append(max(np.log(c / w[t - 1, 3]) ** 2, iv.MIN_VARIANCE))

        def ewma(values, decay):
            weights = [decay ** (len(values) - 1 - i) for i in range(len(values))]
            return sum(x * wt for x, wt in zip(values, weights, strict=True)) / sum(weights)

        expected = [
            np.log(variance[-1]),
            np.log(np.mean(variance[-5:])),
            np.log(np.mean(variance[-22:])),
            np.log(np.mean(variance)),
            np.log(ewma(squared, 0.94)),
            np.log(ewma(variance, 0.99)),
        ]
        assert [f[b] for f in iv.har60_features(windows)] == pytest.approx(expected, rel=1e-12)
    scale = iv.har60_volatility(windows, HAR60)
    assert scale == pytest.approx(np.exp(HAR60[0] + np.column_stack(iv.har60_features(windows)) @ HAR60[1:]))


def test_the_student_t_fit_recovers_the_scale_and_tails_it_was_made_with():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(40_000, 2))
    truth, nu = (-4.0, 0.5, -0.3), 4.0
    returns = np.exp(truth[0] + features @ truth[1:]) * rng.standard_t(nu, size=len(features))
    coefficients, fitted_nu = iv.fit_student_t_scale(features, returns)
    assert coefficients == pytest.approx(truth, abs=0.03) and fitted_nu == pytest.approx(nu, abs=0.4)


def test_a_har60_calibration_reads_60_rows_and_round_trips_through_metadata():
    calibration = iv.Calibration("har60", (1.2, 2.1), 100, HAR60)
    assert calibration.input_rows(20) == 60 and calibration.input_rows(80) == 80
    assert iv.Calibration("har", (1.2, 2.1), 100, HAR).input_rows(20) == 20
    assert iv.Calibration.from_metadata(calibration.to_metadata()) == calibration
    with pytest.raises(ValueError, match="7 coefficients"):
        iv.Calibration.from_metadata({**calibration.to_metadata(), "har_coefficients": list(HAR)})
    with pytest.raises(ValueError, match="reads 60 rows"):
        iv.Calibration.from_metadata({**calibration.to_metadata(), "rows": 20})
    windows = random_windows(8, 60, seed=2).astype(np.float64)
    longer = np.concatenate([random_windows(8, 30, seed=9).astype(np.float64), windows], axis=1)
    # Rows before the newest 60 change nothing: the volatility reads exactly its 60.
    assert calibration.volatility(longer) == pytest.approx(calibration.volatility(windows), rel=1e-12)


def test_the_range_variance_and_har_features_against_a_plain_reference():
    windows = random_windows(7, 20, seed=5).astype(np.float64)
    o, h, lo, c = (windows[..., k] for k in range(4))
    for b in range(len(windows)):
        days = []
        for t in range(1, 20):  # each day after the first: Garman-Klass + the overnight gap, squared
            gk = 0.5 * np.log(h[b, t] / lo[b, t]) ** 2 - (2 * np.log(2) - 1) * np.log(c[b, t] / o[b, t]) ** 2
            days.append(max(max(gk, 0.0) + np.log(o[b, t] / c[b, t - 1]) ** 2, iv.MIN_VARIANCE))
        day, week, month = (f[b] for f in iv.har_features(windows))
        assert (day, week, month) == pytest.approx(
            (np.log(days[-1]), np.log(np.mean(days[-5:])), np.log(np.mean(days)))
        )


def test_the_har_regression_recovers_coefficients_it_was_made_with():
    """Windows whose next day's log range variance follows known HAR coefficients exactly."""
    windows = random_windows(400, 20, seed=7).astype(np.float64)
    log_next = HAR[0] + sum(b * f for b, f in zip(HAR[1:], iv.har_features(windows), strict=True))
    # A next day with no gap and no body: its variance is half its squared log range.
    last_close = windows[:, -1, 3]
    span = np.sqrt(2 * np.exp(log_next))
    next_rows = np.column_stack([last_close, last_close * np.exp(span / 2), last_close * np.exp(-span / 2), last_close])
    assert iv.fit_har(windows, next_rows) == pytest.approx(HAR, abs=1e-9)


def test_every_night_stores_ordered_intervals_around_the_forecast(engine, shared_data, tiny_model):
    predict(engine, tiny_model, data=[shared_data], start="2017-10-02", device="cpu")
    bad = rows(
        engine,
        "SELECT COUNT(*) FROM predictions WHERE NOT (lo95 <= lo80 AND lo80 <= predicted_close "
        "AND predicted_close <= hi80 AND hi80 <= hi95) OR lo80 IS NULL",
    )
    total = rows(engine, "SELECT COUNT(*) FROM predictions")[0][0]
    assert bad == [(0,)] and total == rows(engine, "SELECT SUM(n_predictions) FROM runs")[0][0] > 250
    known = rows(
        engine,
        "SELECT in80, in95, actual_close BETWEEN lo80 AND hi80 FROM prediction_outcomes WHERE actual_close IS NOT NULL",
    )
    pending = rows(engine, "SELECT in80, in95 FROM prediction_outcomes WHERE actual_close IS NULL")
    assert len(known) + len(pending) == total and 9 <= len(pending) <= 10  # the newest night (and actx's last)
    assert all(in80 == inside and in95 in (0, 1) for in80, in95, inside in known)
    assert set(pending) == {(None, None)}
    assert all(in95 >= in80 for in80, in95, _ in known)  # inside 80% means inside 95%
    latest = rows(engine, "SELECT lo80, hi95 FROM latest_predictions WHERE ticker = 'aaxj'")
    assert latest and None not in latest[0]


def test_an_interval_uses_nothing_after_its_as_of(tmp_path, shared_data, tiny_model):
    from forecaster.db import store

    early = store.connect(f"sqlite:///{tmp_path / 'early.db'}")
    cut_copy(shared_data, tmp_path / "cut", "2017-10-31")
    predict(early, tiny_model, data=[tmp_path / "cut"], as_of="2017-10-31", device="cpu")
    later = store.connect(f"sqlite:///{tmp_path / 'later.db'}")  # everything up to 2017-11-10, backfilled
    predict(later, tiny_model, data=[shared_data], start="2017-10-25", device="cpu")
    query = "SELECT ticker, lo80, hi80, lo95, hi95 FROM predictions WHERE as_of = '2017-10-31' ORDER BY ticker"
    assert rows(early, query) == rows(later, query) and len(rows(early, query)) == 9


def test_verify_catches_a_graph_whose_interval_numbers_differ_from_its_metadata(tiny_model, tmp_path):
    model = onnx.load(str(tiny_model))
    q80 = load_model(tiny_model).calibration.quantiles[0]
    changed = 0
    for init in model.graph.initializer:
        value = numpy_helper.to_array(init)
        if value.size == 1 and np.isclose(float(value.reshape(-1)[0]), q80, rtol=1e-6):
            init.CopyFrom(numpy_helper.from_array((value * 1.05).astype(value.dtype), init.name))
            changed += 1
    assert changed >= 1, "the 80% quantile should be a constant of the graph"
    onnx.save(model, str(tmp_path / "bad.onnx"))
    assert verify(tiny_model).max_rel <= 1e-4
    with pytest.raises(ParityError, match="ONNX Runtime vs the NumPy reference, (lo80|hi80)"):
        verify(tmp_path / "bad.onnx")


def test_the_report_gives_coverage_width_and_score_beside_riskmetrics(db_url, shared_data, tiny_model, tmp_path):
    from forecaster.db import store

    engine = store.connect(db_url)
    ingest(engine, [shared_data])
    predict(engine, tiny_model, start="2017-09-01", device="cpu")
    result = CliRunner().invoke(main, ["report", "--db", db_url, "--plot", str(tmp_path / "r.png")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if line.startswith("ticker") and "rm_in80" in line).split()
    overall = next(line for line in lines if line.startswith("ALL") and "%" in line).split()
    figures = dict(zip(header, overall, strict=True))
    known = rows(engine, "SELECT COUNT(*) FROM prediction_outcomes WHERE actual_close IS NOT NULL")[0][0]
    assert int(figures["n"]) == known > 400 and figures["in80"].endswith("%") and float(figures["score_vs_rm"]) > 0
    assert "coverage in the calmest third of days" in result.output
    assert (tmp_path / "r.png").stat().st_size > 10_000
