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


def test_a_forecast_within_float_noise_of_the_last_close_states_no_direction():
    import numpy as np

    last = np.array([10.0, 20.0, 30.0, 40.0])
    actual = np.array([10.5, 19.0, 30.0, 41.0])
    # What a naive model gives back through float32: the last close, rounded.
    naive_through_float32 = last.astype(np.float32).astype(np.float64) * (1 + np.array([3e-8, -4e-8, 0, 5e-8]))
    m = accuracy(naive_through_float32, actual, last)
    assert m["direction_accuracy"] == m["naive_direction_accuracy"] == 0.25  # right only on the flat day
    # Beyond the noise a direction is stated, right or wrong.
    m = accuracy(last * (1 + np.array([1e-5, 1e-5, 1e-5, 1e-5])), actual, last)
    assert m["direction_accuracy"] == 0.5


def test_paired_evidence_is_zero_for_a_tie_and_signed():
    import numpy as np

    from forecaster.evidence import MIN_CASES, paired_z

    base = np.arange(1.0, 41.0)
    step = np.tile([0.1, 0.2], 20)
    assert paired_z(base, base) == 0.0
    assert paired_z(base, base - step) > 0 > paired_z(base, base + step)
    assert paired_z(base, base - 0.5) == float("inf")  # the same gain on every one of 40 cases
    few = base[: MIN_CASES - 1]
    assert paired_z(few, few - 0.5) == 0.0  # too few cases to be evidence, however alike
