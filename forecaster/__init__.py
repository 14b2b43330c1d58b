"""forecaster: nightly next-day close forecasts from daily OHLC with a stacked LSTM."""

__version__ = "0.1.0"
