"""Writing files so that a crash never leaves half of one, and JSON that every reader parses."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# The process's umask, read once at import (reading it means setting it): the
# files we write get the mode any file of ours would, not mkstemp's 0600, so
# that node_exporter or a web server running as another user can read them.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(file) on a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def strict_json(value, indent: int | None = None) -> str:
    """JSON without NaN or Infinity (which Python writes but jq, browsers and
    PostgreSQL refuse): a float that is no number, such as the ratio of a
    ticker whose naive error is 0, is written as null."""

    def plain(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return json.dumps(plain(value), indent=indent, allow_nan=False)
