"""The stacked LSTM that learns the spread: the network's candidate for the intervals.

Trained as issue 24 asks: one global model over the universe predicts the
distribution of the next log return, a Student-t whose log scale is the har60
HAR's (forecaster/intervals.py: its six features, its coefficients refitted on
the network's training windows as the starting point) plus the LSTM's
correction, read from the 59 days of the 60-row window:

    log scale = b0 + b . har60 features + head(LSTM(per-day inputs))

Per day the LSTM sees the log range variance and the log return, both
relative to the window's own 59-day mean range variance (so a $2 ticker and
a $2,000 one, quiet or wild, look alike). The head starts at zero, so the
untrained network is exactly that HAR; training (Adam, Student-t negative
log likelihood) stops after PATIENCE epochs without a better validation
likelihood and keeps the best epoch, the start (epoch 0) included. The scale is then
calibrated by split conformal like every other method in
benchmarks/interval_comparison.py.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch

from forecaster import intervals as iv
from forecaster.data.universe import Universe
from forecaster.data.windows import gather
from forecaster.training.config import ModelConfig
from forecaster.training.model import StackedLSTM

HIDDEN, LAYERS = 32, 2  # the point forecaster's defaults
BATCH = 1024
LR = 1e-3
MAX_EPOCHS = 8
PATIENCE = 2
FIT_WINDOWS = 200_000  # as the HAR: a seeded sample of the training windows
VAL_FRACTION = 0.2  # the newest fifth of them (by target date) decides when to stop
CHUNK = 20_000


def inputs(windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-day inputs (B, 59, 2), har60 features (B, 6)) for 60-row windows, float32."""
    w = windows.astype(np.float64)
    features = np.column_stack(iv.har60_features(w))
    v = iv.range_variance(w[:, -iv.LONG_ROWS :])
    returns = np.log(w[:, -iv.LONG_ROWS + 1 :, 3] / w[:, -iv.LONG_ROWS : -1, 3])
    level = features[:, 3:4]  # log of the 59-day mean range variance
    days = np.stack([np.log(v) - level, np.clip(returns * np.exp(-level / 2), -20, 20)], axis=-1)
    return torch.as_tensor(days, dtype=torch.float32), torch.as_tensor(features, dtype=torch.float32)


class SpreadNetwork(torch.nn.Module):
    def __init__(self, coefficients: tuple[float, ...], nu: float):
        super().__init__()
        config = ModelConfig(seq_len=iv.LONG_ROWS - 1, hidden=HIDDEN, layers=LAYERS, scaling="", n_features=2)
        self.lstm = StackedLSTM(config)
        self.linear = torch.nn.Linear(len(coefficients) - 1, 1)
        with torch.no_grad():
            self.linear.bias.fill_(coefficients[0])
            self.linear.weight.copy_(torch.tensor([coefficients[1:]], dtype=torch.float32))
        self.log_nu = torch.nn.Parameter(torch.tensor(math.log(nu - 2.0)))

    def forward(self, days: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).squeeze(-1) + self.lstm(days)  # the log scale


def nll(model: SpreadNetwork, log_scale: torch.Tensor, log_return: torch.Tensor) -> torch.Tensor:
    nu = 2.0 + torch.exp(model.log_nu)
    z2 = (log_return * torch.exp(-log_scale)) ** 2
    constant = torch.lgamma(nu / 2) - torch.lgamma((nu + 1) / 2) + 0.5 * torch.log(nu)
    return (log_scale + 0.5 * (nu + 1) * torch.log1p(z2 / nu) + constant).mean()


def train(universe: Universe, starts: np.ndarray, seed: int = 0) -> tuple[SpreadNetwork, dict]:
    """The network on the 60-row training windows starting at `starts` (in
    time order per ticker; the newest fifth by target date validates)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if len(starts) > FIT_WINDOWS:
        starts = np.sort(rng.choice(starts, FIT_WINDOWS, replace=False))
    target_dates = universe.dates[starts + iv.LONG_ROWS]
    cut = np.quantile(target_dates, 1 - VAL_FRACTION)
    train_rows, val_rows = starts[target_dates <= cut], starts[target_dates > cut]
    data = {}
    for part, rows in (("train", train_rows), ("val", val_rows)):
        windows, next_close = gather(universe, rows, iv.LONG_ROWS)
        days, features = inputs(windows)
        target = torch.as_tensor(np.log(next_close.astype(np.float64) / windows[:, -1, 3]), dtype=torch.float32)
        data[part] = (days, features, target)
    coefficients, nu = iv.fit_student_t_scale(data["train"][1].double().numpy(), data["train"][2].double().numpy())
    model = SpreadNetwork(coefficients, nu)
    optimiser = torch.optim.Adam(model.parameters(), lr=LR)

    def validation() -> float:
        with torch.no_grad():
            days, features, target = data["val"]
            return float(nll(model, model(days, features), target))

    best, history, waited = validation(), [], 0
    best_state = {k: v.clone() for k, v in model.state_dict().items()}  # epoch 0: the HAR itself
    history.append({"epoch": 0, "val_nll": best, "seconds": 0.0})
    started = time.perf_counter()
    for epoch in range(1, MAX_EPOCHS + 1):
        model.train()
        order = torch.randperm(len(train_rows))
        days, features, target = data["train"]
        for i in range(0, len(order), BATCH):
            batch = order[i : i + BATCH]
            optimiser.zero_grad()
            loss = nll(model, model(days[batch], features[batch]), target[batch])
            loss.backward()
            optimiser.step()
        model.eval()
        score = validation()
        history.append({"epoch": epoch, "val_nll": score, "seconds": time.perf_counter() - started})
        print(f"  network epoch {epoch}: validation NLL {score:.5f} (HAR {history[0]['val_nll']:.5f})", file=sys.stderr)
        if score < best - 1e-5:
            best, waited = score, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited >= PATIENCE:
                break
    model.load_state_dict(best_state)
    kept = min(history, key=lambda h: h["val_nll"])["epoch"]
    return model, {"history": history, "kept_epoch": kept, "train_windows": len(train_rows), "nu_start": nu}


def scale(model: SpreadNetwork, universe: Universe, starts: np.ndarray) -> np.ndarray:
    """(B,) the network's scale for the 60-row windows starting at `starts`."""
    out = np.empty(len(starts))
    with torch.no_grad():
        for i in range(0, len(starts), CHUNK):
            windows, _ = gather(universe, starts[i : i + CHUNK], iv.LONG_ROWS)
            out[i : i + CHUNK] = torch.exp(model(*inputs(windows))).double().numpy()
    return np.maximum(out, iv.MIN_VOLATILITY)
