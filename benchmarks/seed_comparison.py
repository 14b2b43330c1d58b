"""The tutorial's exact recipe beside our default, on the same aaxj test days.

Tutorial (../shared/docs/seed.md): aaxj on a business-day calendar from
2010-10-11 to 2017-10-11 (holidays forward-filled), MinMax to [-1, 1] fitted
on ALL rows (the leak), targets = the next close for each of the 20 steps,
2x32 LSTM with a linear head on every step, Adam 0.01, full batch, 100
epochs, the last 20% of windows as test, scored on the last step in dollars.

Ours: `forecaster train --tickers aaxj` defaults on the real trading rows of
the same date range. Both are scored on the test target dates they share
(real trading days only), next to naive. Five seeds each.
Run: make seed-comparison
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import MinMaxScaler
from torch import nn

from forecaster.data.ingest import ingest
from forecaster.data.prices import Series, load_series
from forecaster.db import store
from forecaster.training.metrics import accuracy
from forecaster.training.train import TrainConfig, train

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
START, END, SEQ = "2010-10-11", "2017-10-11", 20


class TutorialLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 32, 2, batch_first=True)
        self.head = nn.Linear(32, 1)

    def forward(self, x):
        return self.head(self.lstm(x)[0]).squeeze(-1)  # a prediction on every step


def tutorial_recipe(frame: pd.DataFrame, seed: int, epochs: int) -> pd.Series:
    """Held-out last-step predictions in dollars, indexed by target date."""
    torch.manual_seed(seed)  # the recipe as the tutorial runs it: global seeding
    np.random.seed(seed)
    days = frame.reindex(pd.bdate_range(START, END)).ffill()
    cols = ["open", "high", "low", "close"]
    scalers = {c: MinMaxScaler((-1, 1)).fit(days[[c]]) for c in cols}  # fitted on ALL rows
    scaled = np.column_stack([scalers[c].transform(days[[c]])[:, 0] for c in cols])
    target = np.roll(scaled[:, 3], -1)[:-1]
    x = np.lib.stride_tricks.sliding_window_view(scaled[:-1], SEQ, axis=0).transpose(0, 2, 1)
    y = np.lib.stride_tricks.sliding_window_view(target, SEQ)
    n_test = int(round(len(x) * 0.2))
    x_train, y_train = torch.tensor(x[:-n_test], dtype=torch.float32), torch.tensor(y[:-n_test], dtype=torch.float32)
    model = TutorialLSTM()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x_train), y_train)
        loss.backward()
        opt.step()
    with torch.no_grad():
        last_step = model(torch.tensor(x[-n_test:], dtype=torch.float32))[:, -1].numpy()
    dollars = scalers["close"].inverse_transform(last_step[:, None])[:, 0]
    target_dates = days.index[SEQ:][-n_test:]
    return pd.Series(dollars, index=target_dates.strftime("%Y-%m-%d"))


def our_default(series: Series, seed: int, epochs: int) -> pd.Series:
    result = train({"aaxj": series}, TrainConfig(seed=seed, epochs=epochs))
    p = result.predictions["aaxj"]
    return pd.Series(p["predicted"], index=[result.universe.iso_date(r) for r in p["rows"]])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED / "ETFs" / "aaxj.us.txt"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=100)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        engine = store.connect(f"sqlite:///{tmp}/seed.db")
        ingest(engine, [args.data])
        full = load_series(engine, ["aaxj"])["aaxj"]
    keep = (full.dates >= START) & (full.dates <= END)
    series = Series("aaxj", full.dates[keep], full.ohlc[keep])
    frame = pd.DataFrame(series.ohlc, columns=["open", "high", "low", "close"], index=pd.to_datetime(series.dates))
    close = pd.Series(series.ohlc[:, 3], index=series.dates)
    previous = close.shift(1)

    runs = {"tutorial recipe": [], "forecaster default": []}
    seconds = {k: 0.0 for k in runs}
    for seed in range(args.seeds):
        for name, fn in (
            ("tutorial recipe", lambda s: tutorial_recipe(frame, s, args.epochs)),
            ("forecaster default", lambda s: our_default(series, s, args.epochs)),
        ):
            start = time.perf_counter()
            runs[name].append(fn(seed))
            seconds[name] += time.perf_counter() - start
            print(f"{name} seed {seed} done", file=sys.stderr, flush=True)

    # Common targets: real trading days in both test sets.
    common = sorted(
        set(runs["tutorial recipe"][0].index) & set(runs["forecaster default"][0].index) & set(close.index[1:])
    )
    actual, last = close[common].to_numpy(), previous[common].to_numpy()
    naive = accuracy(last, actual, last)
    print(
        f"aaxj, {len(common)} common held-out trading days {common[0]}..{common[-1]}, "
        f"{args.seeds} seeds, {args.epochs} epochs\n"
    )
    print("| recipe | RMSE (mean ± sd over seeds) | MAE | RMSE / naive | seconds per run |")
    print("|---|---|---|---|---|")
    for name, series_list in runs.items():
        m = [accuracy(s[common].to_numpy(), actual, last) for s in series_list]
        rmse = np.array([x["rmse"] for x in m])
        print(
            f"| {name} | {rmse.mean():.3f} ± {rmse.std():.3f} | {np.mean([x['mae'] for x in m]):.3f} | "
            f"{rmse.mean() / naive['rmse']:.3f} | {seconds[name] / args.seeds:.1f} |"
        )
    print(f"| naive (previous close) | {naive['rmse']:.3f} | {naive['mae']:.3f} | 1.000 | 0 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
