"""One daemon per database (and shard).

On SQLite (or any file database) an exclusive flock on a file beside the
database; on PostgreSQL a session advisory lock. Both die with the process,
so a killed daemon never blocks the next one. A PostgreSQL lock also dies
with its connection, when the server restarts: `held()` says whether the
lock is still this daemon's, and the daemon asks before every job.
Releasing is best effort: a lock on a dead connection is already gone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from ..errors import AlreadyRunningError
from ..serving.shards import Shard

log = logging.getLogger("forecaster.daemon")


class DaemonLock:
    """Held by a running daemon."""

    def held(self) -> bool:
        return True  # a flock lives as long as its process


def lock_path_for(db_url: str, shard: Shard | None = None) -> Path:
    """Beside the SQLite file; for other databases, one per URL in the temp folder."""
    url = sa.engine.make_url(db_url)
    suffix = "" if shard is None else f".shard{shard.k}of{shard.n}"
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database + f"{suffix}.daemon.lock")
    digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"forecaster-{digest}{suffix}.daemon.lock"


def holder_note() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()} since {dt.datetime.now().isoformat(timespec='seconds')}"


@contextlib.contextmanager
def daemon_lock(engine: sa.Engine, db_url: str, shard: Shard | None, lock_path: Path | None = None):
    """Hold the one-daemon rule for the block, or raise AlreadyRunningError naming the holder."""
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, shard) as lock:
            yield lock
    else:
        with single_instance(lock_path or lock_path_for(db_url, shard)):
            yield DaemonLock()


@contextlib.contextmanager
def single_instance(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` or raise AlreadyRunningError naming the holder."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            raise AlreadyRunningError(f"another daemon already runs on this database ({holder}); lock {path}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder_note()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# Seconds the check may take: a connection that does not answer (a server
# hung, a network cut without a reset) counts as a lost lock.
CHECK_TIMEOUT = 15.0


class _AdvisoryLock(DaemonLock):
    def __init__(self, conn: sa.Connection, key: int):
        self.conn, self.key = conn, key
        self.using = threading.Lock()  # the connection is asked from the scheduler's threads
        self.lost = False

    def held(self) -> bool:
        """Is the lock still ours? False once its connection is gone (a server
        restart) or does not answer within CHECK_TIMEOUT."""
        answer: list[bool] = []
        asking = threading.Thread(target=lambda: answer.append(self._ask()), daemon=True)
        asking.start()
        asking.join(CHECK_TIMEOUT)
        self.lost = self.lost or not (answer and answer[0])
        return not self.lost

    def _ask(self) -> bool:
        if not self.using.acquire(timeout=CHECK_TIMEOUT):  # an earlier check is still stuck on it
            return False
        try:
            return bool(
                self.conn.execute(
                    sa.text(
                        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND pid = pg_backend_pid() AND classid = :hi AND objid = :lo AND objsubid = 1"
                    ),
                    {"hi": self.key >> 32, "lo": self.key & 0xFFFFFFFF},
                ).scalar()
            )
        except Exception:  # any failure of this connection means the lock is lost
            return False
        finally:
            self.using.release()

    def release(self) -> None:
        if self.lost or not self.using.acquire(timeout=CHECK_TIMEOUT):
            return  # stuck on a dead connection: the lock dies with it
        try:
            with contextlib.suppress(Exception):
                self.conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        finally:
            self.using.release()


@contextlib.contextmanager
def _advisory_lock(engine: sa.Engine, shard: Shard | None) -> Iterator[_AdvisoryLock]:
    name = "forecaster daemon" + ("" if shard is None else f" shard {shard}")
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:7], "big")
    conn = engine.connect()
    try:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            holder = conn.execute(
                sa.text("SELECT application_name FROM pg_stat_activity WHERE application_name LIKE :n"),
                {"n": f"{name} (%"},
            ).scalar()
            note = holder[len(name) + 2 :].rstrip(")") if holder else "an unknown session"
            raise AlreadyRunningError(f"another daemon already runs on this database ({note})")
        conn.execute(
            sa.text("SELECT set_config('application_name', :a, false)"), {"a": f"{name} ({holder_note()})"[:63]}
        )
        lock = _AdvisoryLock(conn, key)
        yield lock
        lock.release()
    finally:
        with contextlib.suppress(Exception):  # a dead connection cannot be closed cleanly: it is gone anyway
            if "lock" in locals() and lock.lost:
                conn.invalidate()  # no rollback on a connection that may never answer
            else:
                conn.close()
