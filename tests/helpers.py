"""Small builders shared by tests (no fixtures: plain functions)."""
from __future__ import annotations

import numpy as np
import torch

from forecaster import checkpoint
from forecaster.train import TrainConfig, train

from forecaster.sample import generate_ohlc
from forecaster.windows import Series


def synthetic_series(ticker: str = "syn", days: int = 300, seed: int = 0, ar: float = 0.0) -> Series:
    f = generate_ohlc(days, seed, ar=ar)
    return Series(ticker, f["Date"].to_numpy(dtype=object),
                  np.array(f[["Open", "High", "Low", "Close"]], dtype=np.float64))


def make_checkpoint(path, scaling="relative"):
    """A tiny trained model whose weights are then randomised, so that every
    part of the network shows in its output (a zero head would hide the LSTM)."""
    series = {t: synthetic_series(t, days=150, seed=i) for i, t in enumerate(["aa", "bb"])}
    result = train(series, TrainConfig(epochs=1, hidden=8, layers=2, scaling=scaling))
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=gen) * 0.3 for k, v in result.checkpoint["state_dict"].items()}
    checkpoint.save(path, {**result.checkpoint, "state_dict": state})
    return path
