"""The package's layers (docs/DESIGN.md): a lower layer never imports a higher one.

Every import statement of every module is checked, including the ones inside functions
(the package imports lazily, so a module-level check alone would miss most of them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "panoptic_detr"

# layer -> the top-level parts of the package it must not import
FORBIDDEN = {
    "utils": {"data", "model", "evaluation", "viz", "engine", "commands", "cli", "apps"},
    "data": {"engine", "commands", "cli", "apps"},
    "model": {"engine", "commands", "cli", "apps"},
    "evaluation": {"engine", "commands", "cli", "apps"},
    "viz": {"engine", "commands", "cli", "apps"},
    "engine": {"commands", "cli", "apps"},
    "deploy": {"commands", "cli", "apps"},  # at the engine level
}

MAX_MODULE_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_parts(path: Path) -> list[tuple[int, str]]:
    """(line, top-level part of panoptic_detr) of every import of the package in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = path.relative_to(PACKAGE).parts[:-1]
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = list(package_parts[: len(package_parts) - node.level + 1])
                module = ".".join(["panoptic_detr", *base] + ([node.module] if node.module else []))
                names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
            elif node.module:
                names = [node.module]
                if node.module == "panoptic_detr":
                    names = [f"panoptic_detr.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "panoptic_detr" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def test_the_walk_finds_imports_inside_functions(tmp_path):
    """The checker itself: a function-level import of a higher layer is found."""
    probe = PACKAGE / "data" / "probe_for_layer_test.py"
    text = "def f():\n    from panoptic_detr.engine.predict import Predictor\n    from . import categories\n"
    assert not probe.exists()
    try:
        probe.write_text(text)
        assert imported_parts(probe) == [(2, "engine"), (3, "data")]
    finally:
        probe.unlink()


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_upward_import(path):
    forbidden = FORBIDDEN.get(_layer(path), set())
    bad = [f"line {line}: panoptic_detr.{part}" for line, part in imported_parts(path) if part in forbidden]
    assert not bad, f"{path.relative_to(PACKAGE)} imports a higher layer: {', '.join(bad)}"


def test_no_module_over_the_size_limit():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
