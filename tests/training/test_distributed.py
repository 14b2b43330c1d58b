"""The same training as one DDP job of 2 CPU processes under torchrun (gloo),
and a training stopped by SIGTERM that resumes. Real processes."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from forecaster.data.ingest import ingest
from forecaster.data.sample import write_sample_data
from forecaster.data.universe import load_universe, stored_counts
from forecaster.db import store
from forecaster.training import checkpoint
from forecaster.training.split import index_windows

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
FORECASTER = [sys.executable, "-m", "forecaster"]
SMALL = ["--hidden", "16", "--layers", "2", "--batch-size", "64", "--quiet"]
# Two processes see the same shuffled windows and average their gradients:
# the held-out ratios match one process's to float noise. Stated tolerance:
RATIO_TOLERANCE = 0.005


@pytest.fixture(scope="module")
def universe_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    write_sample_data(folder / "d", tickers=6, days=400, seed=3, ar=0.3)
    url = f"sqlite:///{folder / 't.db'}"
    ingest(store.connect(url), [folder / "d"])
    return url


@pytest.mark.slow
def test_two_processes_make_the_one_process_model(universe_db, tmp_path):
    one = subprocess.run(
        [
            *FORECASTER,
            "train",
            "--all",
            "--db",
            universe_db,
            "--out",
            str(tmp_path / "one.pt"),
            "--epochs",
            "2",
            *SMALL,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            TORCHRUN,
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "forecaster",
            "train",
            "--all",
            "--db",
            universe_db,
            "--out",
            str(tmp_path / "two.pt"),
            "--epochs",
            "2",
            *SMALL,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("wrote ") == 1  # rank 0 alone reports...
    written = sorted(p.name for p in tmp_path.glob("two*"))
    assert "two.pt" in written and "two.metrics.json" in written  # ...and writes

    metrics = {name: json.loads((tmp_path / f"{name}.metrics.json").read_text())["overall"] for name in ("one", "two")}
    assert (metrics["one"]["world_size"], metrics["two"]["world_size"]) == (1, 2)
    assert abs(metrics["two"]["mean_ratio"] - metrics["one"]["mean_ratio"]) <= RATIO_TOLERANCE
    provenance = checkpoint.load(tmp_path / "two.pt")["provenance"]
    assert (provenance["world_size"], provenance["device"]) == (2, "cpu")
    # The checkpoint is the same format as ever: it exports and verifies.
    assert subprocess.run([*FORECASTER, "export", str(tmp_path / "two.pt")], capture_output=True).returncode == 0
    verified = subprocess.run([*FORECASTER, "verify", str(tmp_path / "two.onnx")], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr


def test_the_ranks_see_every_training_window_once_per_epoch_between_them(universe_db):
    from forecaster.training.config import TrainConfig
    from forecaster.training.distributed import World
    from forecaster.training.loop import batch_rows, plan

    engine = store.connect(universe_db)
    index = index_windows(load_universe(engine, list(stored_counts(engine))), 20, 0.2, 0.2)
    config = TrainConfig(batch_size=64, epochs=2)
    budget = plan(len(index.train), config)
    ranks = [World(r, 2, torch.device("cpu")) for r in (0, 1)]
    for epoch in range(2):
        steps = range(epoch * budget.per_epoch, (epoch + 1) * budget.per_epoch)
        mine = [np.concatenate([batch_rows(index.train, budget, config.seed, s, w) for s in steps]) for w in ranks]
        assert not set(mine[0]) & set(mine[1])
        assert sorted(np.concatenate(mine).tolist()) == sorted(index.train.tolist())
    alone = World(0, 1, torch.device("cpu"))  # the same batches, split: the effective batch stays the same
    for step in (0, budget.per_epoch + 3):
        whole = batch_rows(index.train, budget, config.seed, step, alone)
        split = [batch_rows(index.train, budget, config.seed, step, w) for w in ranks]
        assert sorted(whole.tolist()) == sorted(np.concatenate(split).tolist())


@pytest.mark.slow
def test_sigterm_saves_a_state_and_resume_finishes_the_same_training(universe_db, tmp_path):
    out = tmp_path / "m.pt"
    log = tmp_path / "train.log"
    args = [
        "train",
        "--all",
        "--db",
        universe_db,
        "--out",
        str(out),
        "--steps",
        "4000",
        "--patience",
        "0",  # the whole budget: the stop must come mid-training
        "--hidden",
        "8",
        "--layers",
        "1",
        "--batch-size",
        "32",
    ]
    with open(log, "w") as fh:
        proc = subprocess.Popen([*FORECASTER, *args], stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        # The progress bar is drawn inside the loop, after the stop handler is
        # installed: from then on a SIGTERM stops it at its next step, whenever
        # it lands (step 0 included), so the outcome does not depend on timing.
        while "train:" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    said = log.read_text()
    state = out.with_suffix(".state.pt")
    assert f"; resume with: forecaster train --resume {state}" in said and "Traceback" not in said
    assert state.exists() and not out.exists()
    stopped_at = checkpoint.load_state(state)["step"]
    assert 0 <= stopped_at < 4000

    resumed = subprocess.run(
        [*FORECASTER, "train", "--resume", str(state), "--quiet"], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    assert out.exists() and not state.exists()
    assert json.loads(out.with_suffix(".metrics.json").read_text())["overall"]["steps"] == 4000
    # The same model as a training never stopped: weights equal to the bit.
    whole = tmp_path / "whole.pt"
    uninterrupted = [*args[: args.index("--out")], "--out", str(whole), *args[args.index("--out") + 2 :]]
    assert subprocess.run([*FORECASTER, *uninterrupted, "--quiet"], capture_output=True, timeout=600).returncode == 0
    resumed, never_stopped = checkpoint.load(out), checkpoint.load(whole)
    # The same path step by step (every check's training and validation loss), and the same weights.
    for curve in ("train_loss", "val_loss", "val_z"):
        assert resumed["history"][curve] == never_stopped["history"][curve], curve
    assert resumed["state_dict"].keys() == never_stopped["state_dict"].keys()
    assert all(torch.equal(resumed["state_dict"][k], never_stopped["state_dict"][k]) for k in resumed["state_dict"])


RANK_READS_LATE = """
import sys
from forecaster.db import store
from forecaster.data.ingest import ingest
from forecaster.training import job
from forecaster.training.config import TrainConfig
from forecaster.training.distributed import join, leave

url, out, late = sys.argv[1:4]
engine = store.connect(url)
world = join("cpu")
if world.rank == 1:  # an ingest lands between rank 0's read of the prices and this one's
    real_load = job.load_universe
    def load_after_an_ingest(engine, tickers):
        ingest(engine, [late])
        return real_load(engine, tickers)
    job.load_universe = load_after_an_ingest
real_train = job.train_universe
def train_and_say(universe, *args, **kwargs):
    print(f"rank {world.rank} trains on {universe.data_hash()}", flush=True)
    return real_train(universe, *args, **kwargs)
job.train_universe = train_and_say
config = TrainConfig(hidden=8, layers=1, steps=20, batch_size=32, device="cpu")
outcome = job.run_training(engine, job.TrainJob([], True, config, job.Path(out)), world)
if world.is_main:
    print("trained on", outcome.metrics["overall"]["n_test"], "held-out windows", flush=True)
leave(world)
"""


@pytest.mark.slow
def test_every_rank_trains_on_rank_0s_snapshot_of_the_prices(universe_db, tmp_path):
    from forecaster.data.universe import load_universe

    script = tmp_path / "late.py"
    script.write_text(RANK_READS_LATE)
    late = tmp_path / "late"
    engine = store.connect(universe_db)
    newest = engine.connect().exec_driver_sql("SELECT MAX(date) FROM price_dates").scalar()
    for ticker in stored_counts(engine):  # a new session for every ticker, after the newest stored
        (late / f"{ticker}.us.txt").parent.mkdir(exist_ok=True)
        (late / f"{ticker}.us.txt").write_text("Date,Open,High,Low,Close\n2017-11-13,10,11,9,10.5\n")
    assert newest < "2017-11-13"
    before = load_universe(engine, list(stored_counts(engine)))
    done = subprocess.run(
        [
            TORCHRUN,
            "--standalone",
            "--nproc-per-node",
            "2",
            str(script),
            universe_db,
            str(tmp_path / "m.pt"),
            str(late),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained on" in done.stdout
    # Both ranks trained on the prices as rank 0 found them, and the checkpoint says so.
    said = sorted(re.findall(r"rank \d trains on [0-9a-f]{64}", done.stdout))  # two processes share the pipe
    assert said == [f"rank {r} trains on {before.data_hash()}" for r in (0, 1)]
    assert checkpoint.load(tmp_path / "m.pt")["provenance"]["data_sha256"] == before.data_hash()
