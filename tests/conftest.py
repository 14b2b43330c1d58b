"""Shared fixtures: real SQLite files in tmp paths, a tiny synthetic universe,
and the real tickers from ../shared/data (a missing folder fails, never skips)."""
from __future__ import annotations

from pathlib import Path

import pytest

from forecaster import store
from forecaster.sample import write_sample_data

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small exported ONNX model (relative scaling, randomised weights), made once."""
    from forecaster.export import export
    from helpers import make_checkpoint
    folder = tmp_path_factory.mktemp("model")
    return export(make_checkpoint(folder / "tiny.pt"), folder / "tiny.onnx").path


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
