"""fleet.yaml: the shipped file parses; bad keys and types are named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from updater.fleet.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_has_a_default_group_with_one_concurrent_reboot() -> None:
    settings = load_settings(REPO / "configs" / "fleet.yaml")
    assert settings.groups["default"].max_concurrent_reboots == 1
    assert settings.groups["prod"].after == "canary"
    assert settings.repository == REPO / "repository"


def test_built_in_defaults_have_the_default_group() -> None:
    settings = load_settings(None)
    assert list(settings.groups) == ["default"]
    assert settings.groups["default"].max_concurrent_reboots == 1
    assert settings.admin_token is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "groups: {default: {max_concurrent_reboot: 2}}",
            "groups.default.max_concurrent_reboot: unknown key",
        ),
        (
            "groups: {default: {max_concurrent_reboots: two}}",
            "groups.default.max_concurrent_reboots: expected an integer",
        ),
        (
            "groups: {default: {rate: {period: soon}}}",
            "groups.default.rate.period: expected a duration",
        ),
        (
            "groups: {default: {timezone: Mars/Olympus}}",
            "groups.default.timezone: unknown timezone",
        ),
        (
            "groups: {default: {windows: [{start: '25:00', duration: 1h}]}}",
            "groups.default.windows[0].start",
        ),
        (
            'groups: {default: {windows: [{start: "02:00\\n", duration: 1h}]}}',
            "groups.default.windows[0].start",
        ),
        (
            "groups: {default: {waves: [{after: 1h, percent: 50}]}}",
            "groups.default.waves: the last wave must reach 100",
        ),
        ("groups: {a: {after: b}, b: {after: a}}", "cycle"),
        ("groups: {a: {after: nobody}}", "groups.a.after: unknown group"),
        ("groups: {a: {channel: beta}}", "groups.a.channel: unknown channel"),
        ("pol_interval: 5m", "pol_interval: unknown key"),
        ("groups: [a, b]", "groups: expected a dict"),
    ],
)
def test_bad_settings_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError) as error:
        load_settings(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_channel_pin_is_a_version_parsed_as_the_settings_are_read(tmp_path: Path) -> None:
    from updater.version import Version

    config = tmp_path / "fleet.yaml"
    config.write_text("channels: {stable: {pin: '1.2'}}\n")
    assert load_settings(config).channels["stable"].pin == Version.parse("1.2.0")
    config.write_text("channels: {stable: {pin: latest}}\n")
    with pytest.raises(SettingsError, match=r"channels\.stable\.pin: version must be dotted integers"):
        load_settings(config)
