"""The cloud formats boot: QEMU reads the build's disk as vmdk and as a fixed VHD
(format vpc, not probed as raw) through OVMF and systemd-boot to the kernel's first line."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder import formats
from qemu.harness import VM

pytestmark = pytest.mark.slow

KERNEL_FIRST_LINE = r"Linux version \S+"


@pytest.mark.parametrize("fmt", ["vmdk", "vhd"])
def test_cloud_format_boots_to_the_kernel(default_image: Path, tmp_path: Path, fmt: str) -> None:
    disk = formats.write(fmt, default_image / "disk.raw", tmp_path)
    with VM(disk, tmp_path / "vm").start() as vm:
        assert "Linux version" in vm.wait_for(KERNEL_FIRST_LINE)
