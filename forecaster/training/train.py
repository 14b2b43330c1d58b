"""Training: config, data, scaling, model, loop, evaluation, checkpoint.

Fixes the tutorial's mistakes: scaling is fitted on training rows only, the
best epoch is chosen on a validation slice from the end of the training part,
gradients are clipped, every ticker is scored on held-out days next to the
naive forecast, and the checkpoint carries everything needed to rebuild it.
"""

from __future__ import annotations

import copy
import platform
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .. import __version__
from ..clock import utc_now
from ..data.prices import Series, data_hash, make_windows
from ..errors import DataError
from ..features import CLOSE, FEATURES
from .allocator import reuse_freed_memory
from .config import PRECISIONS, TrainConfig
from .metrics import accuracy
from .model import Forecaster, build_forecaster, predict
from .precision import resolve as resolve_precision
from .windows import Split, check_history, fit_scaling, split

PARITY_WINDOWS_PER_TICKER = 64
# |RMSE ratio - 1| up to this is float noise, not skill: a model that repeats
# the last close in float32 rounds each price by up to 6e-8 of itself, which
# moved its ratio to naive by 1e-7 on aaxj and can reach ~1e-5 on a $2 ticker.
LEVEL_WITH_NAIVE = 1e-4
PARITY_WINDOWS_MAX = 512


@dataclass
class TickerData:
    """One ticker's raw windows and where its split falls."""

    series: Series
    windows: np.ndarray  # (n, seq_len, 4) raw prices
    targets: np.ndarray  # (n,) next close
    split: Split
    index: int  # row in the minmax table


@dataclass
class TrainResult:
    model: Forecaster
    metrics: dict
    history: dict
    checkpoint: dict
    predictions: dict = field(default_factory=dict)  # ticker -> test dates, actual, predicted, last
    precision: str = "fp32"  # what the training really ran in
    warnings: list[str] = field(default_factory=list)


def prepare(series: dict[str, Series], config: TrainConfig) -> dict[str, TickerData]:
    data = {}
    for i, (ticker, s) in enumerate(series.items()):
        check_history(s, config.seq_len)
        windows, targets = make_windows(s.ohlc, config.seq_len)
        data[ticker] = TickerData(
            s, windows, targets, split(len(targets), config.test_fraction, config.val_fraction), i
        )
    return data


def train(series: dict[str, Series], config: TrainConfig, *, progress: bool = False) -> TrainResult:
    """Fit one model on all `series` and evaluate it on each ticker's held-out days.
    The same seed gives the same model; torch's global random state is left as it was."""
    if config.precision not in PRECISIONS:
        raise DataError(f"unknown precision {config.precision!r}: choose {', '.join(PRECISIONS)}")
    precision, precision_warning = resolve_precision(config.precision, config.hidden, config.layers, len(FEATURES))
    with torch.random.fork_rng(devices=[]):  # seeded here, restored on leaving
        torch.manual_seed(config.seed)
        return _train(series, config, precision, precision_warning, progress)


def _train(
    series: dict[str, Series], config: TrainConfig, precision: str, precision_warning: str | None, progress: bool
) -> TrainResult:
    data = prepare(series, config)
    scaling = fit_scaling(config.scaling, series, {t: d.split for t, d in data.items()}, config.seq_len)
    model = build_forecaster(config.model_config(), scaling)

    x_train, y_train = _scaled(model, data, "train")
    x_val, y_val = _scaled(model, data, "val")
    with reuse_freed_memory():  # half the time of a full-batch epoch was page faults
        history = _fit(model, x_train, y_train, x_val, y_val, config, precision, progress)

    metrics, predictions = evaluate(model, data)
    # Epoch 0 kept: no epoch beat the starting weights on validation. Under
    # relative scaling those output "no change", i.e. the naive forecast itself.
    metrics["overall"].update(
        kept_epoch=history["best_epoch"],
        is_naive=history["best_epoch"] == 0 and scaling.method == "relative",
        precision=precision,
    )
    extent = float(max(x_train.abs().max(), x_val.abs().max()))
    checkpoint = {
        "model_config": asdict(config.model_config()),
        "train_config": asdict(config),
        "state_dict": model.net.state_dict(),
        "scaling": scaling.to_metadata(),
        "features": list(FEATURES),
        "provenance": {**provenance(data, config), "train_input_extent": extent, "precision": precision},
        "metrics": metrics,
        "history": history,
        **parity_windows(data),
    }
    return TrainResult(
        model, metrics, history, checkpoint, predictions, precision, [precision_warning] if precision_warning else []
    )


def _part(d: TickerData, part: str) -> slice:
    s = d.split
    return {"train": slice(0, s.train_end), "val": slice(s.train_end, s.val_end), "test": slice(s.val_end, s.n)}[part]


def _scaled(model: Forecaster, data: dict[str, TickerData], part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled (inputs, targets) of one part, all tickers stacked, as float32 tensors."""
    xs, ys = [], []
    for d in data.values():
        window = torch.as_tensor(np.ascontiguousarray(d.windows[_part(d, part)]), dtype=torch.float32)
        target = torch.tensor(d.targets[_part(d, part)], dtype=torch.float32)
        index = torch.full((len(window),), d.index, dtype=torch.long)
        with torch.no_grad():
            xs.append(model.scale_inputs(window, index))
            ys.append(model.scale_target(target, window, index))
    return torch.cat(xs), torch.cat(ys)


def _fit(model, x_train, y_train, x_val, y_val, config: TrainConfig, precision: str, progress: bool) -> dict:
    """Adam on MSE with clipped gradients; keeps the weights of the best validation epoch."""
    net = model.net
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.MSELoss()
    batch = config.batch_size if config.batch_size > 0 else len(x_train)
    shuffler = torch.Generator().manual_seed(config.seed)
    history = {"train_loss": [], "val_loss": [], "best_epoch": 0}
    # Epoch 0 (the untrained weights) is a candidate too: if no epoch improves
    # on it, validation says training did not help, and we keep it.
    best_loss, best_state = _loss(net, loss_fn, x_val, y_val), copy.deepcopy(net.state_dict())
    history["initial_val_loss"] = best_loss

    bar = tqdm(range(1, config.epochs + 1), desc="train", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        net.train()
        order = torch.randperm(len(x_train), generator=shuffler)
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                predicted = net(x_train[idx])
            loss = loss_fn(predicted.float(), y_train[idx])
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), config.clip_norm)
            optimizer.step()
            total += loss.item() * len(idx)
        val_loss = _loss(net, loss_fn, x_val, y_val)
        history["train_loss"].append(total / len(x_train))
        history["val_loss"].append(val_loss)
        if val_loss < best_loss:  # a later blow-up can never replace a good epoch
            best_loss, best_state, history["best_epoch"] = val_loss, copy.deepcopy(net.state_dict()), epoch
        bar.set_postfix(train=f"{total / len(x_train):.4f}", val=f"{val_loss:.4f}", best=history["best_epoch"])
    net.load_state_dict(best_state)
    net.eval()
    return history


def _loss(net, loss_fn, x, y) -> float:
    net.eval()
    with torch.no_grad():
        return loss_fn(net(x), y).item()


def evaluate(model: nn.Module, data: dict[str, TickerData]) -> tuple[dict, dict]:
    """Per-ticker and overall held-out metrics, in price units, beside naive."""
    per_ticker, predictions = {}, {}
    seq_len = next(iter(data.values())).windows.shape[1]
    for ticker, d in data.items():
        part = _part(d, "test")
        windows, actual = d.windows[part], d.targets[part]
        predicted = predict(model, np.ascontiguousarray(windows), np.full(len(windows), d.index)).double().numpy()
        last = windows[:, -1, CLOSE]
        dates = d.series.dates[d.split.val_end + seq_len :]
        m = accuracy(predicted, actual, last)
        per_ticker[ticker] = {
            "test_rmse": m["rmse"],
            "test_mae": m["mae"],
            "naive_rmse": m["naive_rmse"],
            "naive_mae": m["naive_mae"],
            "ratio": m["ratio"],
            "direction_accuracy": m["direction_accuracy"],
            "naive_direction_accuracy": m["naive_direction_accuracy"],
            "n_test": m["n"],
            "test_start": str(dates[0]),
            "test_end": str(dates[-1]),
        }
        predictions[ticker] = {"dates": dates, "actual": actual, "predicted": predicted, "last": last}
    ratios = [m["ratio"] for m in per_ticker.values()]
    overall = {
        "n_tickers": len(per_ticker),
        "n_test": sum(m["n_test"] for m in per_ticker.values()),
        "mean_ratio": float(np.mean(ratios)),
        "median_ratio": float(np.median(ratios)),
        "tickers_worse_than_naive": sum(compared_with_naive(r) == "worse" for r in ratios),
        "tickers_level_with_naive": sum(compared_with_naive(r) == "level" for r in ratios),
    }
    return {"tickers": per_ticker, "overall": overall}, predictions


def compared_with_naive(ratio: float) -> str:
    """ "better", "level" or "worse": a ratio within float noise of 1 (a model
    that repeats the last close, computed in float32) is level, not worse."""
    if abs(ratio - 1.0) <= LEVEL_WITH_NAIVE:
        return "level"
    return "better" if ratio < 1.0 else "worse"


def provenance(data: dict[str, TickerData], config: TrainConfig) -> dict:
    """Where the model came from: tickers, date ranges, data hash, library versions."""

    def last_training_date(d):
        return str(d.series.dates[d.split.last_training_row(config.seq_len)])

    return {
        "tickers": {
            t: {
                "first_date": str(d.series.dates[0]),
                "last_date": str(d.series.dates[-1]),
                "rows": len(d.series),
                "train_end_date": last_training_date(d),
            }
            for t, d in data.items()
        },
        "data_sha256": data_hash({t: d.series for t, d in data.items()}),
        "created_at": utc_now(),
        "versions": {
            "forecaster": __version__,
            "torch": str(torch.__version__),
            "numpy": str(np.__version__),
            "python": platform.python_version(),
        },
    }


def parity_windows(data: dict[str, TickerData]) -> dict:
    """A few held-out raw windows kept in the checkpoint, so export can check
    ONNX against torch on real data without a database."""
    windows, index = [], []
    for d in data.values():
        test = d.windows[_part(d, "test")][-PARITY_WINDOWS_PER_TICKER:]
        windows.append(test)
        index.extend([d.index] * len(test))
    stacked = np.concatenate(windows)[-PARITY_WINDOWS_MAX:]
    return {
        "parity_windows": torch.as_tensor(np.ascontiguousarray(stacked), dtype=torch.float32),
        "parity_ticker_index": torch.as_tensor(index[-PARITY_WINDOWS_MAX:], dtype=torch.long),
    }
