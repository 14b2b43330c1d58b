"""What machine a benchmark ran on, and calibration figures measured in the
same run, so that results from two machines can be compared as ratios.

Absolute timings do not carry between machines (an AVX2 EPYC ingested at
half the rate of an AVX-512 one). Each headline figure is therefore also
reported against a calibration figure of the same kind:
  startup_s          a fresh Python process importing what a nightly run imports
  numpy_gflops       a fixed float32 matrix product (1024 x 1024), single call
  sqlite_rows_per_s  SQLite inserting generated rows into a table shaped like
                     `prices`, in pure SQL (no Python per row)
"""

from __future__ import annotations

import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
STARTUP_IMPORTS = "import forecaster.cli, forecaster.serving.nightly, forecaster.artifact.model_file"


def describe() -> dict:
    """CPU model, the instruction sets that matter here, cores, Python."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("unknown", "", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": model,
        "flags": [f for f in FLAGS_OF_INTEREST if f in flags],
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def startup_seconds(runs: int = 5) -> float:
    """Median wall time of a fresh interpreter importing the nightly run's modules."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", STARTUP_IMPORTS], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def numpy_gflops(n: int = 1024, runs: int = 20) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    a @ b  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def sqlite_rows_per_s(rows: int = 1_000_000) -> float:
    """Generated rows into a WITHOUT ROWID (ticker, date) table, 16 KiB pages, WAL: SQLite alone."""
    with tempfile.TemporaryDirectory() as tmp:
        con = sqlite3.connect(f"{tmp}/calibration.db", isolation_level=None)
        con.execute("PRAGMA page_size = 16384")
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = NORMAL")
        con.execute(
            "CREATE TABLE p (ticker TEXT, date TEXT, open REAL, high REAL, low REAL, close REAL, "
            "volume REAL, PRIMARY KEY (ticker, date)) WITHOUT ROWID"
        )
        start = time.perf_counter()
        con.execute("BEGIN")
        con.execute(f"""
            WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {rows - 1})
            INSERT INTO p SELECT printf('t%04d', i / 2500), date('2008-01-01', '+' || (i % 2500) || ' days'),
                                 10 + i % 7, 11 + i % 7, 9 + i % 7, 10.5 + i % 7, i % 1000 FROM n""")
        con.execute("COMMIT")
        seconds = time.perf_counter() - start
        con.close()
    return rows / seconds


def calibrate() -> dict:
    return {"startup_s": startup_seconds(), "numpy_gflops": numpy_gflops(), "sqlite_rows_per_s": sqlite_rows_per_s()}
