import math

import pytest

from forecaster.training.metrics import accuracy


def test_naive_and_model_metrics_on_a_hand_computed_series():
    last = [10.0, 11.0, 12.0, 11.0]
    actual = [11.0, 12.0, 11.0, 11.0]
    predicted = [10.5, 12.0, 12.5, 10.0]
    m = accuracy(predicted, actual, last)
    # naive errors: -1, -1, +1, 0  -> RMSE sqrt(3/4), MAE 3/4
    assert m["naive_rmse"] == pytest.approx(math.sqrt(0.75))
    assert m["naive_mae"] == pytest.approx(0.75)
    # model errors: -0.5, 0, 1.5, -1 -> RMSE sqrt(3.5/4), MAE 3/4
    assert m["rmse"] == pytest.approx(math.sqrt(3.5 / 4))
    assert m["mae"] == pytest.approx(0.75)
    assert m["ratio"] == pytest.approx(math.sqrt(3.5 / 4) / math.sqrt(0.75))
    # directions: up/up, up/up, up/down, down/flat -> 2 of 4
    assert m["direction_accuracy"] == 0.5
    assert m["naive_direction_accuracy"] == 0.25  # one unchanged day
    assert m["n"] == 4
