"""The Python the project declares is the one it is written for and tested on."""

import ast
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def declared_floor() -> tuple[int, int]:
    spec = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert spec.startswith(">="), spec
    major, minor = spec[2:].split(",")[0].strip().split(".")[:2]
    return int(major), int(minor)


def test_the_declared_floor_is_the_linters_target_and_this_interpreter_meets_it():
    floor = declared_floor()
    target = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]["target-version"]
    assert target == f"py{floor[0]}{floor[1]}"  # ruff then flags anything newer than the floor
    assert sys.version_info[:2] >= floor


def test_every_module_parses_as_the_declared_floor():
    floor = declared_floor()
    for path in sorted((REPO / "forecaster").rglob("*.py")):
        ast.parse(path.read_text(), filename=str(path), feature_version=floor)
