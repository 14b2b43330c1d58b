import numpy as np

from forecaster.data.sample import generate_ohlc, write_sample_data


def test_same_seed_same_files(tmp_path):
    a = write_sample_data(tmp_path / "a", tickers=2, days=50, seed=3)
    b = write_sample_data(tmp_path / "b", tickers=2, days=50, seed=3)
    c = write_sample_data(tmp_path / "c", tickers=2, days=50, seed=4)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert a[0].read_bytes() != c[0].read_bytes()


def test_prices_are_valid_ohlc_on_business_days():
    f = generate_ohlc(2000, seed=7)
    assert (f[["Open", "High", "Low", "Close"]] > 0).all().all()
    assert (f["High"] >= f[["Open", "Close"]].max(axis=1)).all()
    assert (f["Low"] <= f[["Open", "Close"]].min(axis=1)).all()
    import pandas as pd

    assert (pd.to_datetime(f["Date"]).dt.day_of_week < 5).all()


def test_ar_coefficient_shows_in_the_returns():
    f = generate_ohlc(5000, seed=1, ar=0.6)
    r = np.diff(np.log(f["Close"].to_numpy()))
    assert 0.5 < np.corrcoef(r[:-1], r[1:])[0, 1] < 0.7
