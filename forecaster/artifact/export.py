"""Checkpoint -> one self-contained ONNX file, proven before it is written.

The graph takes raw OHLC windows (batch, input_rows, 4) in price units and
returns the next close in price units: scaling and its inverse live inside.
The network reads the newest seq_len rows; the interval's volatility may
read further back (input_rows = 60 for the har60 intervals).
It also returns each window's largest scaled input, so the scoring side can
flag windows unlike anything seen in training without re-implementing the
scaling. Settings, scaling numbers and provenance go into metadata_props.

Before anything is written: onnx.checker (full check), then ONNX Runtime
against torch on held-out windows from the checkpoint. A difference beyond
the tolerance raises ParityError and leaves no file.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from .. import __version__
from ..clock import utc_now
from ..errors import CheckpointError
from ..features import CLOSE
from ..files import strict_json, write_atomically
from ..intervals import COLUMNS, Calibration, input_rows
from ..training import checkpoint
from ..training.config import ModelConfig
from ..training.model import Forecaster, build_forecaster
from .config import DEFAULT_OPSET, DEFAULT_TOLERANCE
from .lstm_graph import streamline_lstm_outputs
from .model_file import METADATA_FORMAT, METADATA_PREFIX, file_sha256
from .parity import compare


@dataclass
class ExportResult:
    path: Path
    sha256: str
    max_abs: float
    max_rel: float
    n_checked: int


class _WithExtent(nn.Module):
    """The forecaster plus the largest |scaled input| of each window and,
    when the checkpoint is calibrated, the 80% and 95% interval bounds."""

    def __init__(self, forecaster: Forecaster, seq_len: int, calibration: Calibration | None = None):
        super().__init__()
        self.forecaster = forecaster
        self.seq_len = seq_len
        self.calibration = calibration

    def forward(self, ohlc, ticker_index=None):
        window = ohlc[:, -self.seq_len :]  # the network's rows; the volatility reads them all
        scaled = self.forecaster.scale_inputs(window, ticker_index)
        next_close = self.forecaster.unscale(self.forecaster.net(scaled), window, ticker_index)
        extent = scaled.abs().amax(dim=(1, 2))
        if self.calibration is None:
            return next_close, extent
        return (next_close, extent, *self.calibration.bounds(next_close, ohlc))


def outputs(calibrated: bool) -> list[str]:
    """The graph's output names."""
    return ["next_close", "input_extent", *(COLUMNS if calibrated else ())]


def export(
    checkpoint_path: str | Path, out: str | Path, *, opset: int = DEFAULT_OPSET, tolerance: float = DEFAULT_TOLERANCE
) -> ExportResult:
    data = checkpoint.load(checkpoint_path)
    model = build_forecaster(ModelConfig(**data["model_config"]), data["scaling"], data["state_dict"])
    calibration = Calibration.from_metadata(data["intervals"]) if "intervals" in data else None
    wrapped = _WithExtent(model, data["model_config"]["seq_len"], calibration).eval()
    windows = data["parity_windows"].to(torch.float32)
    index = data["parity_ticker_index"].to(torch.long)
    if len(windows) == 0:
        raise CheckpointError(f"{checkpoint_path}: holds no held-out windows to check the export against")
    rows = input_rows(calibration.method if calibration else None, data["model_config"]["seq_len"])
    if windows.shape[1] != rows:
        raise CheckpointError(
            f"{checkpoint_path}: its held-out windows hold {windows.shape[1]} rows, but the model reads {rows}"
        )
    uses_index = model.scaling.uses_ticker_index
    example = (windows[:2], index[:2]) if uses_index else (windows[:2],)

    proto = _to_onnx(wrapped, example, uses_index, opset, outputs(calibration is not None))
    streamline_lstm_outputs(proto)
    _set_metadata(proto, data, rows)
    onnx.checker.check_model(proto, full_check=True)
    blob = proto.SerializeToString()
    max_abs, max_rel = check_against_torch(
        blob, wrapped, windows, index if uses_index else None, tolerance, what="ONNX Runtime vs torch"
    )
    out = Path(out)
    write_atomically(out, lambda fh: fh.write(blob))
    return ExportResult(out, file_sha256(out), max_abs, max_rel, len(windows))


def _to_onnx(
    wrapped: nn.Module, example: tuple, uses_index: bool, opset: int, output_names: list[str] | None = None
) -> onnx.ModelProto:
    batch = torch.export.Dim("batch", min=1)
    names = ["ohlc", "ticker_index"] if uses_index else ["ohlc"]
    shapes = {name: {0: batch} for name in names}
    # The exporter narrates its steps and warns about internals of torch
    # itself; none of it is actionable for a user, so keep the output ours.
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
        _quiet_logger("torch.onnx"),
        _quiet_logger("torch._dynamo"),
        torch.no_grad(),
    ):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapped,
            example,
            dynamo=True,
            opset_version=opset,
            input_names=names,
            output_names=output_names or outputs(False),
            dynamic_shapes=shapes,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    return program.model_proto


@contextlib.contextmanager
def _quiet_logger(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _set_metadata(proto: onnx.ModelProto, data: dict, rows: int) -> None:
    cfg = data["model_config"]
    meta = {
        "format_version": str(METADATA_FORMAT),
        "seq_len": str(cfg["seq_len"]),
        "input_rows": str(rows),
        "features": json.dumps(data["features"]),
        "model_config": json.dumps(cfg),
        # The settings it was trained with: a retrain makes its challenger the same way.
        "train_config": json.dumps(data.get("train_config", {})),
        "scaling": json.dumps(data["scaling"]),
        "training": json.dumps(data["provenance"]),
        "metrics": strict_json(_without_per_ticker_intervals(data.get("metrics", {}))),
        "intervals": json.dumps(data["intervals"]) if "intervals" in data else None,
        # The largest |scaled input| seen in training: scoring flags windows beyond it.
        "train_input_extent": repr(float(data["provenance"]["train_input_extent"])),
        "versions": json.dumps(
            {
                **data["provenance"].get("versions", {}),
                "exporter_torch": str(torch.__version__),
                "onnx": onnx.__version__,
                "forecaster_export": __version__,
            }
        ),
        "created_at": utc_now(),
    }
    meta = {key: value for key, value in meta.items() if value is not None}
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, value
    proto.producer_name = "forecaster"
    proto.producer_version = __version__


def _without_per_ticker_intervals(metrics: dict) -> dict:
    """The metrics for the file: per-ticker interval figures stay in NAME.metrics.json."""
    if "intervals" not in metrics:
        return metrics
    return {**metrics, "intervals": {k: v for k, v in metrics["intervals"].items() if k != "tickers"}}


def check_against_torch(
    blob: bytes,
    wrapped: nn.Module,
    windows: torch.Tensor,
    ticker_index: torch.Tensor | None,
    tolerance: float,
    *,
    what: str,
) -> tuple[float, float]:
    """Run ONNX Runtime (CPU) and torch on the same windows, every output but
    the extent (the next close and any interval bounds); raise ParityError
    beyond `tolerance`."""
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    feeds = {"ohlc": windows.numpy()}
    if ticker_index is not None:
        feeds["ticker_index"] = ticker_index.numpy()
    with torch.no_grad():
        expected = [t.double().numpy() for t in wrapped(windows, ticker_index)]
    names = [o.name for o in session.get_outputs()]
    got = session.run(names, feeds)
    last = windows[:, -1, CLOSE].double().numpy()
    worst = (0.0, 0.0)
    for name, g, e in zip(names, got, expected, strict=True):
        if name != "input_extent":
            difference = compare(
                g.astype(np.float64), e, tolerance, what=f"{what}, {name}", scale=None if name == "next_close" else last
            )
            worst = max(worst, difference, key=lambda w: w[1])
    return worst
