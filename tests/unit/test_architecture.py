"""The package boundaries the product design fixes (SPEC "Layout", STYLE rule 1)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"protocol", "control_plane", "edge_agent", "simulators", "firmware_stubs"}
#: Which of our packages each package may import.
ALLOWED = {
    "protocol": set(),
    "firmware_stubs": set(),
    "edge_agent": {"protocol"},
    "control_plane": {"protocol"},
    "simulators": {"protocol", "firmware_stubs"},
}
#: Modules of a package not in ALLOWED that a package may still import: the planning cores are
#: pure (plain data in, decisions out), so the rush comparison drives the very code the control
#: plane runs instead of a copy of it.
ALLOWED_MODULES = {"simulators": ("control_plane.planning",)}
#: Server-side libraries a kitchen box must never need.
SERVER_ONLY = {"fastapi", "uvicorn", "starlette"}


def imported_modules(package: str) -> dict[str, set[Path]]:
    """Module names imported anywhere in ``package``, with the files importing them."""
    found: dict[str, set[Path]] = {}
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name, set()).add(path.relative_to(ROOT))
    return found


def imported_top_levels(package: str) -> dict[str, set[Path]]:
    """Top-level module names imported anywhere in ``package``, with the files importing them."""
    found: dict[str, set[Path]] = {}
    for name, files in imported_modules(package).items():
        found.setdefault(name.split(".")[0], set()).update(files)
    return found


def _allowed_module(package: str, module: str) -> bool:
    return any(
        module == prefix or module.startswith(prefix + ".")
        for prefix in ALLOWED_MODULES.get(package, ())
    )


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package: str) -> None:
    """A package imports only the packages below it: protocol at the bottom, nothing sideways."""
    imported = imported_modules(package)
    forbidden = {
        name: files
        for name, files in imported.items()
        if name.split(".")[0] in OURS - {package} - ALLOWED[package]
        and not _allowed_module(package, name)
    }
    assert not forbidden, f"{package} must not import {forbidden}"


def test_planning_cores_are_pure() -> None:
    """The planning cores import only the standard library and each other: no I/O, no store,
    no web framework, so simulators and benchmarks can run them as they are."""
    imported = imported_modules("control_plane")
    planning_files = {p.relative_to(ROOT) for p in (ROOT / "control_plane/planning").rglob("*.py")}
    stdlib = {
        "__future__", "bisect", "collections", "dataclasses", "heapq", "itertools", "math",
        "statistics", "typing", "types", "functools", "enum",
    }  # fmt: skip
    impure = {
        name: files & planning_files
        for name, files in imported.items()
        if files & planning_files
        and name.split(".")[0] not in stdlib
        and not name.startswith("control_plane.planning")
    }
    assert not impure, impure


def test_agent_code_never_imports_server_libraries() -> None:
    """The edge agent runs on a kitchen box without FastAPI or uvicorn."""
    imported = imported_top_levels("edge_agent")
    assert not SERVER_ONLY & set(imported), {n: imported[n] for n in SERVER_ONLY & set(imported)}


def test_agent_extra_does_not_pull_server_libraries() -> None:
    """`pip install brigade-kitchen[agent]` lists no server-side dependency."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["agent"]
    names = {
        r.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip() for r in requirements
    }
    assert not names & SERVER_ONLY


def test_console_scripts_are_declared() -> None:
    """The three console scripts of the product exist."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"brigade", "brigade-agent", "brigade-sim"}
