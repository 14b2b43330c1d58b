import pytest
import torch
from helpers import synthetic_series

from forecaster.training import checkpoint
from forecaster.training.model import ModelConfig, build_forecaster, predict
from forecaster.training.precision import bf16_support
from forecaster.training.train import TrainConfig, train

FAST = dict(epochs=4, hidden=8, layers=1, batch_size=64)


def test_same_seed_same_run_other_seed_other_run():
    series = {"syn": synthetic_series(days=250, ar=0.5)}
    a, b, c = (train(series, TrainConfig(seed=s, **FAST)) for s in (3, 3, 4))
    assert a.metrics == b.metrics and a.history == b.history
    for k, v in a.checkpoint["state_dict"].items():
        torch.testing.assert_close(v, b.checkpoint["state_dict"][k], rtol=0, atol=0)
    assert a.history["train_loss"] != c.history["train_loss"]


def test_untrained_relative_model_is_exactly_naive():
    series = {"syn": synthetic_series(days=250)}
    result = train(series, TrainConfig(**{**FAST, "epochs": 1, "lr": 1e-12}))
    m = result.metrics["tickers"]["syn"]
    assert abs(m["test_rmse"] - m["naive_rmse"]) < 1e-4 * m["naive_rmse"]


def test_the_best_validation_epoch_beating_the_start_beyond_noise_is_kept():
    from forecaster.evidence import EVIDENCE, MIN_GAIN

    series = {"syn": synthetic_series(days=400, seed=5, ar=0.5)}
    result = train(series, TrainConfig(epochs=15, hidden=16, layers=1, batch_size=32, lr=0.05, patience=0))
    h = result.history
    assert len(h["val_loss"]) == 15
    enough = h["initial_val_loss"] * (1 - MIN_GAIN)
    candidates = [h["initial_val_loss"]] + [
        v for v, z in zip(h["val_loss"], h["val_z"], strict=True) if z >= EVIDENCE and v <= enough
    ]
    kept = h["initial_val_loss"] if h["best_epoch"] == 0 else h["val_loss"][h["best_epoch"] - 1]
    assert kept == min(candidates)
    assert h["best_epoch"] > 0  # AR(1) data: there is something to learn, and it shows beyond the noise


def test_a_series_with_one_day_memory_is_learned_well_below_naive():
    # AR(1) log-returns with phi = 0.6: the best predictor has RMSE about
    # sqrt(1 - phi^2) = 0.8 of naive's. The model must find that memory.
    series = {"ar": synthetic_series("ar", days=2000, seed=11, ar=0.6)}
    m = train(series, TrainConfig(epochs=25)).metrics["tickers"]["ar"]
    assert m["ratio"] < 0.88, m
    assert m["direction_accuracy"] > 0.6, m


def test_many_tickers_one_model_with_metrics_per_ticker_and_overall():
    series = {t: synthetic_series(t, days=200, seed=i) for i, t in enumerate(["a", "b", "c"])}
    result = train(series, TrainConfig(**FAST))
    assert set(result.metrics["tickers"]) == {"a", "b", "c"}
    assert result.metrics["overall"]["n_test"] == sum(m["n_test"] for m in result.metrics["tickers"].values())


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    for scaling in ("relative", "minmax"):
        series = {t: synthetic_series(t, days=200, seed=i) for i, t in enumerate(["a", "b"])}
        result = train(series, TrainConfig(scaling=scaling, **FAST))
        path = tmp_path / f"{scaling}.pt"
        checkpoint.save(path, result.checkpoint)
        data = checkpoint.load(path)
        model = build_forecaster(ModelConfig(**data["model_config"]), data["scaling"], data["state_dict"])
        x, idx = data["parity_windows"], data["parity_ticker_index"]
        torch.testing.assert_close(predict(model, x, idx), predict(result.model, x, idx), rtol=0, atol=0)
        assert data["provenance"]["tickers"]["a"]["rows"] == 200
        assert len(data["provenance"]["data_sha256"]) == 64


def test_a_pickle_with_code_is_refused_and_not_run(tmp_path):
    import pickle

    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"format": "forecaster-checkpoint", "x": Evil()}, fh)
    import pytest

    from forecaster.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not a loadable forecaster checkpoint"):
        checkpoint.load(path)
    assert not sentinel.exists()


def test_bf16_trains_in_bf16_where_this_cpu_can_and_in_fp32_with_a_warning_where_not():
    # Either branch runs, depending on this CPU; test_train_cli_falls_back_where_onednn_cannot_do_bf16
    # forces the second one on any CPU.
    series = {"ar": synthetic_series("ar", days=1500, seed=11, ar=0.6)}
    config = dict(epochs=15)
    fp32 = train(series, TrainConfig(**config))
    a = train(series, TrainConfig(precision="bf16", **config))
    b = train(series, TrainConfig(precision="bf16", **config))
    assert a.metrics == b.metrics  # reproducible either way
    assert all(v.dtype == torch.float32 for v in a.checkpoint["state_dict"].values())
    assert a.checkpoint["provenance"]["precision"] == a.metrics["overall"]["precision"] == a.precision
    assert a.checkpoint["train_config"]["precision"] == "bf16"  # what was asked for
    if bf16_support().ok:
        assert a.precision == "bf16" and a.warnings == []
        assert a.history["train_loss"] != fp32.history["train_loss"]  # it really ran in bfloat16
        assert a.metrics["tickers"]["ar"]["ratio"] < 0.9
    else:
        assert a.precision == "fp32"
        assert a.warnings == [f"{bf16_support().line()}; training in fp32 instead"]
        assert a.history == fp32.history


@pytest.mark.slow
def test_train_cli_falls_back_where_onednn_cannot_do_bf16(tmp_path, sample_dir):
    # ONEDNN_MAX_CPU_ISA=AVX2 makes oneDNN behave as on a CPU without AVX-512,
    # where it cannot build a bfloat16 LSTM: the fallback is tested on every CPU.
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "m.pt"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "forecaster",
            "train",
            "--data",
            str(sample_dir),
            "--all",
            "--db",
            f"sqlite:///{tmp_path / 'x.db'}",
            "--out",
            str(out),
            "--epochs",
            "2",
            "--precision",
            "bf16",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert (
        "warning: bf16: not supported on this CPU (ONEDNN_MAX_CPU_ISA=AVX2 limits oneDNN; oneDNN: "
        "could not create a primitive descriptor for the LSTM forward propagation primitive"
    ) in run.stderr
    assert "training in fp32 instead" in run.stderr and "Traceback" not in run.stderr
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    assert (metrics["overall"]["precision"], metrics["config"]["precision"]) == ("fp32", "bf16")
    assert checkpoint.load(out)["provenance"]["precision"] == "fp32"


def test_the_bf16_check_leaves_the_random_stream_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    bf16_support.cache_clear()
    bf16_support(7, 1)
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def test_an_unknown_precision_is_refused():
    import pytest

    from forecaster.errors import DataError

    with pytest.raises(DataError, match="unknown precision 'fp8'"):
        train({"s": synthetic_series(days=100)}, TrainConfig(precision="fp8"))


def test_training_leaves_the_global_random_state_as_it_was():
    import numpy as np

    torch.manual_seed(123)
    np.random.seed(7)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    train({"syn": synthetic_series(days=120)}, TrainConfig(**FAST))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert (np.random.get_state()[1] == numpy_state).all()
