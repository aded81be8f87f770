"""The harness around a real QEMU, on a disk with nothing to boot (fast: firmware only).

What a user relies on: a boot that never becomes ready fails within the bound
given, with the console's tail in the message; QMP resets the machine; the
disk given stays untouched; the VM keeps its files for the next start.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from qemu.console import ConsoleTimeout, GuestDied
from qemu.harness import VM


@pytest.mark.slow
@pytest.mark.qemu
def test_hanging_boot_fails_with_console_tail_and_qmp_resets(tmp_path: Path) -> None:
    base = tmp_path / "nothing-to-boot.raw"
    base.write_bytes(b"\0" * (8 << 20))
    digest = hashlib.sha256(base.read_bytes()).hexdigest()
    with VM(base, tmp_path / "vm", memory_mb=256, cpus=1).start() as vm:
        vm.wait_for("BdsDxe", timeout=120)
        with pytest.raises(ConsoleTimeout) as caught:
            vm.wait_ready(timeout=5)
        message = str(caught.value)
        assert "no /BERTH-READY" in message and "within 5 s" in message
        assert "BdsDxe" in message or "Shell>" in message  # what the firmware said
        assert vm.monitor.status() == "running"
        vm.hard_reset()
        vm.wait_for("BdsDxe", timeout=120)  # the firmware starts over
        first_uuid = vm.machine.system_uuid
    assert hashlib.sha256(base.read_bytes()).hexdigest() == digest
    again = VM(base, tmp_path / "vm", memory_mb=256, cpus=1)
    assert again.machine.system_uuid == first_uuid
    again.close()


@pytest.mark.slow
@pytest.mark.qemu
def test_qemu_that_cannot_start_says_why(tmp_path: Path) -> None:
    base = tmp_path / "disk.raw"
    base.write_bytes(b"\0" * (1 << 20))
    vm = VM(base, tmp_path / "vm", memory_mb=256, cpus=1)
    vm.state.efi_vars.write_bytes(b"too short for a flash device")
    with pytest.raises(GuestDied, match="QEMU did not come up: QEMU exited with status 1"):
        vm.start()
    vm.close()
