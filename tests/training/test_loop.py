"""The training loop: its budget, and a stop that resumes to the very same model."""

import numpy as np
import pytest
import torch
from helpers import synthetic_series

from forecaster.data.universe import Universe
from forecaster.errors import DataError
from forecaster.training import checkpoint
from forecaster.training.config import STEP_BUDGET, TrainConfig
from forecaster.training.distributed import World
from forecaster.training.loop import TrainingStoppedError, plan
from forecaster.training.train import train_universe

ALONE = World(0, 1, torch.device("cpu"))


def test_the_budget_is_the_tutorial_s_100_epochs_for_small_sets_and_a_step_budget_for_large_ones():
    small = plan(1_800, TrainConfig())  # one ticker: 8 steps of 256 an epoch
    assert (small.unit, small.steps, small.per_epoch, small.eval_every) == ("epoch", 800, 8, 8)
    large = plan(10_000_000, TrainConfig())  # 5,000 tickers x 2,500 days
    assert (large.unit, large.steps, large.batch) == ("step", STEP_BUDGET, 256)
    assert large.eval_every * 40 == STEP_BUDGET
    border = STEP_BUDGET * 256 // 100  # 100 epochs are exactly the budget: still epochs
    assert plan(border, TrainConfig()).unit == "epoch" and plan(border + 256, TrainConfig()).unit == "step"
    assert plan(10_000_000, TrainConfig(epochs=2)).steps == 2 * 39_063  # asked for: epochs however many
    assert plan(1_800, TrainConfig(steps=50, epochs=3)).steps == 50  # --steps wins
    assert plan(1_800, TrainConfig(batch_size=0)).per_epoch == 1  # the tutorial's full batch


def small_universe():
    return Universe.from_series({t: synthetic_series(t, days=160, seed=i, ar=0.4) for i, t in enumerate("abc")})


def test_a_stopped_training_resumes_to_exactly_the_same_model(tmp_path):
    config = TrainConfig(steps=60, batch_size=32, hidden=8, layers=1, seed=3, patience=0)  # the whole budget
    whole = train_universe(small_universe(), config, ALONE)

    calls = iter(range(10_000))
    state = tmp_path / "m.state.pt"
    with pytest.raises(
        TrainingStoppedError, match=f"stopped at step 25 of 60; resume with: forecaster train --resume {state}"
    ):
        train_universe(
            small_universe(),
            config,
            ALONE,
            should_stop=lambda: next(calls) == 25,
            state_path=state,
            job={"what": "the job, as plain data"},
        )
    saved = checkpoint.load_state(state)
    assert saved["step"] == 25 and saved["job"] == {"what": "the job, as plain data"}
    resumed = train_universe(small_universe(), config, ALONE, state_path=state, resume=saved)
    for name, tensor in whole.model.net.state_dict().items():
        assert torch.equal(tensor, resumed.model.net.state_dict()[name]), name
    assert resumed.history == whole.history and resumed.metrics == whole.metrics
    assert not state.exists()  # finished: nothing left to resume


def test_a_state_is_refused_when_the_prices_changed(tmp_path):
    config = TrainConfig(steps=20, batch_size=32, hidden=8, layers=1)
    state = tmp_path / "m.state.pt"
    with pytest.raises(TrainingStoppedError):
        train_universe(small_universe(), config, ALONE, should_stop=lambda: True, state_path=state)
    changed = small_universe()
    changed.ohlc[-1] *= 1.01
    with pytest.raises(DataError, match="the prices changed since the training was stopped"):
        train_universe(changed, config, ALONE, resume=checkpoint.load_state(state))


def test_the_validation_sample_has_a_fixed_size_and_seed():
    from forecaster.training.loop import Validation
    from forecaster.training.model import build_forecaster
    from forecaster.training.split import fit_scaling, index_windows

    universe = small_universe()
    index = index_windows(universe, 20, 0.2, 0.5)  # 3 x 60 validation windows
    model = build_forecaster(TrainConfig().model_config(), fit_scaling("relative", universe, index))

    def loss(**settings):
        return Validation(model, universe, index, TrainConfig(**settings), ALONE).check()[0]

    few, again, other = loss(val_sample=50, seed=1), loss(val_sample=50, seed=1), loss(val_sample=50, seed=2)
    everything = loss(val_sample=1_000)
    assert few == again != other and everything != few and np.isfinite(everything)


def test_a_step_is_kept_only_when_it_beats_the_start_beyond_the_validation_noise():
    from forecaster.evidence import EVIDENCE, MIN_GAIN

    result = train_universe(small_universe(), TrainConfig(steps=40, batch_size=32, hidden=8, layers=1), ALONE)
    h = result.history
    kept = h["initial_val_loss"] if h["best_step"] == 0 else h["val_loss"][h["at"].index(h["best_at"])]
    assert kept <= h["initial_val_loss"]
    assert h["best_step"] == 0 or (h["kept_z"] >= EVIDENCE and kept <= h["initial_val_loss"] * (1 - MIN_GAIN))
    # On prices with nothing to learn, no step is kept: the model stays the naive forecast.
    noise = Universe.from_series({t: synthetic_series(t, days=400, seed=i) for i, t in enumerate("abcd")})
    walk = train_universe(noise, TrainConfig(steps=200, batch_size=32, hidden=8, layers=1), ALONE)
    assert walk.history["best_step"] == 0 and walk.metrics["overall"]["is_naive"]
    assert walk.metrics["overall"]["mean_ratio"] == 1.0


def test_training_stops_after_patience_checks_without_a_better_step():
    """A random walk: nothing beats the naive start, so the training stops
    after `patience` checks and keeps the start; patience 0 spends the budget."""
    walk = Universe.from_series({t: synthetic_series(t, days=300, seed=i) for i, t in enumerate("abcd")})
    config = TrainConfig(steps=400, batch_size=32, hidden=8, layers=1, seed=1, patience=3)
    stopped = train_universe(walk, config, ALONE)
    every = plan(len(walk.dates), config).eval_every  # any size: eval_every is steps // 40
    h = stopped.history
    if h["best_step"] == 0:  # the usual case on a random walk
        assert h["stopped_early_at"] == 3 * every and h["steps"] == 3 * every and len(h["val_loss"]) == 3
    else:  # a step beat the start: the stop comes 3 checks after the last kept one
        assert h["stopped_early_at"] == h["best_step"] + 3 * every
    whole = train_universe(walk, TrainConfig(**{**vars(config), "patience": 0}), ALONE).history
    assert "stopped_early_at" not in whole and whole["steps"] == 400 and len(whole["val_loss"]) == 40
    assert whole["val_loss"][: len(h["val_loss"])] == h["val_loss"]  # the same training, cut short
