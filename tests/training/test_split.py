"""The chronological split, and the training windows it leaves out."""

import numpy as np
from helpers import synthetic_series

from forecaster.data.universe import Universe
from forecaster.training.split import index_windows


def test_training_and_validation_leave_out_windows_that_cross_a_flagged_close():
    universe = Universe.from_series({t: synthetic_series(t, days=200, seed=i) for i, t in enumerate(["aa", "bb"])})
    seq_len = 20
    everything = index_windows(universe, seq_len, 0.2, 0.2)
    flagged = np.zeros(len(universe.dates), dtype=bool)
    flagged[[60, 200 + 130, 200 + 190]] = True  # aa's train part, bb's validation part, bb's test part
    universe.flagged = flagged
    skipping = index_windows(universe, seq_len, 0.2, 0.2)
    kept = index_windows(universe, seq_len, 0.2, 0.2, skip_flagged=False)

    def crosses(starts):  # a flagged row among rows s+1 .. s+seq_len (inputs after the first, and the target)
        return np.array([flagged[s + 1 : s + seq_len + 1].any() for s in starts], dtype=bool)

    for part in ("train", "val"):
        left, whole = getattr(skipping, part), getattr(everything, part)
        assert not crosses(left).any() and set(left) == set(whole[~crosses(whole)])
    assert skipping.flagged_skipped == seq_len * 2  # one flag in train, one in validation, seq_len windows each
    assert np.array_equal(skipping.test, everything.test) and crosses(skipping.test).any()  # the test keeps all
    assert all(np.array_equal(getattr(kept, p), getattr(everything, p)) for p in ("train", "val", "test"))
