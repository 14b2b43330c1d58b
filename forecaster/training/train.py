"""Training, read top to bottom: data, windows, scaling, model, loop,
evaluation, checkpoint.

Fixes the tutorial's mistakes: scaling is fitted on training rows only, the
best step is chosen on a validation sample from the end of each ticker's
training part, gradients are clipped, every ticker is scored on held-out
days next to the naive forecast, and the checkpoint carries everything needed
to rebuild the model. Memory follows the prices, not the windows: windows are
index ranges into one float32 array (data/universe.py).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__, intervals
from ..clock import utc_now
from ..data.prices import Series
from ..data.universe import Universe
from ..data.windows import gather, reaching_back
from ..errors import DataError
from ..features import FEATURES
from .allocator import reuse_freed_memory
from .config import PRECISIONS, TrainConfig
from .distributed import World
from .evaluate import calibrate, held_out, held_out_intervals, interval_method
from .loop import fit, seeded_sample, validation_sample
from .model import Forecaster, build_forecaster
from .precision import resolve as resolve_precision
from .split import WindowIndex, fit_scaling, index_windows

__all__ = ["TrainResult", "train", "train_universe"]

PARITY_WINDOWS_PER_TICKER = 64
PARITY_WINDOWS_MAX = 512
EXTENT_CHUNK = 65_536  # windows scaled at a time to find the largest training input


@dataclass
class TrainResult:
    model: Forecaster
    metrics: dict  # empty on ranks other than 0
    history: dict
    checkpoint: dict  # empty on ranks other than 0
    predictions: dict = field(default_factory=dict)  # ticker -> test rows, actual, predicted, last
    precision: str = "fp32"  # what the training really ran in
    warnings: list[str] = field(default_factory=list)
    universe: Universe | None = None
    timing: dict = field(default_factory=dict)  # seconds of the steps and of the evaluation


def train(series: dict[str, Series], config: TrainConfig, *, progress: bool = False) -> TrainResult:
    """Fit one model on per-ticker series (library callers and tests)."""
    return train_universe(Universe.from_series(series), config, World(0, 1, torch.device("cpu")), progress=progress)


def train_universe(
    universe: Universe,
    config: TrainConfig,
    world: World,
    *,
    progress: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    state_path: Path | None = None,
    job: dict | None = None,
    resume: dict | None = None,
) -> TrainResult:
    """Fit one model on every ticker of `universe` and evaluate it on each one's held-out days.

    The same seed gives the same model; torch's global random state is left
    as it was. Under torchrun every rank calls this; rank 0 evaluates and
    returns the checkpoint. `job` (plain data) goes into a stopped run's state."""
    if config.precision not in PRECISIONS:
        raise DataError(f"unknown precision {config.precision!r}: choose {', '.join(PRECISIONS)}")
    precision, precision_warning = resolve_precision(config.precision, config.hidden, config.layers, len(FEATURES))
    if world.device.type == "cuda" and precision == "bf16":
        precision_warning = None  # CUDA has bfloat16 whatever the host CPU
    with torch.random.fork_rng(devices=[]):  # seeded here, restored on leaving
        torch.manual_seed(config.seed)
        index = index_windows(universe, config.seq_len, config.test_fraction, config.val_fraction, config.skip_flagged)
        scaling = fit_scaling(config.scaling, universe, index)
        model = build_forecaster(config.model_config(), scaling).to(world.device)
        data_sha256 = universe.data_hash()
        if resume is not None and resume["data_sha256"] != data_sha256:
            raise DataError(
                "the prices changed since the training was stopped (its data sha256 differs): "
                "start a new training instead of resuming"
            )
        started = time.perf_counter()
        with reuse_freed_memory():  # half the time of a full-batch epoch was page faults
            history, validation_seconds = fit(
                model,
                universe,
                index,
                config,
                precision,
                world,
                progress=progress,
                should_stop=should_stop,
                state_path=state_path,
                resume=resume,
                state_extra={"job": job or {}, "data_sha256": data_sha256},
            )
    model = model.cpu()
    result = TrainResult(
        model,
        {},
        history,
        {},
        precision=precision,
        warnings=[precision_warning] if precision_warning else [],
        universe=universe,
        timing={"train_seconds": time.perf_counter() - started, "validation_seconds": validation_seconds},
    )
    if not world.is_main:
        return result
    started = time.perf_counter()
    metrics, result.predictions = held_out(model, universe, index, torch.device("cpu"))
    method, method_warning = interval_method(universe, index)
    result.warnings += [method_warning] if method_warning else []
    calibration = calibrate(
        model,
        universe,
        validation_sample(index, config),
        index.seq_len,
        torch.device("cpu"),
        method,
        fit_rows=seeded_sample(index.train, intervals.HAR_FIT_WINDOWS, config.seed, 1 << 21),
    )
    metrics["intervals"] = held_out_intervals(calibration, universe, index, result.predictions)
    # Step 0 kept: no step beat the starting weights on validation. Under
    # relative scaling those output "no change", i.e. the naive forecast itself.
    metrics["overall"].update(
        kept_step=history["best_step"],
        kept_epoch=history["best_epoch"],
        is_naive=history["best_step"] == 0 and scaling.method == "relative",
        precision=precision,
        steps=history["steps"],
        train_windows=len(index.train),
        flagged_windows_skipped=index.flagged_skipped,
        unit=history["unit"],
        world_size=world.size,
        device=world.device.type,
    )
    result.metrics = metrics
    result.checkpoint = {
        "model_config": asdict(config.model_config()),
        "train_config": asdict(config),
        "state_dict": model.net.state_dict(),
        "scaling": scaling.to_metadata(),
        "intervals": calibration.to_metadata(),
        "features": list(FEATURES),
        "provenance": {
            **provenance(universe, index, config, data_sha256),
            "precision": precision,
            "train_input_extent": training_extent(model, universe, index),
            "world_size": world.size,
            "device": world.device.type,
        },
        "metrics": metrics,
        "history": history,
        **parity_windows(universe, index, calibration.input_rows(index.seq_len)),
    }
    result.timing["evaluate_seconds"] = time.perf_counter() - started
    return result


def training_extent(model: Forecaster, universe: Universe, index: WindowIndex) -> float:
    """The largest |scaled input| over the training and validation windows
    (scoring flags windows beyond it), in chunks, with NumPy."""
    scaling, constants, largest = model.scaling, model.scaling.constants(), 0.0
    rows = np.concatenate([index.train, index.val])
    for start in range(0, len(rows), EXTENT_CHUNK):
        part = rows[start : start + EXTENT_CHUNK]
        windows, _ = gather(universe, part, index.seq_len)
        scaled = scaling.scale_inputs(windows.astype(np.float64), constants, universe.ticker_of(part))
        largest = max(largest, float(np.abs(scaled).max()))
    return largest


def provenance(universe: Universe, index: WindowIndex, config: TrainConfig, data_sha256: str) -> dict:
    """Where the model came from: tickers, date ranges, data hash, library versions."""
    tickers = {}
    for k, (ticker, s) in enumerate(zip(universe.tickers, index.splits, strict=True)):
        first, last = int(universe.starts[k]), int(universe.starts[k + 1]) - 1
        tickers[ticker] = {
            "first_date": universe.iso_date(first),
            "last_date": universe.iso_date(last),
            "rows": last - first + 1,
            "train_end_date": universe.iso_date(first + s.last_training_row(config.seq_len)),
        }
    return {
        "tickers": tickers,
        "data_sha256": data_sha256,
        "created_at": utc_now(),
        "versions": {
            "forecaster": __version__,
            "torch": str(torch.__version__),
            "numpy": str(np.__version__),
            "python": platform.python_version(),
        },
    }


def parity_windows(universe: Universe, index: WindowIndex, length: int) -> dict:
    """A few held-out raw windows of the `length` rows the model reads, kept in
    the checkpoint, so export can check ONNX against torch on real data
    without a database."""
    rows, at = [], 0
    for s in index.splits:
        rows.append(index.test[at : at + s.n_test][-PARITY_WINDOWS_PER_TICKER:])
        at += s.n_test
    chosen, _ = reaching_back(universe, np.concatenate(rows), index.seq_len, length)
    chosen = chosen[-PARITY_WINDOWS_MAX:]
    windows, _ = gather(universe, chosen, length)
    return {
        "parity_windows": torch.as_tensor(np.ascontiguousarray(windows), dtype=torch.float32),
        "parity_ticker_index": torch.as_tensor(universe.ticker_of(chosen), dtype=torch.long),
    }
