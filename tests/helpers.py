"""Small builders shared by tests (no fixtures: plain functions)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from click.testing import CliRunner

from forecaster.artifact.model_file import load_model
from forecaster.cli import main
from forecaster.data.parsing import Body, Fields, Header, _numbers, _regular, read_many
from forecaster.data.prices import Series
from forecaster.data.rules import ParsedRows, validate
from forecaster.data.sample import generate_ohlc
from forecaster.db import store
from forecaster.lifecycle import promotion
from forecaster.training import checkpoint
from forecaster.training.train import TrainConfig, train


def synthetic_series(ticker: str = "syn", days: int = 300, seed: int = 0, ar: float = 0.0) -> Series:
    f = generate_ohlc(days, seed, ar=ar)
    return Series(
        ticker, f["Date"].to_numpy(dtype=object), np.array(f[["Open", "High", "Low", "Close"]], dtype=np.float64)
    )


def make_checkpoint(path, scaling="relative", seed=0):
    """A tiny trained model whose weights are then randomised (by `seed`), so
    that every part of the network shows in its output (a zero head would hide the LSTM)."""
    series = {t: synthetic_series(t, days=150, seed=i) for i, t in enumerate(["aa", "bb"])}
    result = train(series, TrainConfig(epochs=1, hidden=8, layers=2, scaling=scaling))
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=gen) * 0.3 for k, v in result.checkpoint["state_dict"].items()}
    checkpoint.save(path, {**result.checkpoint, "state_dict": state})
    return path


def cut_copy(shared_data, dest, last_date):
    """The real files with only the rows up to `last_date`; returns the rows cut off per file."""
    cut = {}
    for src in shared_data.rglob("*.us.txt"):
        lines = src.read_text().splitlines(keepends=True)
        keep = [lines[0]] + [line for line in lines[1:] if line[:10] <= last_date]
        cut[src.name] = [line for line in lines[1:] if line[:10] > last_date]
        target = dest / src.parent.name / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(keep))
    return cut


def append_next_day(dest, cut, tickers=None):
    """Append each file's next cut-off row (only these tickers' files, if given)."""
    for path in dest.rglob("*.us.txt"):
        if cut[path.name] and (tickers is None or path.name.split(".")[0] in tickers):
            with open(path, "a") as fh:
                fh.write(cut[path.name].pop(0))


# -- reading one body, as the tests ask it (the library reads many at once) --


def read_fields(body: str, header: Header, *, first_line: int) -> Fields:
    """One body split and typed, by whichever path read_many chooses for it."""
    return read_many([Body(body, header, first_line)])[0]


def parse_rows(body: str, header: Header, *, first_line: int, today=None) -> ParsedRows:
    """One body split, typed and judged."""
    return validate([read_fields(body, header, first_line=first_line)], today)[0]


def fields_fast(body: str, header: Header, first_line: int = 2) -> Fields | None:
    """One body by the fast path (NumPy and the C parser) at any size; None
    where the library would read it line by line."""
    regular = _regular(Body(body, header, first_line))
    values = None if regular is None else _numbers([regular])
    return None if values is None else regular.fields(values[0])


# -- the daemon in a real subprocess --


def start_daemon(db_url, model, log_path, *extra):
    with open(log_path, "w") as log:  # the child keeps its own copy of the handle
        command = [sys.executable, "-m", "forecaster", "daemon", "--model", str(model), "--db", db_url]
        return subprocess.Popen(
            [*command, "--device", "cpu", *extra], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_for(log_path, text, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log_path.read_text()
        if text in content:
            return content
        if proc.poll() is not None:
            pytest.fail(f"daemon exited {proc.returncode} before {text!r}:\n{content}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"no {text!r} within {timeout}s:\n{log_path.read_text()}")


# -- the command line, and what a database holds --


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def count(engine, table="prices", where=""):
    with engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table} {where}").scalar()


def rejects(engine):
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT source, line, ticker, reason FROM rejected_rows ORDER BY rejection_id"
            )
        ]


def summaries_against_prices(engine) -> list[tuple]:
    """Rows where `tickers` or `price_dates` disagree with `prices` itself (none is right)."""
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT t.ticker, t.first_date, t.last_date, t.n_rows, p.first, p.last, p.n FROM tickers t "
                "JOIN (SELECT ticker, MIN(date) AS first, MAX(date) AS last, COUNT(*) AS n FROM prices "
                "      GROUP BY ticker) p ON p.ticker = t.ticker "
                "WHERE t.first_date != p.first OR t.last_date != p.last OR t.n_rows != p.n"
            )
        ] + [
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT d.date, d.n_rows, p.n FROM price_dates d JOIN (SELECT date, COUNT(*) AS n FROM prices "
                "GROUP BY date) p ON p.date = d.date WHERE d.n_rows != p.n"
            )
        ]


def rows(engine, sql, **params):
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def register_challenger(engine, path):
    with store.write_transaction(engine) as conn:
        promotion.decide(conn, load_model(path), "challenger", "")


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def offline_chromium():
    """Headless Chromium from Debian's packages (`make chromium`), driven by
    selenium through Debian's chromedriver, offline: every request goes to a
    proxy that is not there. Its console is kept (driver.get_log("browser"))."""
    from pathlib import Path

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    assert not missing, f"{', '.join(missing)} missing: run `make chromium` (Debian's chromium, chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    options.add_argument("--proxy-server=http://127.0.0.1:9")  # no network: nothing listens there
    options.add_argument("--proxy-bypass-list=<-loopback>")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
