"""Figures are written without touching matplotlib's global state."""

import subprocess
import sys

SCRIPT = """
import sys, tempfile, pathlib
import matplotlib
before = matplotlib.get_backend()
from forecaster import plots
out = pathlib.Path(tempfile.mkdtemp())
plots.loss_curves({"train_loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "best_epoch": 2}, out / "loss.png")
plots.forecast_vs_actual("x", ["2017-01-03", "2017-01-04"], [1, 2], [1.1, 2.1], [1, 1], out / "x.png")
assert (out / "loss.png").stat().st_size > 1000 and (out / "x.png").stat().st_size > 1000
print(matplotlib.get_backend() == before, "matplotlib.pyplot" in sys.modules)
"""


def test_writing_figures_switches_no_backend_and_loads_no_pyplot():
    # A fresh interpreter: the test session itself may have loaded pyplot elsewhere.
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env={"MPLBACKEND": "svg"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "False"]
