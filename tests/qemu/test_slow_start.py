"""Health checks judge health, not speed: a boot on trial whose CPU is throttled
hard (a loaded host, a small instance out of CPU credits) still completes and is
blessed, with no check failing for being slow and no agent restart.

One boot: the build's own disk, copied, with its UKI renamed to carry a tries
counter (what `berth agent` stages for a new version), so the very first boot
is on trial, under a cgroup CPU quota on QEMU.
"""

from __future__ import annotations

import json
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from qemu.harness import VM
from qemu.throttle import ThrottleUnavailable, cpu_quota
from updater import contract

# Half of one host core for a 2-vCPU guest (a quarter of the machine): slow
# enough to stretch a boot several times over (as a loaded host would), and a boot
# that fits the suite's budget.
QUOTA_PERCENT = 50
# The slowest machine we support (README, "Boot figures"): ready within 20 min.
BOOT_BOUND_S = 1200.0


def trial_disk(raw: Path, copy: Path, tries: int = 3) -> str:
    """Copy ``raw`` and give its one UKI a tries counter; the new file name."""
    subprocess.run(["cp", "--sparse=always", str(raw), str(copy)], check=True)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(copy)], check=True,
                                      capture_output=True, text=True).stdout)["partitiontable"]
    esp = next(p for p in table["partitions"] if p["type"].lower() == contract.TYPE_ESP)
    fat = f"{copy}@@{esp['start'] * table.get('sectorsize', 512)}"
    listing = subprocess.run(["mdir", "-b", "-i", fat, "::/EFI/Linux"], check=True,
                             capture_output=True, text=True).stdout.split()
    (uki,) = [Path(p).name for p in listing if p.lower().endswith(".efi")]
    counted = f"{Path(uki).stem}+{tries}.efi"
    subprocess.run(["mren", "-i", fat, f"::/EFI/Linux/{uki}", f"::/EFI/Linux/{counted}"], check=True)
    return counted


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.throttled
def test_a_trial_boot_on_a_throttled_cpu_is_blessed(default_image: Path, tmp_path: Path) -> None:
    counted = trial_disk(default_image / "disk.raw", tmp_path / "trial.raw")
    with ExitStack() as stack:
        try:
            launcher = stack.enter_context(cpu_quota(QUOTA_PERCENT))
        except ThrottleUnavailable as error:
            pytest.skip(f"cannot throttle QEMU here: {error}")
        vm = stack.enter_context(VM(tmp_path / "trial.raw", tmp_path / "vm", launcher=launcher))
        vm.start()
        ready = vm.wait_ready(timeout=BOOT_BOUND_S)
        vm.wait_ssh(timeout=600)
        status = vm.run("/usr/lib/systemd/systemd-bless-boot status", check=False).stdout.strip()
        entries = vm.run("ls /efi/EFI/Linux /boot/EFI/Linux 2>/dev/null", check=False).stdout.split()
        agent = vm.run("systemctl show -P NRestarts,ExecMainStartTimestampMonotonic,"
                       "ActiveEnterTimestampMonotonic berth-agent.service").stdout.split()
        checks = vm.run("systemctl show -P Result berth-check-agent.service "
                        "berth-check-engine.service berth-check-user.service").stdout.split()
        analyze = vm.run("systemd-analyze time", check=False).stdout.splitlines()[:1]
    restarts, started_us, active_us = (int(v) for v in agent)
    print(f"throttled to {QUOTA_PERCENT} % of a core: ready at uptime {ready.uptime_s} s, "
          f"agent start {(active_us - started_us) / 1e6:.1f} s; {analyze}")
    assert ready.slot == "a"
    assert status == "good"  # systemd-bless-boot marked the trial entry good
    assert counted not in entries and counted.replace("+3", "") in entries
    assert restarts == 0 and checks == ["success"] * 3
