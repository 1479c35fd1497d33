"""``brigade-agent`` commands: help with examples, enroll, clear failures, status."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.config import AgentConfig, load_config, save_config
from edge_agent.store import Store, read_boot_id
from edge_agent.testing import FakeControlPlane
from protocol import AlertRaised
from simulators.processes import free_port

runner = CliRunner()


@pytest.mark.parametrize("command", ["enroll", "run", "status"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    """`brigade-agent CMD --help` exits 0 and shows an example invocation."""
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and f"brigade-agent {command}" in result.output


def test_enroll_writes_a_0600_config_with_the_identity(tmp_path: Path) -> None:
    """A good token: config written 0600 with agent id, kitchen, credential and broker."""
    fake = FakeControlPlane(kitchen_id="k9")
    config_path = tmp_path / "agent.json"
    with fake.serve() as url:
        result = runner.invoke(
            app,
            ["enroll", "--url", url, "--token", "enroll-token-1", "--config", str(config_path)],
        )
    assert result.exit_code == 0, result.output
    assert "enrolled as agent agent-1 of kitchen k9" in result.output
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    config = load_config(config_path)
    assert (config.agent_id, config.kitchen_id, config.mqtt_port) == ("agent-1", "k9", 1883)
    assert config.credential.get_secret_value() == fake.credential
    assert config.data_dir == (tmp_path / "data").resolve()


def test_enroll_with_a_used_token_explains_that_tokens_are_single_use(tmp_path: Path) -> None:
    """The server's 4xx detail is shown, with the hint to ask for a new token; exit 1."""
    fake = FakeControlPlane(enrollment_tokens=set())
    with fake.serve() as url:
        result = runner.invoke(
            app,
            ["enroll", "--url", url, "--token", "enroll-token-1", "--config", str(tmp_path / "a")],
        )
    assert result.exit_code == 1
    assert "invalid, expired or used" in result.output and "ask for a new one" in result.output
    assert not (tmp_path / "a").exists()


def test_enroll_against_an_unreachable_url_says_so(tmp_path: Path) -> None:
    """Nothing listening: a one-line 'unreachable' error, no traceback, exit 1."""
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(
        app, ["enroll", "--url", url, "--token", "enroll-token-1", "--config", str(tmp_path / "a")]
    )
    assert result.exit_code == 1
    assert "unreachable" in result.output and "Traceback" not in result.output


def test_enroll_over_https_to_a_plain_http_server_reports_a_tls_failure(tmp_path: Path) -> None:
    """A TLS handshake failure is named as such."""
    with FakeControlPlane().serve() as url:
        https_url = url.replace("http://", "https://")
        result = runner.invoke(
            app,
            [
                "enroll",
                "--url",
                https_url,
                "--token",
                "enroll-token-1",
                "--config",
                str(tmp_path / "a"),
            ],
        )
    assert result.exit_code == 1
    assert "TLS failure" in result.output


def test_enroll_refuses_to_overwrite_an_existing_enrollment(tmp_path: Path) -> None:
    """An existing config is kept unless --force is given."""
    config_path = tmp_path / "agent.json"
    config_path.write_text("{}")
    result = runner.invoke(
        app, ["enroll", "--url", "http://x", "--token", "t" * 10, "--config", str(config_path)]
    )
    assert result.exit_code == 1 and "--force" in result.output
    assert config_path.read_text() == "{}"


def test_run_refuses_a_config_readable_by_others(tmp_path: Path) -> None:
    """`run` on a 0644 config exits 1 telling the operator to chmod 600 it."""
    config_path = tmp_path / "agent.json"
    save_config(
        AgentConfig(
            agent_id="a1",
            kitchen_id="k1",
            credential="c" * 20,
            control_plane_url="http://cp",
            data_dir=tmp_path / "data",
        ),
        config_path,
    )
    os.chmod(config_path, 0o644)
    result = runner.invoke(app, ["run", "--config", str(config_path)])
    assert result.exit_code == 1
    assert f"chmod 600 {config_path}" in result.output


def test_status_reports_identity_outbox_and_tasks_from_the_store(tmp_path: Path) -> None:
    """`status --json` reads the store: identity, outbox depth, seq marks, last sync."""
    config = AgentConfig(
        agent_id="a1",
        kitchen_id="k1",
        credential="c" * 20,
        control_plane_url="http://cp",
        data_dir=tmp_path / "data",
    )
    config_path = tmp_path / "agent.json"
    save_config(config, config_path)
    with Store.open(config.db_path, boot_id=read_boot_id()) as store:
        for _ in range(3):
            store.append_event(type="task.started", payload={}, occurred_at=1.0)
        store.ack_events(up_to_seq=1)
        store.record_sync(at=5.0, ok=True)
    result = runner.invoke(app, ["status", "--config", str(config_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["agent_id"], report["kitchen_id"]) == ("a1", "k1")
    assert (report["outbox_depth"], report["last_seq"], report["acked_seq"]) == (2, 3, 1)
    assert report["last_sync"]["last_success_at"] == "5.0"
    text = runner.invoke(app, ["status", "--config", str(config_path)])
    assert "outbox 2 events" in text.output and "c" * 20 not in text.output


def test_status_shows_devices_open_alerts_disk_and_a_stopped_agent(tmp_path: Path) -> None:
    """With the agent stopped: devices, open alerts, routine lane and disk from the store, and
    links reported as 'not running' rather than an error."""
    config = AgentConfig(
        agent_id="a1",
        kitchen_id="k1",
        credential="c" * 20,
        control_plane_url="http://cp",
        data_dir=tmp_path / "data",
        metrics_port=free_port(),
    )
    config_path = tmp_path / "agent.json"
    save_config(config, config_path)
    with Store.open(config.db_path, boot_id=read_boot_id()) as store:
        store.record_device_status(device_id="fridge-1", link="mqtt", status="offline", at=1.0)
        store.raise_alert(
            alert=AlertRaised(
                alert_id="a-1", kind="device_offline", severity="warning", message="gone"
            ),
            at=2.0,
        )
    report = json.loads(
        runner.invoke(app, ["status", "--config", str(config_path), "--json"]).output
    )
    assert [d["device_id"] for d in report["devices"]] == ["fridge-1"]
    assert [a["kind"] for a in report["open_alerts"]] == ["device_offline"]
    assert report["links"]["agent"].startswith("not running")
    assert report["disk_bytes"] > 0 and report["routine_backlog"] == 0
    text = runner.invoke(app, ["status", "--config", str(config_path)]).output
    assert "open alerts: 1" in text and "fridge-1 offline" in text and "not running" in text
