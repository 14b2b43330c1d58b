import numpy as np
import torch

from forecaster import checkpoint
from forecaster.model import build_forecaster, ModelConfig, predict
from forecaster.train import TrainConfig, train

from helpers import synthetic_series

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


def test_best_validation_epoch_is_kept():
    series = {"syn": synthetic_series(days=400, seed=5)}
    result = train(series, TrainConfig(epochs=15, hidden=16, layers=1, batch_size=32, lr=0.05))
    h = result.history
    assert len(h["val_loss"]) == 15
    best = min([h["initial_val_loss"], *h["val_loss"]])
    kept = h["initial_val_loss"] if h["best_epoch"] == 0 else h["val_loss"][h["best_epoch"] - 1]
    assert kept == best


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


def test_bf16_training_is_reproducible_learns_and_keeps_float32_weights():
    series = {"ar": synthetic_series("ar", days=1500, seed=11, ar=0.6)}
    a = train(series, TrainConfig(epochs=15, precision="bf16"))
    b = train(series, TrainConfig(epochs=15, precision="bf16"))
    assert a.metrics == b.metrics
    assert a.metrics["tickers"]["ar"]["ratio"] < 0.9
    assert all(v.dtype == torch.float32 for v in a.checkpoint["state_dict"].values())


def test_an_unknown_precision_is_refused():
    import pytest
    from forecaster.errors import DataError
    with pytest.raises(DataError, match="unknown precision 'fp8'"):
        train({"s": synthetic_series(days=100)}, TrainConfig(precision="fp8"))
