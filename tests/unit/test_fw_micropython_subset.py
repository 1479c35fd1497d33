"""The firmware's runtime modules stay inside what MicroPython runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware_stubs"
#: Modules a board loads; hal.py (typing Protocols) and fakes.py (tests) stay on CPython.
RUNTIME_MODULES = [
    "__init__.py",
    "core.py",
    "fridge.py",
    "kinds.py",
    "oven.py",
    "probe.py",
    "wire.py",
]
#: Imports allowed at run time on a board.
ALLOWED_IMPORTS = {"json", "firmware_stubs"}


def runtime_nodes(tree: ast.Module) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (never executed on a board)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return [node for node in ast.walk(tree) if id(node) not in skipped]


@pytest.mark.parametrize("name", RUNTIME_MODULES)
def test_runtime_modules_import_only_json_and_the_firmware_itself(name: str) -> None:
    """No pydantic, protocol, typing, dataclasses, threading or asyncio on the board."""
    tree = ast.parse((FIRMWARE / name).read_text())
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        assert roots <= ALLOWED_IMPORTS, f"{name}:{node.lineno} imports {roots}"


@pytest.mark.parametrize("name", RUNTIME_MODULES)
def test_runtime_modules_avoid_syntax_micropython_lacks(name: str) -> None:
    """A conservative subset: f-strings are a build option small ports switch off, and neither
    match statements nor variable annotations are worth the risk (type comments instead)."""
    tree = ast.parse((FIRMWARE / name).read_text())
    for node in runtime_nodes(tree):
        assert not isinstance(node, ast.JoinedStr), f"{name}:{node.lineno}: f-string"
        assert not isinstance(node, ast.Match), f"{name}:{node.lineno}: match statement"
        assert not isinstance(node, ast.AnnAssign), f"{name}:{node.lineno}: variable annotation"
