"""Library errors. Each is one sentence for a person; only the CLI turns them
into exit codes."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (of the driver's error when
    SQLAlchemy wraps one), for one-line reports."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def os_error_line(exc: OSError) -> str:
    """An OS error as a person reads it: what went wrong, then the path."""
    return f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)


class ForecasterError(Exception):
    """Base class: something a user can act on, described in one line."""


class StoreError(ForecasterError):
    """The database cannot be opened, written or has the wrong schema."""


class DatabaseError(StoreError):
    """The database itself refused a statement (read or write); `reason` is its one line."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"database error: {reason}")


class SourceError(ForecasterError):
    """An input path does not exist or holds nothing we can read."""


class UnreadableFileError(SourceError):
    """A file has no usable header or is not text (recorded whole, line NULL)."""


class DataError(ForecasterError):
    """The prices at hand cannot support what was asked (unknown ticker, too little history)."""


class NotYetError(DataError):
    """The date asked for is after the newest stored: its files are not in
    yet. Exit 75 (sysexits.h's EX_TEMPFAIL): retry later."""

    exit_code = 75


class CheckpointError(ForecasterError):
    """A checkpoint file is missing, unreadable or not a forecaster checkpoint."""


class ModelFileError(ForecasterError):
    """An ONNX model file is missing, corrupt, or does not match its own metadata."""


class ParityError(ForecasterError):
    """Two implementations of the same model disagree beyond the tolerance."""

    def __init__(self, what: str, max_abs: float, max_rel: float, tolerance: float):
        self.max_abs, self.max_rel, self.tolerance = max_abs, max_rel, tolerance
        super().__init__(
            f"{what}: largest difference {max_abs:.3g} (relative {max_rel:.3g}) exceeds the tolerance {tolerance:g}"
        )


class DeviceError(ForecasterError):
    """The requested execution device cannot be used."""


class AlreadyRunningError(ForecasterError):
    """Another daemon holds this database."""


class ReaderError(ForecasterError):
    """The process reading a large ingest's files stopped before it finished."""
