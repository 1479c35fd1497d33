"""Every command of the three console scripts has help with an example (STYLE rule 6)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

APPS = {
    "brigade": "control_plane.cli",
    "brigade-agent": "edge_agent.cli",
    "brigade-sim": "simulators.cli",
}


def is_group(command: Any) -> bool:
    """Typer vendors its own click, so test for a group by shape, not class."""
    return isinstance(getattr(command, "commands", None), dict)


def command_paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under ``group``, the group itself included."""
    paths = [prefix]
    if is_group(group):
        for name, sub in sorted(group.commands.items()):
            paths += command_paths(sub, (*prefix, name))
    return paths


def all_commands() -> list[tuple[str, tuple[str, ...]]]:
    cases = []
    for script, module in APPS.items():
        app = importlib.import_module(module).app
        for path in command_paths(typer.main.get_command(app)):
            cases.append((script, path))
    return cases


@pytest.mark.parametrize(("script", "path"), all_commands(), ids=str)
def test_every_command_has_help(script: str, path: tuple[str, ...]) -> None:
    """`<script> ... --help` exits 0 and describes the command."""
    app = importlib.import_module(APPS[script]).app
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    leaf: Any = typer.main.get_command(app)
    for name in path:
        assert is_group(leaf)
        leaf = leaf.commands[name]
    if not is_group(leaf):
        assert leaf.help and "Example" in leaf.help, f"{script} {' '.join(path)} needs an example"


def root_group(module: str) -> Any:
    return typer.main.get_command(importlib.import_module(module).app)


def test_each_script_has_commands() -> None:
    """The scripts expose the commands the README documents."""
    names = {script: set(root_group(m).commands) for script, m in APPS.items()}
    assert {"init", "serve", "tokens", "audit"} <= names["brigade"]
    assert {"enroll", "run", "status"} <= names["brigade-agent"]
    assert {"device", "demo"} <= names["brigade-sim"]
