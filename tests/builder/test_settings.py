"""Build settings: defaults from configs/image.yaml, one-line errors naming key and file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from builder import settings
from builder.cli import DEFAULT_CONFIG
from cli.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def test_default_config_parses_to_the_documented_defaults() -> None:
    loaded = settings.load(DEFAULT_CONFIG)
    assert loaded == settings.parse({}, "defaults")
    assert loaded.artifact_name == "berth_1.0.0"
    assert loaded.engine == "docker"


def test_every_setting_in_the_table_is_a_field_of_the_dataclass() -> None:
    fields = set(settings.BuildSettings.__dataclass_fields__)
    assert fields == {s.name for s in settings.SETTINGS}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"engin": "docker"}, "unknown key 'engin'"),
        ({"engine": "lxc"}, "key 'engine' must be one of docker, podman"),
        ({"fault": "oops"}, "key 'fault' must be one of none, health-check, kernel-panic"),
        ({"slot_size_mib": "1G"}, "key 'slot_size_mib' must be int, got str"),
        ({"slot_size_mib": True}, "key 'slot_size_mib' must be int, got bool"),
        ({"slot_size_mib": 0}, "key 'slot_size_mib' must be positive"),
        ({"version": "1.x"}, "key 'version' must be dotted integers"),
        ({"version": 1.2}, "key 'version' must be str, got float"),
        ({"image_id": "my_os"}, "key 'image_id' must be lower-case"),
        ({"image_id": "berth\n"}, "key 'image_id' must be lower-case"),
        ({"slot_margin_percent": 100}, "key 'slot_margin_percent' must be between 0 and 99"),
        (["engine"], "must be a mapping of settings"),
    ],
)
def test_bad_values_name_the_key_and_the_file(document: object, message: str) -> None:
    with pytest.raises(UserError) as error:
        settings.parse(document, "conf/site.yaml")
    text = str(error.value)
    assert text.startswith("conf/site.yaml: ")
    assert message in text
    assert "\n" not in text


def test_command_line_overrides_are_checked_like_file_values() -> None:
    base = settings.parse({}, "x.yaml")
    assert settings.override(base, version="2.1", engine=None).version == "2.1"
    with pytest.raises(UserError, match="--engine: key 'engine' must be one of"):
        settings.override(base, engine="rkt")


def test_broken_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "image.yaml"
    path.write_text("engine: docker\nversion: [1\n")
    with pytest.raises(UserError, match=rf"{path}: line \d+ not valid YAML"):
        settings.load(path)


@pytest.mark.parametrize(
    ("yaml_text", "args", "expected"),
    [
        ("engine: lxc\n", [], "key 'engine' must be one of docker, podman, got 'lxc'"),
        ("colour: blue\n", [], "unknown key 'colour'"),
        ("", ["--engine", "lxc"], "--engine: key 'engine'"),
        ("", ["--version", "one"], "--version: key 'version'"),
        ("", ["--secure-boot-keys", "/nonexistent"], "no Secure Boot keys in /nonexistent/secure-boot"),
    ],
)
def test_cli_rejects_bad_input_in_one_line_and_leaves_no_artifacts(
    tmp_path: Path, yaml_text: str, args: list[str], expected: str
) -> None:
    config = tmp_path / "image.yaml"
    config.write_text(yaml_text)
    output = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "build",
            "--config",
            str(config),
            "--output",
            str(output),
            *args,
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("berth: error: ")
    assert expected in lines[0]
    assert not output.exists() or not any(output.iterdir())


def test_faulty_releases_change_only_what_makes_them_fail(tmp_path: Path) -> None:
    from builder import fault

    assert fault.extra_trees("none", tmp_path / "none") == []
    assert fault.kernel_command_line("none") == []
    assert fault.kernel_command_line("health-check") == []
    assert fault.kernel_command_line("kernel-panic") == ["init=/usr/bin/false"]
    assert fault.extra_trees("kernel-panic", tmp_path / "panic") == []
    (tree,) = fault.extra_trees("health-check", tmp_path / "check")
    check = tree / "etc/berth/health.d/00-built-to-fail"
    failed = subprocess.run([str(check)], capture_output=True, text=True, check=False)
    assert failed.returncode == 1 and "fault=health-check" in failed.stderr


def test_build_options_are_the_tables_flag_rows() -> None:
    import argparse

    from builder import cli

    top = argparse.ArgumentParser()
    cli.register(top.add_subparsers())
    build = top._subparsers._group_actions[0].choices["build"]  # type: ignore[union-attr]
    options = {a.option_strings[0]: a for a in build._actions if a.option_strings}
    for row in settings.FLAGS:
        assert options[row.option].help.startswith(row.help) and options[row.option].dest == row.name
    assert [r.option for r in settings.FLAGS] == ["--version", "--engine", "--formats", "--secure-boot-keys",
                                                   "--var-encryption"]
    assert top.parse_args(["build", "--engine", "podman"]).engine == "podman"
