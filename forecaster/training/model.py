"""The stacked LSTM, and the forecaster that puts the scaling inside the model.

`StackedLSTM` is the tutorial's network: nn.LSTM(4 -> hidden, layers) and a
linear head, here read on the last step only (the next close is all we
predict). `Forecaster` takes raw OHLC windows in price units and returns the
next close in price units, applying the scaling (scaling.py) with its fitted
numbers kept as buffers, so training, evaluation and the exported ONNX graph
share one definition of it.
"""

from __future__ import annotations

import torch
from numpy.typing import ArrayLike
from torch import nn

from ..features import FEATURES
from ..scaling import Scaling, from_metadata
from .config import ModelConfig


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
        out, _ = self.lstm(x)  # (B, T, H), zero initial state
        return self.head(out[:, -1]).squeeze(-1)  # (B,)


class Forecaster(nn.Module):
    """Raw windows (B, T, 4) in, next closes (B,) out; `ticker_index` (B,)
    only for a scaling that needs it (scaling.uses_ticker_index)."""

    def __init__(self, net: StackedLSTM, scaling: Scaling):
        super().__init__()
        self.net = net
        self.scaling = scaling
        self._constants = list(scaling.constants())
        for name, value in scaling.constants().items():
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32))

    def _c(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self._constants}

    def scale_inputs(self, ohlc: torch.Tensor, ticker_index: torch.Tensor | None = None) -> torch.Tensor:
        return self.scaling.scale_inputs(ohlc, self._c(), ticker_index)

    def scale_target(
        self, next_close: torch.Tensor, ohlc: torch.Tensor, ticker_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.scaling.scale_target(next_close, ohlc, self._c(), ticker_index)

    def unscale(self, y: torch.Tensor, ohlc: torch.Tensor, ticker_index: torch.Tensor | None = None) -> torch.Tensor:
        return self.scaling.unscale(y, ohlc, self._c(), ticker_index)

    def forward(self, ohlc: torch.Tensor, ticker_index: torch.Tensor | None = None) -> torch.Tensor:
        assert ohlc.dim() == 3 and ohlc.shape[-1] == len(FEATURES), "ohlc must be (batch, seq_len, 4)"
        return self.unscale(self.net(self.scale_inputs(ohlc, ticker_index)), ohlc, ticker_index)


def build_forecaster(config: ModelConfig, scaling: Scaling | dict, state_dict: dict | None = None) -> Forecaster:
    """Rebuild a forecaster from plain settings (as stored in a checkpoint)."""
    net = StackedLSTM(config)
    if state_dict is not None:
        net.load_state_dict(state_dict)
    scaling = scaling if isinstance(scaling, Scaling) else from_metadata(scaling)
    return Forecaster(net, scaling).eval()


def predict(model: Forecaster, ohlc: ArrayLike, ticker_index: ArrayLike | None = None) -> torch.Tensor:
    """Next closes for raw windows, with gradients off."""
    ohlc = torch.as_tensor(ohlc, dtype=torch.float32)
    index = torch.as_tensor(ticker_index, dtype=torch.long) if model.scaling.uses_ticker_index else None
    with torch.no_grad():
        return model(ohlc, index)
