"""An exported model file as a scoring host opens it: ONNX Runtime, the
metadata contract, the device it really runs on, and batched scoring.

Nothing here imports torch: a scoring machine needs onnxruntime only.
The file is read once; its sha256 (the model_id everywhere) and the session
come from the same bytes, and a session built from bytes cannot follow
external-data paths, so only a self-contained file can load.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..devices import DEVICES
from ..errors import DeviceError, ForecasterError, ModelFileError, first_line
from ..intervals import COLUMNS, Calibration, input_rows
from ..scaling import Scaling, from_metadata

METADATA_PREFIX = "forecaster."
METADATA_FORMAT = 1
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# ONNX Runtime's LSTM keeps per-call buffers of rows x seq_len x 4 x hidden
# floats; past a few hundred rows they leave the CPU's caches and every row
# costs more. Measured on 2 cores, interleaved: 1,024 windows in one call
# 7.5-7.8 ms, in 256-row calls 6.1-6.2 ms; 8,192: 66-67 vs 48.4-48.6 ms.
CPU_CHUNK_ROWS = 256
REQUIRED_METADATA = ("seq_len", "features", "model_config", "scaling", "training", "train_input_extent", "created_at")
JSON_METADATA = ("features", "model_config", "scaling", "training", "metrics", "versions", "intervals", "train_config")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ModelFile:
    """A loaded, checked ONNX forecaster and the device it really runs on."""

    path: Path
    sha256: str
    metadata: dict
    session: ort.InferenceSession
    device: str  # "cuda" or "cpu": what the session really uses
    scaling: Scaling

    @property
    def seq_len(self) -> int:
        """The network's window."""
        return int(self.metadata["seq_len"])

    @property
    def input_rows(self) -> int:
        """The rows of history it reads per ticker: the window, or more where the
        interval's volatility reaches further back (files before it: the window)."""
        return int(self.metadata.get("input_rows", self.metadata["seq_len"]))

    @property
    def uses_ticker_index(self) -> bool:
        return self.scaling.uses_ticker_index

    @property
    def training_tickers(self) -> list[str]:
        return list(self.metadata["training"]["tickers"])

    @property
    def train_input_extent(self) -> float:
        return float(self.metadata["train_input_extent"])

    @property
    def calibration(self) -> Calibration | None:
        """The interval calibration in the file (None for a model made before intervals)."""
        return Calibration.from_metadata(self.metadata["intervals"]) if "intervals" in self.metadata else None

    def score(self, ohlc: np.ndarray, ticker_index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(next close, largest |scaled input|) for raw windows (B, input_rows, 4)."""
        next_close, extent = self._run(["next_close", "input_extent"], ohlc, ticker_index)
        return next_close, extent

    def score_with_intervals(
        self, ohlc: np.ndarray, ticker_index: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]:
        """(next close, extent, [lo80, hi80, lo95, hi95] or None for an uncalibrated model)."""
        if self.calibration is None:
            return (*self.score(ohlc, ticker_index), None)
        next_close, extent, *bounds = self._run(["next_close", "input_extent", *COLUMNS], ohlc, ticker_index)
        return next_close, extent, bounds

    def _run(self, names: list[str], ohlc: np.ndarray, ticker_index: np.ndarray | None) -> list[np.ndarray]:
        ohlc = np.ascontiguousarray(ohlc, dtype=np.float32)
        feeds = {"ohlc": ohlc}
        if self.uses_ticker_index:
            feeds["ticker_index"] = np.ascontiguousarray(ticker_index, dtype=np.int64)
        # On CPU, a few hundred rows per call: see CPU_CHUNK_ROWS. On a GPU, one call.
        step = CPU_CHUNK_ROWS if self.device == "cpu" else max(len(ohlc), 1)
        parts = [
            self.session.run(names, {k: v[i : i + step] for k, v in feeds.items()})
            for i in range(0, max(len(ohlc), 1), step)
        ]
        return [np.concatenate([p[j] for p in parts]).astype(np.float64) for j in range(len(names))]


def load_model(path: str | Path, device: str = "cpu") -> ModelFile:
    """Open and check an ONNX forecaster; ModelFileError says what is wrong with it."""
    path = Path(path)
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}: choose {', '.join(DEVICES)}")
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file ({exc.strerror})") from None
    session, used = _session(blob, path, device)
    metadata, scaling = _metadata(session, path)
    _check_signature(session, metadata, scaling, path)
    return ModelFile(path, hashlib.sha256(blob).hexdigest(), metadata, session, used, scaling)


def describe(path: str | Path) -> dict:
    """What `forecaster info` prints: the metadata and the file's sha256."""
    model = load_model(path, "cpu")
    numbers = {  # ONNX metadata holds strings: shown as the numbers they are
        "seq_len": model.seq_len,
        "input_rows": model.input_rows,
        "train_input_extent": model.train_input_extent,
    }
    return {"path": str(model.path), "sha256": model.sha256, **model.metadata, **numbers}


def nvidia_driver_present() -> bool:
    """Without the kernel driver CUDA cannot work, and asking ONNX Runtime to
    try anyway costs over a second of failed library loading."""
    return Path("/proc/driver/nvidia/version").exists()


def _session(blob: bytes, path: Path, device: str) -> tuple[ort.InferenceSession, str]:
    want_cuda = device == "cuda" or (
        device == "auto" and CUDA in ort.get_available_providers() and nvidia_driver_present()
    )
    providers = [CUDA, CPU] if want_cuda else [CPU]
    if want_cuda and hasattr(ort, "preload_dlls"):
        # Lets CUDA/cuDNN from pip wheels (torch's, or onnxruntime-gpu[cuda,cudnn]) be found.
        with contextlib.redirect_stdout(io.StringIO()) if device == "auto" else contextlib.nullcontext():
            ort.preload_dlls()
    options = ort.SessionOptions()
    # onnxruntime-gpu without usable CUDA libraries logs C++ errors and falls
    # back to CPU; under "auto" we check what it picked instead of showing
    # them. Set on this session only: the process-wide logger stays as it was.
    options.log_severity_level = 4 if device == "auto" else 3
    # ORT's default (0 = "auto") ran batches of 64 on one thread here; one
    # thread per usable CPU was as fast or faster at every batch size, and
    # faster than torch eager (docs/performance.md, current figures).
    options.intra_op_num_threads = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    try:
        session = ort.InferenceSession(blob, sess_options=options, providers=providers)
    except Exception as exc:
        raise ModelFileError(f"{path}: not a loadable ONNX model ({first_line(exc)[:300]})") from None
    used = "cuda" if session.get_providers()[0] == CUDA else "cpu"
    if device == "cuda" and used != "cuda":
        raise DeviceError(
            "CUDA was requested but ONNX Runtime cannot use it here "
            f"(available providers: {', '.join(ort.get_available_providers())}; the session fell back "
            "to CPU). Install the CUDA libraries (see docs/operations.md, GPUs) or use --device cpu/auto"
        )
    return session, used


def _metadata(session: ort.InferenceSession, path: Path) -> tuple[dict, Scaling]:
    raw = session.get_modelmeta().custom_metadata_map
    fields = {k[len(METADATA_PREFIX) :]: v for k, v in raw.items() if k.startswith(METADATA_PREFIX)}
    if not fields:
        raise ModelFileError(f"{path}: an ONNX file, but not a forecaster model (no forecaster metadata)")
    if fields.get("format_version") != str(METADATA_FORMAT):
        raise ModelFileError(
            f"{path}: model metadata format {fields.get('format_version')} is not "
            f"supported (expected {METADATA_FORMAT})"
        )
    missing = [k for k in REQUIRED_METADATA if k not in fields]
    if missing:
        raise ModelFileError(f"{path}: model metadata lacks {', '.join(missing)}")
    try:
        meta = {k: (json.loads(v) if k in JSON_METADATA else v) for k, v in fields.items()}
        int(meta["seq_len"]), int(meta.get("input_rows", 0)), float(meta["train_input_extent"])
        scaling = from_metadata(meta["scaling"])
        if "intervals" in meta:
            Calibration.from_metadata(meta["intervals"])
        if not isinstance(meta["features"], list) or not isinstance(meta["training"].get("tickers"), dict):
            raise ValueError("features must be a list and training.tickers a mapping")
    except (KeyError, ValueError, TypeError, AttributeError, ForecasterError) as exc:
        raise ModelFileError(f"{path}: model metadata is incomplete or malformed ({exc})") from None
    return meta, scaling


def _check_signature(session: ort.InferenceSession, meta: dict, scaling: Scaling, path: Path) -> None:
    """The graph's inputs and outputs must be what the metadata says."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    expected_inputs = {"ohlc", "ticker_index"} if scaling.uses_ticker_index else {"ohlc"}
    expected_outputs = {"next_close", "input_extent", *(COLUMNS if "intervals" in meta else ())}
    if set(inputs) != expected_inputs or not expected_outputs <= outputs:
        raise ModelFileError(
            f"{path}: graph inputs {sorted(inputs)} / outputs {sorted(outputs)} do not "
            f"match a forecaster with {scaling.method} scaling"
        )
    shape = inputs["ohlc"].shape
    rows, n_features = int(meta.get("input_rows", meta["seq_len"])), len(meta["features"])
    if len(shape) != 3 or shape[1] != rows or shape[2] != n_features:
        raise ModelFileError(
            f"{path}: graph input ohlc has shape {shape}, but the metadata says {rows} rows and {n_features} features"
        )
    needed = input_rows(meta.get("intervals", {}).get("method"), int(meta["seq_len"]))  # checked by _metadata
    if rows != needed:
        raise ModelFileError(f"{path}: the model reads {rows} rows, but its window and intervals need {needed}")
