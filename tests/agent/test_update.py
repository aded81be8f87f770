"""A whole update on a host on files, over real HTTP with real TUF metadata:
stage, reboot, bless, clean up; and a failed boot that systemd-boot falls back from."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from updater import release as release_layout
from updater.publish.repository import Repository
from updater.release import ArtifactRole

Host = Server = Any  # fixtures from conftest.py


def test_update_stages_new_version_with_tries_and_reboots(host: Host, server: Server) -> None:
    assert host.verified_boot() == "1.0"
    host.agent("run", "--once")
    assert host.state()["state"] == "rebooting"
    assert host.rebooted() == 1
    # The new entry boots first with 3 tries; the blessed 1.0 entry stays as the fallback.
    assert host.entries() == ["berth_1.1+3.efi", "berth_1.0.efi"]
    assert host.verified_boot() == "1.1"
    status = json.loads(host.agent("status", "--json").stdout)
    assert status["slots"]["b"]["version"] == "1.1" and status["booted"]["slot"] == "a"
    # Both slot partitions hold exactly the built images, zero padding and all.
    built = host.releases["1.1"].directory
    assert host.slot_b("1.1") == [(built / n).read_bytes() for n in ("root.erofs", "root.verity")]
    # Streamed, not staged: nothing big lands on /var, and every target byte came over once.
    assert all(p.stat().st_size < 64 << 10 for p in host.state_dir.rglob("*") if p.is_file())
    # (the signed targets, block indexes included; not the blobs a delta reads ranges of)
    targets = sum(p.stat().st_size for p in (server.root / "repo/targets/berth/1.1").iterdir()
                  if not p.name.endswith((".root.erofs", ".root.verity")))
    assert targets < server.bytes_sent < targets + (64 << 10)


def test_boot_tries_setting_names_the_staged_entrys_counter(host: Host, server: Server) -> None:
    host.settings(boot_tries=2)
    host.agent("run", "--once")
    assert host.entries() == ["berth_1.1+2.efi", "berth_1.0.efi"]


def test_release_published_with_an_uncompressed_verity_target_installs_and_withdraws(
    host_of: Any, server: Server, keys_dir: Path, releases: Any, publish_release: Any, cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Releases signed before the verity image was compressed: the agent follows each
    artifact's signed compression, and publish still withdraws them by their own names."""
    repo_dir = server.root / "repo"
    monkeypatch.setitem(release_layout.TARGET_FILENAMES, ArtifactRole.VERITY, "root.verity")
    monkeypatch.setitem(release_layout.TARGET_COMPRESSION, ArtifactRole.VERITY, "none")
    Repository(repo_dir, keys_dir).publish(releases["1.1"].directory, None, frame_bytes=1 << 20,
                                                zstd_level=3)
    monkeypatch.undo()
    verity = Repository(repo_dir, keys_dir).releases()[0].artifacts[ArtifactRole.VERITY]
    assert (verity.target_path, verity.compression) == ("berth/1.1/root.verity", "none")
    host = host_of(repo_dir)
    host.agent("run", "--once")
    assert host.verified_boot() == "1.1"
    assert host.slot_b("1.1")[1] == (releases["1.1"].directory / "root.verity").read_bytes()
    publish_release("1.2")  # the current layout beside the old one
    cli(["publish", "--withdraw", "1.1", "--repo", str(repo_dir), "--keys", str(keys_dir)])
    assert [r.withdrawn for r in Repository(repo_dir, keys_dir).releases()] == [True, False]


def test_staged_version_booted_by_a_power_cut_is_followed_without_another_reboot(host: Host) -> None:
    host.settings(auto_reboot=False)
    host.agent("run", "--once")
    assert host.state()["state"] == "staged" and host.rebooted() == 0
    assert host.boot() == "1.1"  # the power comes back: systemd-boot picks the staged entry
    host.agent("run", "--once")
    assert host.state()["state"] == "rebooting" and host.rebooted() == 0
    host.bless()
    host.agent("run", "--once")
    assert host.state()["state"] == "idle" and host.rebooted() == 0
    assert host.entries() == ["berth_1.1.efi", "berth_1.0.efi"]


def test_blessed_boot_finishes_the_update(host: Host) -> None:
    host.agent("run", "--once")
    assert host.boot() == "1.1"
    assert host.entries() == ["berth_1.1+2-1.efi", "berth_1.0.efi"]
    host.agent("run", "--once")  # health checks still running: the agent waits
    assert host.state()["state"] == "rebooting" and host.rebooted() == 1
    host.bless()
    host.agent("run", "--once")
    assert host.state()["state"] == "idle"
    assert host.entries() == ["berth_1.1.efi", "berth_1.0.efi"]
    status = json.loads(host.agent("status", "--json").stdout)
    assert status["booted"] == {"version": "1.1", "slot": "b", "roothash": host.releases["1.1"].roothash}


def test_next_update_reuses_the_old_slot_and_drops_its_entry(host: Host, publish_release: Any) -> None:
    host.agent("run", "--once")
    host.boot()
    host.bless()
    host.agent("run", "--once")
    publish_release("1.2")
    host.agent("run", "--once")
    assert host.entries() == ["berth_1.2+3.efi", "berth_1.1.efi"]
    assert host.verified_boot() == "1.2"
    status = json.loads(host.agent("status", "--json").stdout)
    assert status["slots"]["a"]["version"] == "1.2" and status["booted"]["slot"] == "b"


def test_failed_boots_fall_back_and_the_version_is_never_taken_again(host: Host) -> None:
    host.agent("run", "--once")
    for attempt in range(3):  # 1.1 never reaches boot-complete.target: a check fails
        assert host.boot() == "1.1", attempt
        host.fail_check("berth-check-engine.service")
    assert host.entries() == ["berth_1.0.efi", "berth_1.1+0-3.efi"]
    assert host.boot() == "1.0"  # systemd-boot skips the entry with no tries left
    result = host.agent("run", "--once")
    assert "rolled_back 1.1: systemd-boot fell back to 1.0: health check failed: berth-check-engine.service" in result.stderr
    assert host.state()["state"] == "idle" and host.state()["bad_versions"] == ["1.1"]
    assert not (host.state_dir / "trial-failures").exists() or not any((host.state_dir / "trial-failures").iterdir())
    assert host.entries() == ["berth_1.0.efi"]
    host.agent("run", "--once")
    assert "no update" in host.agent("run", "--once").stderr
    assert host.state()["state"] == "idle" and host.entries() == ["berth_1.0.efi"]


def test_status_prints_slots_entries_and_state(host: Host) -> None:
    host.agent("run", "--once")
    text = host.agent("status").stdout
    assert "booted:  1.0 from slot a" in text
    assert "slot b:  1.1 (berth_1.1)" in text
    assert "berth_1.1+3.efi: 3 tries left, 0 done" in text
    assert "state:   rebooting -> 1.1 in slot b" in text


def test_user_health_checks_decide_the_check_unit(host: Host) -> None:
    checks = host.state_dir / "health.d"
    checks.mkdir()
    (checks / "10-ok").write_text("#!/bin/sh\nexit 0\n")
    (checks / "10-ok").chmod(0o755)
    (checks / "README").write_text("not executable: ignored\n")
    assert host.agent("check-user").returncode == 0
    (checks / "20-app").write_text("#!/bin/sh\necho app not serving >&2\nexit 3\n")
    (checks / "20-app").chmod(0o755)
    failed = host.agent("check-user", check=False)
    assert failed.returncode == 1 and "20-app: exit 3 app not serving" in failed.stderr


def test_standalone_host_reboots_only_inside_its_maintenance_window(host: Host) -> None:
    now = datetime.now(UTC)
    closed = f"{(now + timedelta(hours=2)):%H}:00-{(now + timedelta(hours=3)):%H}:00"
    host.settings(maintenance_window=closed)
    host.agent("run", "--once")
    assert host.state()["state"] == "staged" and host.rebooted() == 0
    host.settings(maintenance_window=f"{now:%H}:00-{(now + timedelta(hours=1)):%H}:00")
    host.agent("run", "--once")
    assert host.state()["state"] == "rebooting" and host.rebooted() == 1
