import numpy as np
import pytest
from helpers import synthetic_series

from forecaster.data.prices import make_windows
from forecaster.errors import DataError
from forecaster.training.windows import check_history, fit_scaling, split


def test_windows_and_next_close_targets():
    ohlc = np.arange(40, dtype=float).reshape(10, 4)  # close of row r = 4r + 3
    windows, targets = make_windows(ohlc, 3)
    assert windows.shape == (7, 3, 4)
    assert windows[0, -1, 3] == 11 and targets[0] == 15  # target = next row's close
    assert windows[-1, -1, 3] == 35 and targets[-1] == 39


def test_split_is_chronological_with_validation_before_test():
    s = split(100, 0.2, 0.1)
    assert (s.train_end, s.val_end, s.n, s.n_test) == (72, 80, 100, 20)


@pytest.mark.parametrize("method", ["relative", "minmax"])
def test_no_leakage_test_prices_change_neither_scaling_nor_training_windows(method):
    series = synthetic_series(days=200)
    seq_len = 20
    sp = split(len(series) - seq_len, 0.2, 0.1)
    before = fit_scaling(method, {"syn": series}, {"syn": sp}, seq_len)
    windows_before = make_windows(series.ohlc, seq_len)[0][: sp.val_end].copy()

    # Rewrite every price the training part never saw (test targets onward).
    series.ohlc[sp.last_training_row(seq_len) + 1 :] *= 7.0
    after = fit_scaling(method, {"syn": series}, {"syn": sp}, seq_len)
    windows_after, targets_after = make_windows(series.ohlc, seq_len)
    assert before == after
    np.testing.assert_array_equal(windows_before, windows_after[: sp.val_end])
    # ...and the test targets did change, so the check above could fail.
    assert targets_after[sp.val_end :].mean() > 5 * windows_before[:, -1, 3].mean()


def test_too_little_history_names_the_ticker_and_row_count():
    with pytest.raises(DataError, match=r"ticker tiny has 25 rows; with --seq-len 20 it needs at least 30"):
        check_history(synthetic_series("tiny", days=25), 20)


def test_every_ticker_that_existed_ends_scored_stale_or_skipped(engine, tmp_path):
    # "halt" stops trading for two months and has no row at all in the span a
    # run reads (the last seq_len + slack dates), though it traded again later.
    from conftest import write_file

    from forecaster.data.ingest import ingest
    from forecaster.data.prices import latest_windows
    from forecaster.data.sample import generate_ohlc

    busy = generate_ohlc(300, seed=1)
    halt = busy[(busy["Date"] <= "2017-06-30") | (busy["Date"] >= "2017-09-01")]
    write_file(tmp_path / "d", "busy.us.txt", busy.to_csv(index=False))
    write_file(tmp_path / "d", "halt.us.txt", halt.to_csv(index=False))
    write_file(tmp_path / "d", "young.us.txt", busy[busy["Date"] >= "2017-08-01"].to_csv(index=False))
    ingest(engine, [tmp_path / "d"])
    batch = latest_windows(engine, "2017-08-15", seq_len=20)
    assert batch.tickers == ["busy"] and batch.stale == ["halt"]
    assert batch.skipped == {"young": "only 11 rows up to 2017-08-15, the model needs 20"}
