"""The package's one-way dependencies (docs/architecture.md), read from every ``from segcft...`` import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segcft"
#: Each package may import those of a lower rank; ``evaluate`` and ``serve`` share a rank, so neither imports the other.
RANK = {"utils": 0, "figures": 1, "measure": 2, "data": 3, "models": 4, "causal": 5, "engines": 6, "cft": 7,
        "evaluate": 8, "serve": 8, "cli": 9}


def _imports(path: Path) -> set[str]:
    """The segcft subpackages a module imports, function-level imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "segcft" and len(parts) > 1:
                found.add(parts[1])
    return found


def _layered_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if _layer(p) in RANK)


def _layer(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def test_every_package_is_ranked():
    tops = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert tops - {"__init__", "bundle"} == set(RANK)


@pytest.mark.parametrize("path", _layered_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down_the_chain(path):
    layer = _layer(path)
    wrong = {name for name in _imports(path) if name in RANK and name != layer and RANK[name] >= RANK[layer]}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(wrong)}, which are not below it"


def test_serving_does_not_stand_on_the_benchmarks():
    serve = [p for p in _layered_modules() if _layer(p) == "serve"]
    assert serve and all("evaluate" not in _imports(p) for p in serve)
    # both load trained models from the one module below them
    assert "engines" in _imports(PACKAGE / "serve" / "package.py") and "engines" in _imports(PACKAGE / "evaluate" / "cft.py")
