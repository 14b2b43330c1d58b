"""How raw OHLC windows become the network's inputs, and its output a price.

One definition that everyone asks: training and export apply it to torch
tensors, the NumPy reference to arrays, scoring reads `uses_ticker_index`.
The formulas use only arithmetic and indexing, which NumPy and torch share,
so the same lines run in both. The fitted numbers travel as plain data
(`to_metadata` / `from_metadata`: checkpoint and ONNX metadata, no pickle);
`constants()` gives them as arrays, which torch keeps as buffers.

A new scaling is one class here plus its fitting in training/split.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .errors import ForecasterError
from .features import CLOSE

Array = Any  # a NumPy array or a torch tensor: the formulas below accept either


class Scaling:
    """The interface; see RelativeScaling and MinMaxScaling."""

    method: ClassVar[str]
    uses_ticker_index: ClassVar[bool]  # does scaling a window need its ticker's row of numbers?

    def constants(self) -> dict[str, np.ndarray]:
        """The fitted numbers the formulas use, by name, as float64 arrays."""
        raise NotImplementedError

    def to_metadata(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_plain(cls, data: dict) -> Scaling:
        """The scaling from its to_metadata() form."""
        raise NotImplementedError

    def scale_inputs(self, ohlc: Array, c: dict[str, Array], ticker_index: Array = None) -> Array:
        """(B, T, 4) prices -> (B, T, 4) network inputs."""
        raise NotImplementedError

    def scale_target(self, next_close: Array, ohlc: Array, c: dict[str, Array], ticker_index: Array = None) -> Array:
        """(B,) next closes -> (B,) network targets."""
        raise NotImplementedError

    def unscale(self, y: Array, ohlc: Array, c: dict[str, Array], ticker_index: Array = None) -> Array:
        """(B,) network outputs -> (B,) next closes in price units."""
        raise NotImplementedError


@dataclass(frozen=True)
class RelativeScaling(Scaling):
    """Each window divided by its last close: the network sees moves, not
    price levels, and needs no per-ticker numbers.

    x = (ohlc / last_close - 1) * gain;  next = last_close * (1 + y / gain)
    `gain` (fitted on training windows) brings daily moves to unit scale.
    """

    gain: float
    method: ClassVar[str] = "relative"
    uses_ticker_index: ClassVar[bool] = False

    def constants(self) -> dict[str, np.ndarray]:
        return {"gain": np.asarray(self.gain, dtype=np.float64)}

    def to_metadata(self) -> dict:
        return {"method": self.method, "gain": self.gain}

    @classmethod
    def from_plain(cls, data: dict) -> RelativeScaling:
        return cls(float(data["gain"]))

    def scale_inputs(self, ohlc: Array, c: dict[str, Array], ticker_index: Array = None) -> Array:
        return (ohlc / ohlc[:, -1:, CLOSE : CLOSE + 1] - 1.0) * c["gain"]

    def scale_target(self, next_close: Array, ohlc: Array, c: dict[str, Array], ticker_index: Array = None) -> Array:
        return (next_close / ohlc[:, -1, CLOSE] - 1.0) * c["gain"]

    def unscale(self, y: Array, ohlc: Array, c: dict[str, Array], ticker_index: Array = None) -> Array:
        return ohlc[:, -1, CLOSE] * (1.0 + y / c["gain"])


@dataclass(frozen=True)
class MinMaxScaling(Scaling):
    """The tutorial's scaling done right: per ticker and column to [-1, 1],
    fitted on that ticker's training rows only. A window needs its ticker's
    row in the table; a ticker the model never saw has none.
    """

    tickers: tuple[str, ...]
    lows: tuple[tuple[float, ...], ...]  # (n_tickers, 4)
    highs: tuple[tuple[float, ...], ...]
    method: ClassVar[str] = "minmax"
    uses_ticker_index: ClassVar[bool] = True

    def constants(self) -> dict[str, np.ndarray]:
        lows = np.asarray(self.lows, dtype=np.float64)
        return {"lows": lows, "spans": np.maximum(np.asarray(self.highs, dtype=np.float64) - lows, 1e-9)}

    def to_metadata(self) -> dict:
        return {
            "method": self.method,
            "tickers": list(self.tickers),
            "lows": [list(r) for r in self.lows],
            "highs": [list(r) for r in self.highs],
        }

    @classmethod
    def from_plain(cls, data: dict) -> MinMaxScaling:
        return cls(tuple(data["tickers"]), tuple(map(tuple, data["lows"])), tuple(map(tuple, data["highs"])))

    def scale_inputs(self, ohlc: Array, c: dict[str, Array], ticker_index: Array = None) -> Array:
        low, span = c["lows"][ticker_index], c["spans"][ticker_index]  # (B, 4) each
        return 2.0 * (ohlc - low[:, None, :]) / span[:, None, :] - 1.0

    def scale_target(self, next_close: Array, ohlc: Array, c: dict[str, Array], ticker_index: Array = None) -> Array:
        low, span = c["lows"][ticker_index], c["spans"][ticker_index]
        return 2.0 * (next_close - low[:, CLOSE]) / span[:, CLOSE] - 1.0

    def unscale(self, y: Array, ohlc: Array, c: dict[str, Array], ticker_index: Array = None) -> Array:
        low, span = c["lows"][ticker_index], c["spans"][ticker_index]
        return (y + 1.0) / 2.0 * span[:, CLOSE] + low[:, CLOSE]


SCALINGS: dict[str, type[Scaling]] = {c.method: c for c in (RelativeScaling, MinMaxScaling)}


def from_metadata(data: dict) -> Scaling:
    """A Scaling from its plain-data form (checkpoint or ONNX metadata)."""
    method = data.get("method") if isinstance(data, dict) else None
    if method not in SCALINGS:
        raise ForecasterError(f"unknown scaling {method!r}: choose {' or '.join(SCALINGS)}")
    return SCALINGS[method].from_plain(data)
