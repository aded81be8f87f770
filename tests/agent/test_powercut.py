"""Power cuts: the agent is SIGKILLed right after each of its durable writes, in every
phase, then started again. After each cut the entry systemd-boot would pick must
boot a whole, verified slot, and the restarted agent must finish the job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

Host = Any  # fixture from conftest.py


def _steps(host: Host, tmp_path: Path, phase: str) -> list[str]:
    trace = tmp_path / f"trace-{phase}"
    host.agent("run", "--once", env={"BERTH_FAILPOINT_TRACE": str(trace)})
    return trace.read_text().splitlines()


def _cut_everywhere(host: Host, tmp_path: Path, phase: str, finished: Any) -> int:
    """Run the phase once to list its durable steps, then cut power after each one."""
    before = host.snapshot(phase)
    steps = _steps(host, tmp_path, phase)
    finished()
    assert len(steps) >= 3, steps
    for step in steps:
        number = step.split()[0]
        host.restore(before)
        cut = host.agent("run", "--once", env={"BERTH_FAILPOINT_KILL_AT": number}, check=False)
        assert cut.returncode == -9, f"not killed at {step}: {cut.stderr}"
        host.verified_boot()  # raises unless the firmware's pick is a whole, verified slot
        host.agent("run", "--once")  # power back: the agent resumes
        finished()
        host.verified_boot()
    return len(steps)


@pytest.mark.slow
def test_power_cut_while_downloading_writing_and_staging(host: Host, tmp_path: Path) -> None:
    def staged() -> None:
        assert host.state()["state"] == "rebooting", host.state()
        assert host.entries() == ["berth_1.1+3.efi", "berth_1.0.efi"]
        assert host.verified_boot() == "1.1"

    steps = _cut_everywhere(host, tmp_path, "install", staged)
    assert steps >= 8  # several frames of the root image, verity, relabel, UKI, states


@pytest.mark.slow
def test_power_cut_while_assembling_a_slot_by_delta(delta_host: Host, tmp_path: Path) -> None:
    """The same cuts on the delta path: each checkpoint of the assembly, the path decision."""
    host = delta_host

    def staged() -> None:
        assert host.state()["state"] == "rebooting", host.state()
        assert host.entries() == ["berth_1.1+3.efi", "berth_1.0.efi"]
        assert host.verified_boot() == "1.1"
        built = host.releases["1.1"].directory
        assert host.slot_b("1.1") == [(built / n).read_bytes() for n in ("root.erofs", "root.verity")]
        assert '"path": "delta"' in (host.state_dir / "transfer-root.json").read_text()

    steps = _cut_everywhere(host, tmp_path, "delta", staged)
    trace = (tmp_path / "trace-delta").read_text()
    assert "checkpoint delta root" in trace and "write transfer-root.json" in trace
    assert steps >= 8


@pytest.mark.slow
def test_power_cut_while_finishing_a_blessed_update(host: Host, tmp_path: Path) -> None:
    host.agent("run", "--once")
    host.boot()
    host.bless()

    def blessed() -> None:
        assert host.state()["state"] == "idle", host.state()
        assert host.entries() == ["berth_1.1.efi", "berth_1.0.efi"]
        assert host.verified_boot() == "1.1"

    _cut_everywhere(host, tmp_path, "bless", blessed)


@pytest.mark.slow
def test_power_cut_while_recording_a_rollback(host: Host, tmp_path: Path) -> None:
    host.agent("run", "--once")
    for _ in range(3):
        host.boot()
        host.fail_check()
    assert host.boot() == "1.0"

    def rolled_back() -> None:
        assert host.state()["state"] == "idle" and host.state()["bad_versions"] == ["1.1"]
        assert host.entries() == ["berth_1.0.efi"]
        assert host.verified_boot() == "1.0"

    _cut_everywhere(host, tmp_path, "rollback", rolled_back)


@pytest.mark.slow
def test_power_cut_while_overwriting_the_old_fallback_slot(host: Host, tmp_path: Path, publish_release: Any) -> None:
    host.agent("run", "--once")
    host.boot()
    host.bless()
    host.agent("run", "--once")
    publish_release("1.2")  # goes to slot a, which holds 1.0 and its entry

    def staged() -> None:
        assert host.entries() == ["berth_1.2+3.efi", "berth_1.1.efi"]
        assert host.verified_boot() == "1.2"

    _cut_everywhere(host, tmp_path, "overwrite", staged)


def test_a_staged_entry_left_short_by_a_power_cut_is_installed_again_before_the_reboot(
    host: Host,
) -> None:
    # vfat can come back from a cut with the renamed UKI's directory entry but none of its
    # bytes (seen in QEMU): systemd-boot skips such an entry, so rebooting would boot the
    # old version and count the new one as rolled back.
    host.settings(auto_reboot=False)
    host.agent("run", "--once")
    assert host.state()["state"] == "staged"
    (host.esp / "EFI/Linux/berth_1.1+3.efi").write_bytes(b"")
    host.settings(auto_reboot=True)
    result = host.agent("run", "--once")
    assert "is not the signed UKI; installing it again" in result.stderr
    assert host.state()["state"] == "rebooting" and host.rebooted() == 1
    assert host.entries() == ["berth_1.1+3.efi", "berth_1.0.efi"]
    assert host.verified_boot() == "1.1"
