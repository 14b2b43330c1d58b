"""Comparing two implementations of one model on the same windows.

No torch here: `verify` runs on scoring hosts that have ONNX Runtime only.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParityError


def compare(
    got: np.ndarray, expected: np.ndarray, tolerance: float, *, what: str, scale: np.ndarray | None = None
) -> tuple[float, float]:
    """(max absolute, max relative) difference; ParityError when relative > tolerance.
    Relative to the expected value, or to `scale` where that is larger (an
    interval bound near zero is compared with the price level it comes from)."""
    if got.shape != expected.shape:
        raise ParityError(
            f"{what}: shapes differ {got.shape} vs {expected.shape}", float("inf"), float("inf"), tolerance
        )
    diff = np.abs(got - expected)
    max_abs = float(diff.max()) if diff.size else 0.0
    base = np.maximum(np.abs(expected), 1e-12) if scale is None else np.maximum(np.abs(expected), np.abs(scale))
    max_rel = float((diff / base).max()) if diff.size else 0.0
    if not np.isfinite(max_rel) or max_rel > tolerance:
        raise ParityError(what, max_abs, max_rel, tolerance)
    return max_abs, max_rel
