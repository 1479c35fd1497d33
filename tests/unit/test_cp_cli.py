"""The ``brigade`` command line: every command documents itself with an example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane.auth import hash_secret
from control_plane.cli import app
from control_plane.store import Store

COMMANDS = [["init"], ["serve"], ["tokens", "create"], ["audit", "verify"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    """``--help`` of each command shows its docstring including an ``Example:`` line."""
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example: brigade " + " ".join(command) in result.output


def test_init_json_prints_only_the_admin_token(tmp_path: Path) -> None:
    """``init --json`` prints one JSON object whose token is stored only as a hash."""
    db = tmp_path / "cp.db"
    result = CliRunner().invoke(app, ["init", "--db", str(db), "--json"])
    token = json.loads(result.stdout)["admin_token"]
    store = Store.open(db)
    with store.read() as reader:
        row = reader.api_token(hash_secret(token))
    store.close()
    assert row is not None and row["role"] == "admin"


def test_unknown_role_is_a_usage_error(tmp_path: Path) -> None:
    """``tokens create`` with a made-up role exits 2 with a message naming the roles."""
    result = CliRunner().invoke(
        app, ["tokens", "create", "--db", str(tmp_path / "cp.db"), "--role", "chef"]
    )
    assert result.exit_code == 2
    assert "viewer, operator, admin" in result.output


def test_audit_verify_of_a_missing_store_fails_clearly(tmp_path: Path) -> None:
    """Verifying a store that does not exist is an error, not an empty success."""
    result = CliRunner().invoke(app, ["audit", "verify", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 1
    assert "no store at" in result.output


def test_init_refuses_a_second_admin_token(tmp_path: Path) -> None:
    """Running ``init`` on an initialised store fails instead of minting another admin token."""
    db = tmp_path / "cp.db"
    CliRunner().invoke(app, ["init", "--db", str(db), "--json"])
    again = CliRunner().invoke(app, ["init", "--db", str(db), "--json"])
    assert again.exit_code == 1
    assert "already initialised" in again.output
