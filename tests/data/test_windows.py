import numpy as np
import pytest
from helpers import synthetic_series

from forecaster.data.universe import Universe
from forecaster.data.windows import gather, make_windows
from forecaster.errors import DataError
from forecaster.training.split import check_history, fit_scaling, index_windows, split


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
    universe = Universe.from_series({"syn": series})
    index = index_windows(universe, seq_len, 0.2, 0.1)
    sp = index.splits[0]
    before = fit_scaling(method, universe, index)
    trainval = np.concatenate([index.train, index.val])
    windows_before = gather(universe, trainval, seq_len)[0].copy()

    # Rewrite every price the training part never saw (test targets onward).
    universe.ohlc[sp.last_training_row(seq_len) + 1 :] *= 7.0
    after = fit_scaling(method, universe, index)
    assert before == after
    np.testing.assert_array_equal(windows_before, gather(universe, trainval, seq_len)[0])
    # ...and the test targets did change, so the check above could fail.
    test_targets = gather(universe, index.test, seq_len)[1]
    assert test_targets.mean() > 5 * windows_before[:, -1, 3].mean()


def test_windows_are_index_ranges_into_the_prices_split_per_ticker_in_time_order():
    series = {t: synthetic_series(t, days=n, seed=i) for i, (t, n) in enumerate([("a", 120), ("b", 60)])}
    universe = Universe.from_series(series)
    index = index_windows(universe, 20, 0.2, 0.1)
    assert [(s.train_end, s.val_end, s.n) for s in index.splits] == [(72, 80, 100), (29, 32, 40)]
    assert len(index.train) + len(index.val) + len(index.test) == 140  # every window once
    windows, targets = gather(universe, index.test[:1], 20)  # ticker a's first test window: rows 80..99
    np.testing.assert_array_equal(windows[0], series["a"].ohlc[80:100].astype(np.float32))
    assert targets[0] == np.float32(series["a"].ohlc[100, 3])
    # b's rows follow a's 120 rows: its windows start at row 120.
    assert index.train[72:].tolist() == list(range(120, 149))
    assert index.val.tolist() == [*range(72, 80), 149, 150, 151] and index.test[-1] == 159


def test_too_little_history_names_the_ticker_and_row_count():
    with pytest.raises(DataError, match=r"ticker tiny has 25 rows; with --seq-len 20 it needs at least 30"):
        check_history("tiny", 25, 20)


def test_every_ticker_that_existed_ends_scored_stale_or_skipped(engine, tmp_path):
    # "halt" stops trading for two months and has no row at all in the span a
    # run reads (the last seq_len + slack dates), though it traded again later.
    from conftest import write_file

    from forecaster.data.ingest import ingest
    from forecaster.data.sample import generate_ohlc
    from forecaster.data.windows import latest_windows

    busy = generate_ohlc(300, seed=1)
    halt = busy[(busy["Date"] <= "2017-06-30") | (busy["Date"] >= "2017-09-01")]
    write_file(tmp_path / "d", "busy.us.txt", busy.to_csv(index=False))
    write_file(tmp_path / "d", "halt.us.txt", halt.to_csv(index=False))
    write_file(tmp_path / "d", "young.us.txt", busy[busy["Date"] >= "2017-08-01"].to_csv(index=False))
    ingest(engine, [tmp_path / "d"])
    batch = latest_windows(engine, "2017-08-15", seq_len=20)
    assert batch.tickers == ["busy"] and batch.stale == ["halt"]
    assert batch.skipped == {"young": "only 11 rows up to 2017-08-15, the model needs 20"}


def test_latest_windows_are_each_tickers_own_last_rows_up_to_as_of(any_engine, tmp_path):
    # Tickers read in one pass beside ones read on their own (a gap in the span,
    # a short history), and rows after as_of that must not be seen.
    from conftest import write_file

    from forecaster.data.ingest import ingest
    from forecaster.data.prices import load_series
    from forecaster.data.sample import generate_ohlc
    from forecaster.data.windows import latest_windows

    full = {f"t{i}": generate_ohlc(120, seed=i) for i in range(6)}
    full["t2"] = full["t2"].drop(full["t2"].index[-12:-8])  # a gap just before as_of
    full["t4"] = full["t4"].iloc[-12:]  # 8 rows up to as_of, 4 after it
    for name, frame in full.items():
        write_file(tmp_path / "d", f"{name}.us.txt", frame.to_csv(index=False))
    ingest(any_engine, [tmp_path / "d"])
    as_of = full["t0"]["Date"].iloc[-5]
    batch = latest_windows(any_engine, as_of, seq_len=10)
    assert batch.tickers == ["t0", "t1", "t2", "t3", "t5"]
    assert list(batch.skipped) == ["t4"]
    series = load_series(any_engine, batch.tickers)
    for ticker, window, last_close in zip(batch.tickers, batch.windows, batch.last_close, strict=True):
        upto = series[ticker].ohlc[series[ticker].dates <= as_of]
        np.testing.assert_array_equal(window, upto[-10:].astype(np.float32), err_msg=ticker)
        assert last_close == upto[-1, 3]
