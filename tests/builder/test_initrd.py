"""Listing an initrd: plain and zstd-compressed newc archives, one after the other."""

from __future__ import annotations

import subprocess
from pathlib import Path

import zstandard

from builder import initrd


def _cpio(directory: Path, names: list[str]) -> bytes:
    for name in names:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(b"x" * 5)
    return subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=directory, input="\n".join(names).encode(),
                          capture_output=True, check=True).stdout


def test_names_and_modules_across_archives(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _cpio(tmp_path / "a", ["init", "usr/lib/modules/6.12/kernel/drivers/scsi/hv_storvsc.ko.xz"])
    second = _cpio(tmp_path / "b", ["usr/lib/modules/6.12/kernel/drivers/block/virtio-blk.ko"])
    # Padding of any length between archives, so the second starts off a 4-byte boundary.
    image = zstandard.ZstdCompressor().compress(first) + b"\0" * 7 + second
    assert initrd.names(image) == ["init", "usr/lib/modules/6.12/kernel/drivers/scsi/hv_storvsc.ko.xz",
                                   "usr/lib/modules/6.12/kernel/drivers/block/virtio-blk.ko"]
    assert initrd.kernel_modules(image) == {"hv_storvsc", "virtio_blk"}
