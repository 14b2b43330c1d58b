"""Stopping long work at a safe point instead of wherever a signal lands."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Callable[[], bool]]:
    """Within the block SIGTERM and SIGINT only ask the work to stop; it asks
    the yielded function at its next safe point. The handlers before are put back."""
    asked = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: asked.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield asked.is_set
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
