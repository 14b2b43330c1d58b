"""Checkpoint files: everything needed to rebuild a trained forecaster, with
no pickled code. Saved with torch.save, loaded only with weights_only=True,
so a file from elsewhere can hold tensors and plain data but never run code."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError, first_line
from ..files import write_atomically

FORMAT = "forecaster-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("model_config", "scaling", "state_dict", "features", "provenance")
STATE_FORMAT = "forecaster-train-state"  # an interrupted training, to resume (not a model)
STATE_REQUIRED = ("step", "net", "optimizer", "best", "history", "job", "data_sha256")


def save(path: str | Path, payload: dict) -> None:
    """Write atomically: a crash leaves the old file or none, never half a file."""
    write_atomically(
        Path(path), lambda fh: torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, fh)
    )


def load(path: str | Path) -> dict:
    data = _load(Path(path), "checkpoint")
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a forecaster checkpoint")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {data.get('format_version')} is not supported (expected {FORMAT_VERSION})"
        )
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return data


def save_state(path: str | Path, payload: dict) -> None:
    """An interrupted training's state, written atomically like a checkpoint."""
    write_atomically(Path(path), lambda fh: torch.save({"format": STATE_FORMAT, **payload}, fh))


def load_state(path: str | Path) -> dict:
    data = _load(Path(path), "training state")
    if data.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"{path}: not a forecaster training state (a state is written when a training "
            "is stopped, beside its checkpoint as NAME.state.pt)"
        )
    missing = [k for k in STATE_REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"{path}: training state lacks {', '.join(missing)}")
    return data


def _load(path: Path, what: str) -> dict:
    """Tensors and plain data only (weights_only=True): a file holding code is refused."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what} file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with code in it lands here, refused
        raise CheckpointError(f"{path}: not a loadable forecaster {what} ({first_line(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a forecaster {what}")
    return data
