"""Defaults of the export and its checks (the CLI reads them from here)."""

DEFAULT_OPSET = 20
VERIFY_WINDOWS = 256  # random windows `verify` checks by default
DEFAULT_TOLERANCE = 1e-4  # largest relative difference allowed, on the next close in price units
