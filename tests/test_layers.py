"""The package's layering, read from the import graph (every import, at module
level or inside a function): db -> data -> training -> artifact -> serving ->
lifecycle -> cli,
each importing only downward; serving never reaches training (so never torch);
nothing imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "forecaster"
LAYERS = ["common", "db", "data", "training", "artifact", "serving", "lifecycle", "cli"]


def module_name(path: Path) -> str:
    parts = ["forecaster", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[1:2] in (["cli"], ["__main__"]):
        return "cli"
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS[1:-1] else "common"


def imports(module: str) -> set[str]:
    """Every module this one imports: ours by full name, others by top-level name."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from . import store` names a module
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {name if name.startswith("forecaster") else name.split(".")[0] for name in found}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for name in imports(todo.pop()):
            if name not in seen:
                seen.add(name)
                if name in MODULES:
                    todo.append(name)
    return seen


def test_the_import_graph_is_read():  # the checks below would pass on an empty graph
    assert len(MODULES) > 30
    assert "forecaster.db.schema" in imports("forecaster.serving.nightly")
    assert "torch" in reachable("forecaster.artifact.export")


def test_every_import_points_down_the_flow():
    upward = [
        (m, i) for m in MODULES for i in imports(m) if i in MODULES and LAYERS.index(layer(i)) > LAYERS.index(layer(m))
    ]
    assert upward == []


def test_nothing_imports_the_cli():
    assert [m for m in MODULES if "forecaster.cli" in imports(m) and m != "forecaster.__main__"] == []


def test_serving_never_reaches_training_or_torch():
    for module in (m for m in MODULES if layer(m) == "serving"):
        reached = reachable(module)
        assert not [r for r in reached if r.startswith("forecaster.training")], module
        assert "torch" not in reached, module


def test_the_scoring_side_of_artifact_never_reaches_torch():
    for module in ("forecaster.artifact.model_file", "forecaster.artifact.verify", "forecaster.artifact.reference"):
        assert "torch" not in reachable(module), module


def test_the_database_layer_imports_only_the_common_modules():
    for module in (m for m in MODULES if layer(m) == "db"):
        ours = {i for i in imports(module) if i in MODULES}
        assert {layer(i) for i in ours} <= {"common", "db"}, (module, ours)
        assert not {"torch", "onnx", "onnxruntime", "pandas", "click"} & imports(module), module
