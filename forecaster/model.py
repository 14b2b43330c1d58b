"""The stacked LSTM, and the wrappers that put scaling inside the model.

`StackedLSTM` is the tutorial's network: nn.LSTM(4 -> hidden, layers) and a
linear head, here read on the last step only (the next close is all we
predict). The forecaster wrappers take raw OHLC windows in price units and
return the next close in price units, so training, evaluation and the
exported ONNX graph all share one definition of the scaling.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .windows import CLOSE, FEATURES

SCALINGS = ("relative", "minmax")


@dataclass
class ModelConfig:
    seq_len: int = 20
    hidden: int = 32
    layers: int = 2
    n_features: int = len(FEATURES)
    scaling: str = "relative"


class StackedLSTM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.lstm = nn.LSTM(config.n_features, config.hidden, config.layers, batch_first=True)
        self.head = nn.Linear(config.hidden, 1)
        # A zero head makes the untrained model output 0: under relative
        # scaling that is "no change", i.e. exactly the naive forecast, so
        # training starts from the baseline and learns departures from it.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)              # (B, T, H), zero initial state
        return self.head(out[:, -1]).squeeze(-1)  # (B,)


class RelativeForecaster(nn.Module):
    """Window-relative scaling: each window is divided by its last close, so
    the network sees moves, not price levels, and needs no per-ticker numbers.

    x_scaled = (ohlc / last_close - 1) * gain;  next = last_close * (1 + y / gain)
    `gain` (one number, fitted on training windows) brings moves to unit scale.
    """

    def __init__(self, net: StackedLSTM, gain: float):
        super().__init__()
        self.net = net
        self.register_buffer("gain", torch.tensor(float(gain)))

    def scale_inputs(self, ohlc: torch.Tensor) -> torch.Tensor:
        last = ohlc[:, -1:, CLOSE:CLOSE + 1]  # (B, 1, 1)
        return (ohlc / last - 1.0) * self.gain

    def scale_target(self, next_close: torch.Tensor, ohlc: torch.Tensor) -> torch.Tensor:
        return (next_close / ohlc[:, -1, CLOSE] - 1.0) * self.gain

    def unscale(self, y: torch.Tensor, ohlc: torch.Tensor) -> torch.Tensor:
        return ohlc[:, -1, CLOSE] * (1.0 + y / self.gain)

    def forward(self, ohlc: torch.Tensor) -> torch.Tensor:
        assert ohlc.dim() == 3 and ohlc.shape[-1] == len(FEATURES), "ohlc must be (batch, seq_len, 4)"
        return self.unscale(self.net(self.scale_inputs(ohlc)), ohlc)


class MinMaxForecaster(nn.Module):
    """The tutorial's scaling done right: per ticker and column to [-1, 1],
    fitted on that ticker's training rows only. Needs the ticker's index into
    the table of training tickers; a ticker the model never saw has no scaler.
    """

    def __init__(self, net: StackedLSTM, lows: torch.Tensor, highs: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("lows", lows.to(torch.float32))     # (n_tickers, 4)
        self.register_buffer("spans", (highs - lows).clamp_min(1e-9).to(torch.float32))

    def _bounds(self, ticker_index: torch.Tensor):
        return self.lows[ticker_index], self.spans[ticker_index]  # (B, 4) each

    def scale_inputs(self, ohlc: torch.Tensor, ticker_index: torch.Tensor) -> torch.Tensor:
        low, span = self._bounds(ticker_index)
        return 2.0 * (ohlc - low[:, None, :]) / span[:, None, :] - 1.0

    def scale_target(self, next_close, ohlc, ticker_index):
        low, span = self._bounds(ticker_index)
        return 2.0 * (next_close - low[:, CLOSE]) / span[:, CLOSE] - 1.0

    def unscale(self, y, ohlc, ticker_index):
        low, span = self._bounds(ticker_index)
        return (y + 1.0) / 2.0 * span[:, CLOSE] + low[:, CLOSE]

    def forward(self, ohlc: torch.Tensor, ticker_index: torch.Tensor) -> torch.Tensor:
        assert ohlc.dim() == 3 and ohlc.shape[-1] == len(FEATURES), "ohlc must be (batch, seq_len, 4)"
        return self.unscale(self.net(self.scale_inputs(ohlc, ticker_index)), ohlc, ticker_index)


def build_forecaster(config: ModelConfig, scaling: dict, state_dict: dict | None = None) -> nn.Module:
    """Rebuild a forecaster from plain settings (as stored in a checkpoint)."""
    net = StackedLSTM(config)
    if scaling["method"] == "relative":
        model = RelativeForecaster(net, scaling["gain"])
    elif scaling["method"] == "minmax":
        model = MinMaxForecaster(net, torch.tensor(scaling["lows"], dtype=torch.float64),
                                 torch.tensor(scaling["highs"], dtype=torch.float64))
    else:
        raise ValueError(f"unknown scaling {scaling['method']!r}; choose from {SCALINGS}")
    if state_dict is not None:
        net.load_state_dict(state_dict)
    return model.eval()


def predict(model: nn.Module, ohlc, ticker_index=None) -> torch.Tensor:
    """Next closes for raw windows, through whichever forecaster this is."""
    ohlc = torch.as_tensor(ohlc, dtype=torch.float32)
    with torch.no_grad():
        if isinstance(model, MinMaxForecaster):
            return model(ohlc, torch.as_tensor(ticker_index, dtype=torch.long))
        return model(ohlc)
