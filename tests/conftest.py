"""Shared fixtures: real SQLite files in tmp paths, a tiny synthetic universe,
and the real tickers from ../shared/data (a missing folder fails, never skips)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from forecaster.data.sample import write_sample_data
from forecaster.db import store

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SHARED_UNIVERSE = REPO.parent / "shared" / "universe"
REAL_ROWS = 29_116  # data rows in the ten shared files


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def engine(db_url):
    eng = store.connect(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "ETFs" / "aaxj.us.txt").exists():
        pytest.fail(f"the real tickers are missing: expected them in {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def shared_universe() -> Path:
    """The 400 real tickers (for the few tests that need many real series)."""
    if not (SHARED_UNIVERSE / "Stocks").is_dir():
        pytest.fail(f"the real universe is missing: expected it in {SHARED_UNIVERSE}")
    return SHARED_UNIVERSE


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small exported ONNX model (relative scaling, randomised weights), made once."""
    from helpers import make_checkpoint

    from forecaster.artifact.export import export

    folder = tmp_path_factory.mktemp("model")
    return export(make_checkpoint(folder / "tiny.pt"), folder / "tiny.onnx").path


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory) -> Path:
    """Another small ONNX model: the same shape as tiny_model, other weights."""
    from helpers import make_checkpoint

    from forecaster.artifact.export import export

    folder = tmp_path_factory.mktemp("other")
    return export(make_checkpoint(folder / "other.pt", seed=1), folder / "other.onnx").path


@pytest.fixture
def sample_dir(tmp_path) -> Path:
    out = tmp_path / "sample"
    write_sample_data(out, tickers=3, days=120, seed=1)
    return out


def write_file(folder: Path, name: str, text: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, newline="")
    return path


# -- PostgreSQL: a real server from Debian's packages, started per session ----


def _pg_tool(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found[-1]:
        pytest.fail(f"PostgreSQL's {name} is not installed: run `make postgres` (Debian package postgresql)")
    return found[-1]


class PgServer:
    """A throwaway PostgreSQL server from Debian's package, on a unix socket in `root`."""

    def __init__(self, root: Path):
        self.root, self.data, self.log = root, root / "data", root / "server.log"
        self.as_postgres = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(root, "postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str, check: bool = True):
        return subprocess.run([*self.as_postgres, _pg_tool(tool), *args], check=check, capture_output=True)

    def _ctl(self, action: str, *args: str, check: bool = True):
        options = f"-k {self.root} -c listen_addresses='' -c fsync=off -c max_connections=200"
        return self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, *args, action, check=check
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode, check=False)

    def restart(self) -> None:
        """What a server restart does to its clients: every connection (and session lock) is cut."""
        self._ctl("restart", "-m", "fast")

    def new_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=str(self.root), user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@/{name}?host={self.root}"


@contextlib.contextmanager
def pg_server():
    server = PgServer(Path(tempfile.mkdtemp(prefix="forecaster-pg-")))
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_session_server():
    """The session's PostgreSQL server, shared by the tests that only need a database on one."""
    with pg_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_session_server) -> str:
    """A fresh, empty database on the session's server."""
    return pg_session_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request, tmp_path) -> str:
    """The same test on SQLite and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def any_engine(any_db_url):
    eng = store.connect(any_db_url)
    yield eng
    eng.dispose()


def pg_role_url(pg_url: str, role: str, *grants: str) -> str:
    """A login role on the server of `pg_url` (created once), with these SQL statements run for it in that
    database ({role} and {db} filled in), and the URL of the same database as that role."""
    import psycopg
    import sqlalchemy as sa

    url = sa.engine.make_url(pg_url)
    with psycopg.connect(host=url.query["host"], user="postgres", dbname=url.database, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            conn.execute(f"CREATE ROLE {role} LOGIN")
        for grant in grants:
            conn.execute(grant.format(role=role, db=url.database))
    return url.set(username=role).render_as_string(hide_password=False)


def reader_url(any_db_url: str) -> str:
    """The URL an analyst uses: on PostgreSQL a role that can only read (as docs/operations.md
    says to make one); SQLite needs none."""
    if not any_db_url.startswith("postgresql"):
        return any_db_url
    return pg_role_url(any_db_url, "analyst", "GRANT pg_read_all_data TO {role}")
