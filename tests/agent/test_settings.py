"""Agent settings: one table, files then credentials, one-line errors naming the source."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.errors import UserError
from updater.agent.settings import SETTINGS, load_settings


def test_defaults_then_files_then_credentials(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    state = tmp_path / "state"
    state.mkdir()
    config.write_text(f"group: canary\npoll_interval_s: 60\nstate_dir: {state}\n")
    (state / "agent.yaml").write_text("poll_interval_s: 30\nauto_reboot: false\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "berth.server_url").write_text("http://10.0.2.2:8080\n")
    (creds / "berth.group").write_text("wave-1")
    (creds / "berth.tuf_root").write_text("{}")  # data, not a setting
    (creds / "other.thing").write_text("ignored")
    settings = load_settings(config, creds)
    assert settings.group == "wave-1" and settings.poll_interval_s == 30 and settings.auto_reboot is False
    assert settings.effective_repo_url == "http://10.0.2.2:8080/repo"
    assert load_settings(tmp_path / "absent.yaml", None).poll_interval_s == {
        name: default for name, _, default, _ in SETTINGS}["poll_interval_s"]


@pytest.mark.parametrize(
    "text, message",
    [("colour: blue\n", "agent.yaml: unknown setting 'colour'"),
     ("poll_interval_s: soon\n", "agent.yaml: setting 'poll_interval_s' must be int"),
     ("auto_reboot: 3\n", "setting 'auto_reboot' must be bool"),
     ("- a list\n", "must be a mapping"),
     ("group: [\n", "not valid YAML"),
     ("boot_tries: 0\n", "setting 'boot_tries': must be 1 to 9, got 0"),
     ("maintenance_window: nightly\n", "setting 'maintenance_window': maintenance window must look like")],
)
def test_bad_config_names_key_and_file(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(text)
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        load_settings(config, None)


def test_bad_credential_names_it(tmp_path: Path) -> None:
    (tmp_path / "berth.bless_timeout_s").write_text("ten")
    with pytest.raises(UserError, match="credential berth.bless_timeout_s: setting 'bless_timeout_s' must be int"):
        load_settings(tmp_path / "none.yaml", tmp_path)


def test_the_service_reads_the_same_settings_in_a_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from updater.agent.host import HostPaths
    from updater.agent.service import read_settings_apart

    paths = HostPaths.under(tmp_path)
    paths.config.parent.mkdir(parents=True)
    paths.config.write_text(f"group: canary\nauto_reboot: false\nstate_dir: {tmp_path}\n"
                            "swarm_labels: {zone: a}\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "berth.poll_interval_s").write_text("42")
    (creds / "berth.server_ca").write_text("PEM")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_settings_apart(paths) == load_settings(paths.config, creds)
    paths.config.write_text("group: [\n")
    with pytest.raises(UserError, match="agent.yaml: not valid YAML"):  # the child's error, raised here
        read_settings_apart(paths)
