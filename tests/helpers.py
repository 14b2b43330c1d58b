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


def cut_copy(shared_data, dest, last_date):
    """The real files with only the rows up to `last_date`; returns the rows cut off per file."""
    cut = {}
    for src in shared_data.rglob("*.us.txt"):
        lines = src.read_text().splitlines(keepends=True)
        keep = [lines[0]] + [l for l in lines[1:] if l[:10] <= last_date]
        cut[src.name] = [l for l in lines[1:] if l[:10] > last_date]
        target = dest / src.parent.name / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(keep))
    return cut


def append_next_day(dest, cut, tickers=None):
    """Append each file's next cut-off row (only these tickers' files, if given)."""
    for path in dest.rglob("*.us.txt"):
        if cut[path.name] and (tickers is None or path.name.split(".")[0] in tickers):
            with open(path, "a") as fh:
                fh.write(cut[path.name].pop(0))
