"""The root-layout tree the builder overlays: units wired to boot-complete.target,
presets enabling them, a shipped agent.yaml that parses, and the engine check."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

from updater.agent.settings import SETTINGS, load_settings

TREE = Path(__file__).resolve().parents[2] / "updater/agent/image"
UNITS = TREE / "usr/lib/systemd/system"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_health_checks_gate_boot_complete_and_presets_enable_every_unit() -> None:
    checks = sorted(p.name for p in UNITS.glob("berth-check-*.service"))
    assert checks == ["berth-check-agent.service", "berth-check-engine.service", "berth-check-user.service"]
    for name in checks:
        unit = _unit(name)
        assert unit["Install"]["RequiredBy"] == "boot-complete.target"
        assert "boot-complete.target" in unit["Unit"]["Before"]
        # A failed check on a boot on trial reboots at once (spends the next try).
        assert unit["Unit"]["OnFailure"] == "berth-trial-failed.service"
    trial = _unit("berth-trial-failed.service")
    assert trial["Service"]["ExecCondition"] == "/usr/lib/berth/on-trial"
    # Before it reboots, it writes down the failed check for the agent's rollback cause.
    recorder = trial["Service"]["ExecStartPre"]
    assert recorder == "-/usr/lib/berth/record-trial-failure"
    assert (TREE / recorder.lstrip("-").lstrip("/")).stat().st_mode & 0o111
    assert "Install" not in trial  # started only by the checks' OnFailure=
    agent = _unit("berth-agent.service")["Service"]
    assert agent["Type"] == "notify" and agent["WatchdogSec"] and agent["ImportCredential"] == "berth.*"
    presets = (TREE / "usr/lib/systemd/system-preset/50-berth-agent.preset").read_text().split("\n")
    assert sorted(line.split()[1] for line in presets if line.startswith("enable")) == \
        sorted(p.name for p in UNITS.glob("*.service") if "Install" in _unit(p.name))


def test_shipped_agent_yaml_parses_and_documents_every_setting(tmp_path: Path) -> None:
    shipped = TREE / "etc/berth/agent.yaml"
    defaults = load_settings(shipped, None)
    assert defaults.poll_interval_s == 300 and defaults.server_url == ""
    text = shipped.read_text()
    assert all(f"# {name}:" in text for name, *_ in SETTINGS)


def test_engine_check_answers_or_says_why(tmp_path: Path) -> None:
    script = TREE / "usr/lib/berth/check-engine"
    assert os.access(script, os.X_OK)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "sleep"):
        (bin_dir / tool).symlink_to(shutil.which(tool))  # type: ignore[arg-type]
    missing = subprocess.run([str(script)], env={"PATH": str(bin_dir)}, capture_output=True, text=True, check=False)
    assert missing.returncode == 1 and "no container engine" in missing.stderr
    (bin_dir / "docker").write_text("#!/bin/sh\necho 26.1.5\n")
    (bin_dir / "docker").chmod(0o755)
    answers = subprocess.run([str(script)], env={"PATH": str(bin_dir)}, capture_output=True, text=True, check=False)
    assert answers.returncode == 0 and "26.1.5" in answers.stdout
