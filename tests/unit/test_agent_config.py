"""The agent config file: written 0600 atomically, refused when others may read it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig, load_config, save_config
from edge_agent.errors import ConfigError, InsecureConfigError

SECRET = "credential-0123456789abcdef"


def config(**overrides: object) -> AgentConfig:
    values: dict[str, object] = {
        "agent_id": "agent-1",
        "kitchen_id": "k1",
        "credential": SECRET,
        "control_plane_url": "https://cp.example/",
        "data_dir": "/var/lib/brigade",
    }
    values.update(overrides)
    return AgentConfig.model_validate(values)


def test_saved_config_is_mode_0600_and_loads_back_identical(tmp_path: Path) -> None:
    """save_config writes mode 0600; load_config returns the same settings and credential."""
    path = tmp_path / "etc" / "agent.json"
    save_config(config(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_config(path)
    assert loaded == config()
    assert loaded.credential.get_secret_value() == SECRET
    assert loaded.control_plane_url == "https://cp.example"


def test_saving_replaces_the_file_atomically_without_leftovers(tmp_path: Path) -> None:
    """A second save replaces the file in place and leaves no temp files in the directory."""
    path = tmp_path / "agent.json"
    save_config(config(), path)
    save_config(config(mqtt_port=1884), path)
    assert load_config(path).mqtt_port == 1884
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.json"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_config_readable_by_others_is_refused_with_the_chmod_fix(
    tmp_path: Path, mode: int
) -> None:
    """Group/other access is refused with a message telling the exact chmod command."""
    path = tmp_path / "agent.json"
    save_config(config(), path)
    os.chmod(path, mode)
    with pytest.raises(InsecureConfigError, match=rf"chmod 600 {path}"):
        load_config(path)


def test_the_credential_never_appears_in_the_config_repr() -> None:
    """Logging or printing the settings does not leak the credential."""
    assert SECRET not in repr(config()) and SECRET not in str(config())


def test_a_missing_config_says_to_enroll_first(tmp_path: Path) -> None:
    """No file: the error names the path and `brigade-agent enroll`."""
    with pytest.raises(ConfigError, match="brigade-agent enroll"):
        load_config(tmp_path / "absent.json")


def test_an_invalid_config_names_the_bad_field(tmp_path: Path) -> None:
    """A wrong port type is reported with the field name, not a traceback."""
    path = tmp_path / "agent.json"
    body = json.loads(config().to_json())
    body["mqtt_port"] = "not-a-port"
    path.write_text(json.dumps(body))
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="mqtt_port"):
        load_config(path)


def test_a_config_that_is_not_json_is_reported_as_such(tmp_path: Path) -> None:
    """Garbage in the file gives a 'not valid JSON' error."""
    path = tmp_path / "agent.json"
    path.write_text("{nope")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(path)


def test_a_control_plane_url_without_scheme_is_rejected() -> None:
    """The URL must be http(s); validation says so."""
    with pytest.raises(ValueError, match="http:// or https://"):
        config(control_plane_url="cp.example")
