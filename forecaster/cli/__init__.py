"""The `forecaster` command line: parse, make one library call, print.

Defaults come from the library's own settings (the config modules), so a
changed default changes the command too. Heavy imports (torch, onnx,
onnxruntime) live inside the commands that need them, so `--help` is
instant and the scoring path never loads torch. Every option can also come
from the environment (base.option). Nothing in the package imports this one.
"""

from . import data, operations, registry, serving, training  # noqa: F401  (each registers its commands on `main`)
from .base import main

__all__ = ["main"]
