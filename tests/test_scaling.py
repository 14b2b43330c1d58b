"""Each scaling is one class and its fit: the names the CLI offers are those classes."""

from forecaster import scaling
from forecaster.training import split
from forecaster.training.config import SCALINGS


def test_one_list_of_scalings_for_the_cli_the_classes_and_their_fits():
    assert tuple(scaling.SCALINGS) == SCALINGS == tuple(split._FITS)
    for method, cls in scaling.SCALINGS.items():
        assert cls.method == method
