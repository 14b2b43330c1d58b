"""`make bench`: the numbers that say whether a nightly run stays fast.

Sections (keys of benchmarks/results.json):
  scoring                ONNX Runtime (CPU) vs torch eager, median ms per call, interleaved; and
                         "alone": alternating blocks of one library's calls, paused between blocks
  ingest_full            first ingest of a synthetic universe (tickers x history days); and the
                         same read in the writing process (reader="inline") as a baseline
  nightly                one appended day per file, then `forecaster predict --data` as a
                         user runs it (a fresh process, start-up included): median seconds of
                         5 such nights after a warm-up night, alternating with the short
                         universe's nights; peak RSS
  nightly_short_history  the same on a universe with 10x shorter history
  nightly_20_rows        the same as nightly on a copy of its universe, with the same network whose
                         intervals read the 20-row window (the har before har60 read 60 rows)
  train                  the tutorial config (2x32 LSTM, 100 epochs, full batch) on aaxj
  train_universe         `forecaster train --all` on the long universe for 2,000 steps, alone and
                         under torchrun with 2 processes; the default budget extrapolated
  real_universe          the real tickers of ../shared/universe, as a user runs them: first ingest,
                         `train --all` (--universe-steps steps, the default budget extrapolated),
                         export, and nights of one more real day each; seconds and peak RSS, per
                         ticker and per row; the price flags found
  machine, calibration   the CPU, and figures measured in the same run (machine.py): start-up,
                         NumPy GFLOP/s, SQLite's own insert rate; at the start and at the end
  relative               each headline figure against its calibration, comparable across machines
The package's bytecode is compiled first, as an installed package's is.
Benchmarks print numbers; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import machine  # noqa: E402  (benchmarks/machine.py)

from forecaster.data.sample import append_one_day  # noqa: E402

SHARED = HERE.parents[1] / "shared" / "data"
UNIVERSE = HERE.parents[1] / "shared" / "universe"
REAL_NIGHTS = 3  # real days held back from the universe's files and appended one per night
BATCHES = (1, 64, 1024, 8192)
BLOCKS = 3  # alternating blocks per library for the 'alone' scoring times
NIGHTS = 5  # timed nightly runs per universe, each after one more appended day (single runs vary 15%)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tutorial_model(folder: Path) -> tuple[Path, Path]:
    """A 2x32 LSTM checkpoint and its ONNX export (weights randomised: speed does not care)."""
    import torch

    from forecaster.artifact.export import export
    from forecaster.data.prices import Series
    from forecaster.data.sample import generate_ohlc
    from forecaster.training import checkpoint
    from forecaster.training.train import TrainConfig, train

    f = generate_ohlc(300, seed=0)
    series = {
        "syn": Series(
            "syn", f["Date"].to_numpy(dtype=object), np.array(f[["Open", "High", "Low", "Close"]], dtype=np.float64)
        )
    }
    result = train(series, TrainConfig(epochs=1))
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=gen) * 0.2 for k, v in result.checkpoint["state_dict"].items()}
    ckpt = folder / "tutorial.pt"
    checkpoint.save(ckpt, {**result.checkpoint, "state_dict": state})
    return ckpt, export(ckpt, folder / "tutorial.onnx").path


def bench_scoring(ckpt: Path, onnx_path: Path, reps: int) -> list[dict]:
    import torch

    from forecaster.artifact.model_file import load_model
    from forecaster.artifact.verify import random_windows
    from forecaster.training import checkpoint
    from forecaster.training.model import ModelConfig, build_forecaster

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    data = checkpoint.load(ckpt)
    eager = build_forecaster(ModelConfig(**data["model_config"]), data["scaling"], data["state_dict"])
    model = load_model(onnx_path, "cpu")
    out = []
    for batch in BATCHES:
        x = random_windows(batch, 20, seed=batch)
        xt = torch.from_numpy(x)

        def run_ort(x=x):
            model.score(x)

        def run_torch(xt=xt):
            with torch.no_grad():
                eager(xt)

        run_ort(), run_torch()  # warm-up both
        interleaved = {run_ort: [], run_torch: []}
        for _ in range(reps):
            for fn, times in interleaved.items():
                times.append(_seconds(fn))
        # Interleaved calls also measure each library's idle threads, which spin
        # for a while after a call and slow the other's next one. So also: blocks
        # of calls of one library, alternating, with a pause between blocks.
        alone = {run_ort: [], run_torch: []}
        for _ in range(BLOCKS):
            for fn, times in alone.items():
                time.sleep(0.2)
                times.extend(_seconds(fn) for _ in range(reps))

        def ms(times):
            return 1000 * statistics.median(times)

        row = {
            "batch": batch,
            "ort_ms": ms(interleaved[run_ort]),
            "torch_ms": ms(interleaved[run_torch]),
            "ort_ms_alone": ms(alone[run_ort]),
            "torch_ms_alone": ms(alone[run_torch]),
            "threads": threads,
        }
        row["torch_over_ort"] = row["torch_ms"] / row["ort_ms"]
        row["torch_over_ort_alone"] = row["torch_ms_alone"] / row["ort_ms_alone"]
        out.append(row)
        log(
            f"scoring batch {batch}: interleaved ort {row['ort_ms']:.3f} ms, torch {row['torch_ms']:.3f} ms; "
            f"alone ort {row['ort_ms_alone']:.3f} ms, torch {row['torch_ms_alone']:.3f} ms"
        )
    return out


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_cli(args: list[str], launcher: list[str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one `forecaster` process.

    Peak RSS is the child's own VmHWM, sampled from /proc every 5 ms: the
    kernel's ru_maxrss would also count the pages of this (torch-loaded)
    parent that the child inherited for an instant before exec."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        command = [*(launcher or [sys.executable]), "-m", "forecaster", *args]
        proc = subprocess.Popen(command, stdout=out, stderr=err)
        peak_kb = 0
        while proc.poll() is None:
            peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
            time.sleep(0.005)
        seconds = time.perf_counter() - start
        out.seek(0), err.seek(0)
        text, errors = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"forecaster {' '.join(args)} failed:\n{text}\n{errors}")
    log(text.strip().splitlines()[-1][:200] if text.strip() else "(no output)")
    return seconds, peak_kb / 1024


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def ingest_universe(folder: Path, tickers: int, days: int, compare_inline: bool = False) -> dict:
    """Generate a universe and time its first ingest (and, as a baseline, the same read inline)."""
    from forecaster.data.ingest import ingest
    from forecaster.data.sample import write_sample_data
    from forecaster.db import store

    start = time.perf_counter()
    write_sample_data(folder / "data", tickers=tickers, days=days, seed=7)
    log(f"generated {tickers} x {days} in {time.perf_counter() - start:.0f} s")
    engine = store.connect(f"sqlite:///{folder / 'bench.db'}")
    start = time.perf_counter()
    report = ingest(engine, [folder / "data"])  # reader="auto": a reader process at this size
    seconds = time.perf_counter() - start
    engine.dispose()
    full = {
        "rows": report.rows_added,
        "files": report.files_read,
        "seconds": seconds,
        "rows_per_s": report.rows_added / seconds,
    }
    log(f"ingest {tickers} x {days}: {full['rows']} rows in {seconds:.1f} s = {full['rows_per_s']:.0f} rows/s")
    if compare_inline:  # the baseline: reading and writing take turns in one process
        inline_engine = store.connect(f"sqlite:///{folder / 'inline.db'}")
        start = time.perf_counter()
        ingest(inline_engine, [folder / "data"], reader="inline")
        inline_seconds = time.perf_counter() - start
        inline_engine.dispose()
        (folder / "inline.db").unlink()
        full.update(
            inline_seconds=inline_seconds,
            inline_rows_per_s=report.rows_added / inline_seconds,
            reader_process_speedup=inline_seconds / seconds,
        )
        log(
            f"  the same read in this process: {inline_seconds:.1f} s = {full['inline_rows_per_s']:.0f} rows/s "
            f"(reader process {full['reader_process_speedup']:.2f}x faster)"
        )
    return full


def twenty_row_model(ckpt: Path, folder: Path) -> Path:
    """The same network with the intervals that read its 20-row window (har, the
    default before har60): what a night cost when it read 20 rows a ticker."""
    from forecaster.artifact.export import export
    from forecaster.intervals import Calibration
    from forecaster.training import checkpoint

    data = checkpoint.load(ckpt)
    har = Calibration("har", tuple(data["intervals"]["quantiles"]), data["intervals"]["n"], (-1.15, 0.24, 0.28, 0.38))
    data = {**data, "intervals": har.to_metadata(), "parity_windows": data["parity_windows"][:, -20:]}
    checkpoint.save(folder / "twenty.pt", data)
    return export(folder / "twenty.pt", folder / "twenty.onnx").path


def nightly_runs(universes: list[tuple[Path, int, int, Path]]) -> list[dict]:
    """Nights on each universe in turn (so the machine's drift hits them alike): one more day
    appended, then `forecaster predict --data` as a user runs it. The first night is a warm-up:
    it also copies the exchange calendar into the database, which happens once, not nightly."""
    runs = {folder: [] for folder, *_ in universes}
    for night in range(NIGHTS + 1):
        for folder, _, _, onnx_path in universes:
            append_one_day(folder / "data", seed=night)
            runs[folder].append(
                run_cli(
                    [
                        "predict",
                        "--model",
                        str(onnx_path),
                        "--data",
                        str(folder / "data"),
                        "--db",
                        f"sqlite:///{folder / 'bench.db'}",
                        "--device",
                        "cpu",
                        "--quiet",
                    ]
                )
            )
    out = []
    for folder, tickers, days, onnx_path in universes:
        warm_up, nights = runs[folder][0], runs[folder][1:]
        seconds = statistics.median(s for s, _ in nights)
        rss = max(r for _, r in runs[folder])
        out.append(
            {
                "tickers": tickers,
                "history_days": days,
                "seconds": seconds,
                "peak_rss_mb": rss,
                "nights": [s for s, _ in nights],
                "first_night_seconds": warm_up[0],
            }
        )
        log(
            f"nightly {tickers} x {days}, {onnx_path.stem}: median of {NIGHTS} nights {seconds:.2f} s "
            f"({', '.join(f'{s:.2f}' for s, _ in nights)}; first night {warm_up[0]:.2f} s), peak RSS {rss:.0f} MB"
        )
    return out


def bench_train_universe(db: Path, folder: Path, steps: int) -> dict:
    """`forecaster train --all` on the long universe, as a user runs it, for `steps` optimiser
    steps (a fraction of the default budget, to keep the bench short), alone and under
    torchrun with 2 processes; the default budget's time is extrapolated from the parts."""
    from forecaster.training.config import STEP_BUDGET

    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", "2"]
    out = {}
    for name, launcher in (("one_process", None), ("torchrun_2", torchrun)):
        target = folder / f"universe_{name}.pt"
        seconds, _ = run_cli(
            ["train", "--all", "--db", f"sqlite:///{db}", "--steps", str(steps), "--out", str(target), "--quiet"],
            launcher,
        )
        metrics = json.loads(target.with_suffix(".metrics.json").read_text())
        t, o = metrics["timing"], metrics["overall"]
        # Validation runs 40 times whatever the budget: only the steps scale with it.
        per_step = (t["train_seconds"] - t["validation_seconds"]) / steps
        run = {
            "tickers": o["n_tickers"],
            "windows": o["train_windows"],
            "steps": steps,
            "seconds": seconds,
            "load_seconds": t["load_seconds"],
            "train_seconds": t["train_seconds"],
            "evaluate_seconds": t["evaluate_seconds"],
            "validation_seconds": t["validation_seconds"],
            "windows_per_s": 256 / per_step,
            "peak_rss_mb": t["peak_rss_mb"],
            "default_steps": STEP_BUDGET,
            "extrapolated_default_seconds": seconds + per_step * (STEP_BUDGET - steps),
        }
        out[name] = run
        log(
            f"train --all {run['tickers']} tickers, {steps} steps, {name}: {seconds:.0f} s (load "
            f"{run['load_seconds']:.0f}, steps {run['train_seconds']:.0f}, evaluate {run['evaluate_seconds']:.0f}), "
            f"{run['windows_per_s']:,.0f} windows/s, peak {run['peak_rss_mb']:.0f} MB; the default "
            f"{STEP_BUDGET} steps: about {run['extrapolated_default_seconds']:.0f} s"
        )
    return {**out["one_process"], "torchrun_2": out["torchrun_2"]}


def bench_real_universe(folder: Path, steps: int) -> dict:
    """The user's main job on real files: the last REAL_NIGHTS days of every
    file are held back, the rest ingested, trained on, exported; then each
    night gets one more real day and `forecaster predict --data`."""
    import sqlite3

    from forecaster.training.config import STEP_BUDGET

    if not (UNIVERSE / "Stocks").is_dir():
        raise SystemExit(f"real_universe needs the real tickers in {UNIVERSE}")
    data, db = folder / "data", f"sqlite:///{folder / 'real.db'}"
    texts = {src: src.read_text().splitlines(keepends=True) for src in UNIVERSE.rglob("*.us.txt")}
    # The nights: the REAL_NIGHTS newest dates that most files have; every row from the first of
    # them on is held back, and night k appends its date's rows (the last night also any later ones).
    counts = Counter(line[:10] for lines in texts.values() for line in lines[1:])
    nights = sorted(d for d, n in counts.items() if n >= len(texts) // 2)[-REAL_NIGHTS:]
    held = {}
    for src, lines in texts.items():
        target = data / src.parent.name / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        held[target] = [line for line in lines[1:] if line[:10] >= nights[0]]
        target.write_text("".join([lines[0], *(line for line in lines[1:] if line[:10] < nights[0])]))
    files, rows = len(held), sum(len(lines) - 1 for lines in texts.values())
    out: dict = {"files": files, "rows": rows}
    out["ingest_seconds"], out["ingest_peak_rss_mb"] = run_cli(["ingest", str(data), "--db", db, "--quiet"])
    with sqlite3.connect(folder / "real.db") as conn:
        out["price_flags"] = dict(conn.execute("SELECT kind, COUNT(*) FROM price_flags GROUP BY kind").fetchall())
    model = folder / "real.pt"
    out["train_seconds"], out["train_peak_rss_mb"] = run_cli(
        ["train", "--all", "--db", db, "--steps", str(steps), "--out", str(model), "--quiet"]
    )
    metrics = json.loads(model.with_suffix(".metrics.json").read_text())
    t, o = metrics["timing"], metrics["overall"]
    per_step = (t["train_seconds"] - t["validation_seconds"]) / steps
    out.update(
        steps=steps,
        extrapolated_default_train_seconds=out["train_seconds"] + per_step * (STEP_BUDGET - steps),
        pooled_ratio=o["pooled_ratio"],
        mean_ratio=o["mean_ratio"],
        tickers_undefined_ratio=len(o["tickers_undefined_ratio"]),
        flagged_windows_skipped=o.get("flagged_windows_skipped", 0),
    )
    onnx_path = folder / "real.onnx"
    out["export_seconds"], _ = run_cli(["export", str(model), "--out", str(onnx_path)])
    timed = []
    for k, night in enumerate(nights):
        for target, lines in held.items():
            tonight = [line for line in lines if line[:10] == night or (k == len(nights) - 1 and line[:10] > night)]
            if tonight:
                with open(target, "a") as fh:
                    fh.write("".join(tonight))
        timed.append(
            run_cli(
                ["predict", "--model", str(onnx_path), "--data", str(data), "--db", db, "--device", "cpu", "--quiet"]
            )
        )
    # The first night also copies the exchange calendar into the database (once, not nightly).
    out["nightly_seconds"] = statistics.median(s for s, _ in timed[1:])
    out["nightly_peak_rss_mb"] = max(r for _, r in timed)
    out["nights"] = nights
    out["per_ticker_ms"] = {k: 1000 * out[f"{k}_seconds"] / files for k in ("ingest", "train", "export", "nightly")}
    out["ingest_rows_per_s"] = rows / out["ingest_seconds"]
    log(
        f"real universe {files} tickers, {rows:,} rows: ingest {out['ingest_seconds']:.1f} s "
        f"({out['ingest_peak_rss_mb']:.0f} MB, flags {out['price_flags']}), train {steps} steps "
        f"{out['train_seconds']:.0f} s ({out['train_peak_rss_mb']:.0f} MB; the default {STEP_BUDGET}: about "
        f"{out['extrapolated_default_train_seconds']:.0f} s), export {out['export_seconds']:.1f} s, nightly "
        f"{out['nightly_seconds']:.2f} s ({out['nightly_peak_rss_mb']:.0f} MB)"
    )
    return out


def bench_train() -> dict:
    from forecaster.data.ingest import ingest
    from forecaster.data.prices import load_series
    from forecaster.data.windows import make_windows
    from forecaster.db import store
    from forecaster.training import train as train_module
    from forecaster.training.precision import bf16_support
    from forecaster.training.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        engine = store.connect(f"sqlite:///{tmp}/t.db")
        ingest(engine, [SHARED / "ETFs" / "aaxj.us.txt"])
        series = load_series(engine, ["aaxj"])
    train(series, TrainConfig(batch_size=0, epochs=1))  # warm-up: first-call imports
    out = {}
    # The baseline: glibc's own malloc thresholds, i.e. training without
    # forecaster.training.allocator (every pass faults in fresh workspace pages).
    runs = [("fp32_glibc_defaults", "fp32", False), ("fp32", "fp32", True), ("bf16", "bf16", True)]
    kept_memory = train_module.reuse_freed_memory
    support = bf16_support()
    for name, precision, keep in runs:
        if precision == "bf16" and not support.ok:  # record why, and carry on
            log(f"train aaxj tutorial config: {support.line()}")
            out[name] = {"seconds": None, "not_supported": support.line()}
            continue
        train_module.reuse_freed_memory = kept_memory if keep else contextlib.nullcontext
        config = TrainConfig(batch_size=0, epochs=100, precision=precision)  # the tutorial: one full batch
        try:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            result = train(series, config)
            seconds = time.perf_counter() - start
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        finally:
            train_module.reuse_freed_memory = kept_memory
        ratio = result.metrics["tickers"]["aaxj"]["ratio"]
        log(f"train aaxj tutorial config, {name}: {seconds:.1f} s, {faults:,} page faults, held-out ratio {ratio:.3f}")
        out[name] = {"seconds": seconds, "ratio_to_naive": ratio, "minor_page_faults": faults}
    windows = len(make_windows(series["aaxj"].ohlc, 20)[1])
    return {
        "windows": windows,
        "epochs": 100,
        "batch_size": "full",
        "seconds": out["fp32"]["seconds"],
        "bf16_seconds": out["bf16"]["seconds"],
        "glibc_defaults_seconds": out["fp32_glibc_defaults"]["seconds"],
        "kept_memory_speedup": out["fp32_glibc_defaults"]["seconds"] / out["fp32"]["seconds"],
        "precisions": out,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickers", type=int, default=5000)
    ap.add_argument("--days", type=int, default=2500)
    ap.add_argument("--short-days", type=int, default=250)
    ap.add_argument("--reps", type=int, default=15, help="timed calls per batch size")
    ap.add_argument("--only", help="comma list of sections to run")
    ap.add_argument("--universe-steps", type=int, default=2000, help="optimiser steps of the train_universe run")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None

    def wanted(name):
        return only is None or name in only

    # A user's installed package has its bytecode compiled (pip does it at
    # install; an editable install at first import). Without it, a process
    # started with PYTHONDONTWRITEBYTECODE=1 recompiles every module it
    # imports, about 0.04 s a night that no user pays.
    compileall.compile_dir(str(HERE.parent / "forecaster"), quiet=1)
    log(f"machine: {machine.describe()}")
    results: dict = {"machine": machine.describe(), "calibration": {"start": machine.calibrate()}}
    log(f"calibration: {results['calibration']['start']}")
    with tempfile.TemporaryDirectory(prefix="forecaster-bench-") as tmp:
        tmp = Path(tmp)
        ckpt, onnx_path = tutorial_model(tmp)
        if wanted("scoring"):
            results["scoring"] = bench_scoring(ckpt, onnx_path, args.reps)
        universes = []
        if wanted("nightly"):
            results["ingest_full"] = ingest_universe(tmp / "long", args.tickers, args.days, compare_inline=True)
            universes.append(("nightly", (tmp / "long", args.tickers, args.days, onnx_path)))
        if wanted("nightly_short_history"):
            results["ingest_short"] = ingest_universe(tmp / "short", args.tickers, args.short_days)
            universes.append(("nightly_short_history", (tmp / "short", args.tickers, args.short_days, onnx_path)))
        if wanted("nightly_20_rows"):
            ingest_universe(tmp / "long20", args.tickers, args.days)  # the same seeded universe, its own database
            model = twenty_row_model(ckpt, tmp)
            universes.append(("nightly_20_rows", (tmp / "long20", args.tickers, args.days, model)))
        for (key, _), nights in zip(universes, nightly_runs([u for _, u in universes]), strict=True):
            results[key] = nights
        if wanted("train_universe") and (tmp / "long" / "bench.db").exists():
            results["train_universe"] = bench_train_universe(tmp / "long" / "bench.db", tmp, args.universe_steps)
        if "nightly" in results and "nightly_short_history" in results:
            results["history_cost_ratio"] = results["nightly"]["seconds"] / results["nightly_short_history"]["seconds"]
        if "nightly" in results and "nightly_20_rows" in results:
            results["rows_cost_ratio"] = results["nightly"]["seconds"] / results["nightly_20_rows"]["seconds"]
    if wanted("train"):
        results["train"] = bench_train()
    if wanted("real_universe"):
        with tempfile.TemporaryDirectory(prefix="forecaster-real-") as tmp:
            results["real_universe"] = bench_real_universe(Path(tmp), args.universe_steps)
    # The machine's speed drifts during a run of minutes: calibrate again and use the mean.
    calibration = results["calibration"]
    calibration["end"] = machine.calibrate()
    calibration.update(
        {k: statistics.mean([calibration["start"][k], calibration["end"][k]]) for k in calibration["start"]}
    )
    results["relative"] = relative(results)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


def relative(r: dict) -> dict:
    """Headline figures over their calibration: the numbers to compare between machines."""
    c, out = r["calibration"], {}
    if "nightly" in r:
        out["nightly_over_startup"] = r["nightly"]["seconds"] / c["startup_s"]
    if "ingest_full" in r:
        out["ingest_over_sqlite"] = r["ingest_full"]["rows_per_s"] / c["sqlite_rows_per_s"]
    if "real_universe" in r:
        out["real_nightly_over_startup"] = r["real_universe"]["nightly_seconds"] / c["startup_s"]
    if "train" in r:  # seconds x GFLOP/s: the run's length in units of this machine's arithmetic
        out["train_gflop_seconds"] = r["train"]["seconds"] * c["numpy_gflops"]
    return out


def print_table(r: dict) -> None:
    if "scoring" in r:
        print(
            "| batch | ORT ms, interleaved | torch ms, interleaved | torch / ORT | ORT ms, alone | "
            "torch ms, alone | torch / ORT |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for row in r["scoring"]:
            print(
                f"| {row['batch']} | {row['ort_ms']:.3f} | {row['torch_ms']:.3f} | {row['torch_over_ort']:.2f} | "
                f"{row['ort_ms_alone']:.3f} | {row['torch_ms_alone']:.3f} | {row['torch_over_ort_alone']:.2f} |"
            )
        print()
    m, c = r["machine"], r["calibration"]
    print(
        f"Machine: {m['cpu']}, {m['usable_cpus']} CPUs, {', '.join(m['flags'])}; calibration (mean of start "
        f"and end): start-up {c['startup_s']:.2f} s, NumPy {c['numpy_gflops']:.0f} GFLOP/s, "
        f"SQLite {c['sqlite_rows_per_s']:,.0f} rows/s"
    )
    print()
    print("| measure | value |")
    print("|---|---:|")
    if "ingest_full" in r:
        i = r["ingest_full"]
        print(
            f"| first ingest, {i['files']} files, {i['rows']:,} rows | {i['seconds']:.1f} s = "
            f"{i['rows_per_s']:,.0f} rows/s |"
        )
        if "inline_seconds" in i:
            print(
                f"| the same, read in the writing process (no reader process) | {i['inline_seconds']:.1f} s = "
                f"{i['inline_rows_per_s']:,.0f} rows/s ({i['reader_process_speedup']:.2f}x slower) |"
            )
    if "ingest_short" in r:
        i = r["ingest_short"]
        print(
            f"| first ingest, {i['files']} smaller files, {i['rows']:,} rows | {i['seconds']:.1f} s = "
            f"{i['rows_per_s']:,.0f} rows/s |"
        )
    for key, model in (("nightly", ""), ("nightly_short_history", ""), ("nightly_20_rows", ", the 20-row model")):
        if key in r:
            n = r[key]
            print(
                f"| nightly run, {n['tickers']} tickers x {n['history_days']} days{model} | "
                f"{n['seconds']:.2f} s, peak RSS {n['peak_rss_mb']:.0f} MB |"
            )
    if "history_cost_ratio" in r:
        print(f"| cost of 10x longer history | {r['history_cost_ratio']:.2f}x |")
    if "rows_cost_ratio" in r:
        print(f"| cost of reading 60 rows a ticker instead of 20 | {r['rows_cost_ratio']:.2f}x |")
    if "train" in r:
        t = r["train"]
        bf16 = (
            f"{t['bf16_seconds']:.1f} s (--precision bf16)"
            if t["bf16_seconds"] is not None
            else t["precisions"]["bf16"]["not_supported"]
        )
        print(
            f"| train aaxj, tutorial config ({t['windows']} windows, 100 epochs, full batch) | "
            f"{t['seconds']:.1f} s (fp32), {bf16} |"
        )
        print(
            f"| the same fp32, glibc's malloc defaults (no forecaster.training.allocator) | "
            f"{t['glibc_defaults_seconds']:.1f} s ({t['kept_memory_speedup']:.2f}x slower; page faults "
            f"{t['precisions']['fp32_glibc_defaults']['minor_page_faults']:,} vs "
            f"{t['precisions']['fp32']['minor_page_faults']:,}) |"
        )
    if "train_universe" in r:
        for name, u in (
            ("one process", r["train_universe"]),
            ("torchrun, 2 processes", r["train_universe"]["torchrun_2"]),
        ):
            print(
                f"| train --all, {u['tickers']} tickers ({u['windows']:,} training windows), {u['steps']} steps, "
                f"{name} | {u['seconds']:.0f} s (load {u['load_seconds']:.0f}, steps {u['train_seconds']:.0f}, "
                f"evaluate {u['evaluate_seconds']:.0f}), {u['windows_per_s']:,.0f} windows/s, peak "
                f"{u['peak_rss_mb']:.0f} MB; {u['default_steps']:,} steps: ~{u['extrapolated_default_seconds']:.0f} s |"
            )
    if "real_universe" in r:
        u = r["real_universe"]
        per = u["per_ticker_ms"]
        print(
            f"| real universe, {u['files']} tickers, {u['rows']:,} rows: first ingest | {u['ingest_seconds']:.1f} s "
            f"({u['ingest_rows_per_s']:,.0f} rows/s, {per['ingest']:.1f} ms/ticker), "
            f"peak {u['ingest_peak_rss_mb']:.0f} MB; flags {u['price_flags']} |"
        )
        print(
            f"| real universe: train --all, {u['steps']} steps | {u['train_seconds']:.0f} s, peak "
            f"{u['train_peak_rss_mb']:.0f} MB; default budget ~{u['extrapolated_default_train_seconds']:.0f} s; "
            f"pooled ratio {u['pooled_ratio']:.4f}, {u['flagged_windows_skipped']:,} flagged windows left out |"
        )
        print(
            f"| real universe: export; nightly run | {u['export_seconds']:.1f} s; {u['nightly_seconds']:.2f} s "
            f"({per['nightly']:.2f} ms/ticker), peak {u['nightly_peak_rss_mb']:.0f} MB |"
        )
    rel = r.get("relative", {})
    if "nightly_over_startup" in rel:
        print(f"| nightly run / start-up | {rel['nightly_over_startup']:.2f} |")
    if "ingest_over_sqlite" in rel:
        print(f"| first ingest rows/s / SQLite's own rows/s | {rel['ingest_over_sqlite']:.2f} |")
    if "train_gflop_seconds" in rel:
        print(f"| train seconds x NumPy GFLOP/s | {rel['train_gflop_seconds']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
