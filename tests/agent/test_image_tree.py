"""The root-layout tree the builder overlays: units wired to boot-complete.target,
presets enabling them, a shipped agent.yaml that parses, and the engine check."""

from __future__ import annotations

import configparser
import importlib.machinery
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

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


def _engine_socket(path: Path, answer: bytes) -> threading.Thread:
    """A one-connection server on ``path`` that reads a request and sends ``answer``."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def _run_engine_check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", str(TREE / "usr/lib/berth/check-engine")],
                          env={"BERTH_CHECK_ROOT": str(root)}, capture_output=True, text=True,
                          check=False, timeout=60)


@pytest.mark.parametrize(("engine", "sock"), [("docker", "run/docker.sock"),
                                              ("podman", "run/podman/podman.sock")])
def test_engine_check_asks_the_engines_api_or_says_why(tmp_path: Path, engine: str, sock: str) -> None:
    script = TREE / "usr/lib/berth/check-engine"
    assert os.access(script, os.X_OK)
    assert script.read_text().startswith("#!/usr/bin/python3")
    missing = _run_engine_check(tmp_path)
    assert missing.returncode == 1 and "no container engine" in missing.stderr
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin" / engine).touch()
    (tmp_path / sock).parent.mkdir(parents=True)
    body = json.dumps({"Version": "26.1.5", "ApiVersion": "1.45"}).encode()
    server = _engine_socket(tmp_path / sock, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body)
    answers = _run_engine_check(tmp_path)
    server.join(5)
    assert answers.returncode == 0, answers.stderr
    assert answers.stdout.strip() == "container engine answers: 26.1.5"


def test_engine_check_does_not_take_an_error_for_an_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/docker").touch()
    (tmp_path / "run").mkdir()
    _engine_socket(tmp_path / "run/docker.sock", b"HTTP/1.1 500 Internal Server Error\r\n\r\n{}")
    # The script (no .py suffix) as a module, to call its parts; no bytecode beside it in the tree
    # the image is made from.
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    loader = importlib.machinery.SourceFileLoader("check_engine", str(TREE / "usr/lib/berth/check-engine"))
    check = types.ModuleType(loader.name)
    loader.exec_module(check)
    with pytest.raises(ValueError, match="500 Internal Server Error"):
        check.engine_version(str(tmp_path / "run/docker.sock"))
    monkeypatch.setattr(check, "ATTEMPTS", 2)
    monkeypatch.setattr(check, "PAUSE_S", 0.0)
    monkeypatch.setenv("BERTH_CHECK_ROOT", str(tmp_path / "gone"))
    (tmp_path / "gone/usr/bin").mkdir(parents=True)
    (tmp_path / "gone/usr/bin/docker").touch()
    assert check.main() == 1  # no socket at all: it gives up after its attempts


def _check_agent(tmp_path: Path, states: list[tuple[str, str, int]]) -> subprocess.CompletedProcess[str]:
    """Run check-agent against a systemctl that answers ``states`` one look at a time."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("sh", "sed", "cat", "head", "tail", "wc"):
        (bin_dir / tool).unlink(missing_ok=True)
        (bin_dir / tool).symlink_to(shutil.which(tool))  # type: ignore[arg-type]
    (bin_dir / "sleep").write_text("#!/bin/sh\n")  # no real waiting
    (bin_dir / "sleep").chmod(0o755)
    answers = tmp_path / "answers"
    answers.write_text("".join(f"{a} {s} {n}\n" for a, s, n in states))
    (bin_dir / "systemctl").write_text(
        "#!/bin/sh\n"
        f"set -- $(head -n 1 {answers})\n"
        f"[ $(wc -l < {answers}) -gt 1 ] && tail -n +2 {answers} > {answers}.next && cat {answers}.next > {answers}\n"
        'printf "ActiveState=%s\\nSubState=%s\\nNRestarts=%s\\n" "$1" "$2" "$3"\n'
    )
    (bin_dir / "systemctl").chmod(0o755)
    return subprocess.run([str(TREE / "usr/lib/berth/check-agent")], env={"PATH": str(bin_dir)},
                          capture_output=True, text=True, check=False)


def test_agent_check_waits_for_a_slow_or_restarted_agent_and_fails_one_that_keeps_failing(
    tmp_path: Path,
) -> None:
    unit = _unit("berth-check-agent.service")["Unit"]
    # A failed first start must not fail the check by dependency: it waits and judges.
    assert "Requires" not in unit and unit["Wants"] == "berth-agent.service"
    assert _unit("berth-agent.service")["Service"]["TimeoutStartSec"] == "10min"  # README: slowest machine
    assert _check_agent(tmp_path, [("active", "running", 0)]).returncode == 0
    slow = _check_agent(tmp_path, [("activating", "start", 0)] * 5 + [("active", "running", 0)])
    assert slow.returncode == 0
    restarted = _check_agent(tmp_path, [("inactive", "auto-restart", 1), ("activating", "start", 1),
                                        ("active", "running", 1)])
    assert restarted.returncode == 0 and "after 1 restarts" in restarted.stdout
    gone = _check_agent(tmp_path, [("failed", "failed", 0)])
    assert gone.returncode == 1 and "not running" in gone.stderr
    flapping = _check_agent(tmp_path, [("activating", "start", 3)])
    assert flapping.returncode == 1 and "keeps failing" in flapping.stderr


PROVISION_WANTED = Path(__file__).parents[2] / "images/host/mkosi.extra/usr/lib/berth/provision-wanted"


def _provision_wanted(tmp_path: Path, *, vendor: str, product: str = "Standard PC (Q35 + ICH9, 2009)",
                      declared: bool = False, credential: bool = False, label: str | None = None) -> int:
    """Run provision-wanted against a made-up DMI, state directory, credentials and blkid."""
    dmi, state, creds, bin_dir = (tmp_path / name for name in ("dmi", "state", "creds", "bin"))
    for directory in (dmi, state, creds, bin_dir):
        directory.mkdir(parents=True, exist_ok=True)
    (dmi / "sys_vendor").write_text(vendor + "\n")
    (dmi / "product_name").write_text(product + "\n")
    if declared:
        (state / "declared.json").write_text("{}")
    if credential:
        (creds / "berth.user_data").write_text("#cloud-config\n")  # as SMBIOS hands it to PID 1
    blkid = bin_dir / "blkid"  # finds only the one label given, as blkid -t LABEL=... does
    blkid.write_text(f'#!/bin/sh\nfor a; do [ "$a" = "LABEL={label}" ] && exit 0; done\nexit 2\n')
    blkid.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "BERTH_HOST_STATE": str(state), "BERTH_DMI_DIR": str(dmi),
           "BERTH_BLKID": str(blkid), "BERTH_CREDENTIAL_STORES": f"{tmp_path / 'none'} {creds}"}
    return subprocess.run([str(PROVISION_WANTED)], env=env, capture_output=True, check=False).returncode


def test_provisioning_is_skipped_only_on_a_local_vm_with_nothing_declared(tmp_path: Path) -> None:
    assert _provision_wanted(tmp_path / "plain", vendor="QEMU") == 1
    assert _provision_wanted(tmp_path / "seed", vendor="QEMU", label="cidata") == 0
    assert _provision_wanted(tmp_path / "drive", vendor="QEMU", label="config-2") == 0
    assert _provision_wanted(tmp_path / "credential", vendor="QEMU", credential=True) == 0
    assert _provision_wanted(tmp_path / "declared", vendor="QEMU", declared=True) == 0
    assert _provision_wanted(tmp_path / "nova", vendor="QEMU", product="OpenStack Nova") == 0
    for cloud in ("Amazon EC2", "Google", "Microsoft Corporation", "Dell Inc."):
        assert _provision_wanted(tmp_path / cloud.split()[0], vendor=cloud) == 0


LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"


def _efi_string(directory: Path, name: str, value: str) -> None:
    # As efivarfs shows a variable: 4 attribute bytes (volatile, boot+runtime), then the data.
    (directory / f"{name}-{LOADER_GUID}").write_bytes(b"\x06\x00\x00\x00" + (value + "\0").encode("utf-16-le"))


@pytest.mark.parametrize(("count_path", "selected", "booted_it"), [
    (None, "berth_1.0.0.efi", False),  # never counted: nothing to bless
    (r"\EFI\Linux\berth_1.1.0+2-1.efi", "berth_1.1.0.efi", True),  # an update on trial
    (r"\EFI\Linux\berth_1.1.0+0-3.efi", "berth_1.1.0.efi", True),  # its last try
    (r"\EFI\Linux\berth_1.1.0+2-1.efi", "BERTH_1.1.0.EFI", True),
    (r"\EFI\Linux\berth_1.1.0+2-1.efi", "berth_1.1.0+3.efi", True),  # an id with its counter
    # The firmware refused the counted entry and systemd-boot, started again, booted the previous one.
    (r"\EFI\Linux\berth_1.0.1+0-1.efi", "berth_1.0.0.efi", False),
    (r"\EFI\Linux\berth_1.0.1+0-1.efi", None, False),
])
def test_only_the_counted_entry_that_booted_is_blessed_or_on_trial(
    tmp_path: Path, count_path: str | None, selected: str | None, booted_it: bool
) -> None:
    if count_path is not None:
        _efi_string(tmp_path, "LoaderBootCountPath", count_path)
    if selected is not None:
        _efi_string(tmp_path, "LoaderEntrySelected", selected)
    script = TREE / "usr/lib/berth/booted-counted-entry"
    done = subprocess.run([str(script)], env={**os.environ, "BERTH_EFIVARS": str(tmp_path)},
                          capture_output=True, text=True, check=False)
    assert done.returncode == (0 if booted_it else 1), done.stderr
    if count_path and not booted_it:
        assert "was counted but" in done.stderr
    # systemd-bless-boot marks an entry good only under that condition, the trial reboot too.
    dropin = configparser.ConfigParser(strict=False, interpolation=None)
    dropin.read(UNITS / "systemd-bless-boot.service.d/berth.conf")
    assert dropin["Service"]["ExecCondition"] == "/usr/lib/berth/booted-counted-entry"
    assert "/usr/lib/berth/booted-counted-entry" in (TREE / "usr/lib/berth/on-trial").read_text()
