"""Cloud disk formats from a small sparse raw disk: each checked the way its cloud
or tool reads it (qemu-img info/check, Azure's VHD rules, GCE's tar layout)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder import formats
from cli.errors import UserError

SIZE = 24 * formats.MIB


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    with path.open("wb") as disk:  # data at a few places, holes between
        for offset in (0, 5 * formats.MIB + 17, 20 * formats.MIB):
            disk.seek(offset)
            disk.write(hashlib.sha256(str(offset).encode()).digest() * 64)
        disk.truncate(SIZE)
    return path


def info(path: Path, fmt: str) -> dict[str, object]:
    out = subprocess.run(["qemu-img", "info", "-f", fmt, "--output=json", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return dict(json.loads(out))


def test_parse_keeps_raw_and_a_fixed_order() -> None:
    assert formats.parse("vhd, qcow2") == ("raw", "qcow2", "vhd")
    assert formats.parse("") == ("raw",)
    assert formats.parse(",".join(formats.DEFAULT)) == formats.DEFAULT
    with pytest.raises(UserError, match="unknown disk format 'ova'"):
        formats.parse("raw,ova")


def test_vmdk_is_stream_optimized(raw: Path) -> None:
    vmdk = formats.write("vmdk", raw)
    found = info(vmdk, "vmdk")
    assert found["format"] == "vmdk" and found["virtual-size"] == SIZE
    assert found["format-specific"]["data"]["create-type"] == "streamOptimized"  # type: ignore[index]
    subprocess.run(["qemu-img", "check", str(vmdk)], check=True, capture_output=True)
    subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vmdk", str(raw), str(vmdk)],
                   check=True, capture_output=True)


def test_vhd_is_what_azure_takes(raw: Path) -> None:
    vhd = formats.write("vhd", raw)
    with vhd.open("rb") as handle:
        handle.seek(-formats.VHD_FOOTER, 2)
        footer = formats.vhd_footer(handle.read())
    assert formats.azure_problems(vhd.stat().st_size, footer) == []
    # A fixed VHD is raw data plus a footer: named as vpc, it reads as the disk's own size.
    assert info(vhd, "vpc")["virtual-size"] == SIZE
    subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vpc", str(raw), str(vhd)],
                   check=True, capture_output=True)
    # The rule check itself refuses what Azure refuses.
    dynamic = formats.VhdFooter(b"conectix", 3, SIZE + 1)
    assert formats.azure_problems(SIZE, dynamic) == [
        "disk type 3, Azure takes only fixed (2)",
        f"virtual size {SIZE + 1} is not a whole number of MiB",
        f"file size {SIZE} is not the virtual size plus the 512-byte footer",
    ]


def test_vhd_of_a_disk_off_the_mib_is_padded_to_it(tmp_path: Path) -> None:
    odd = tmp_path / "disk.raw"
    odd.write_bytes(b"berth" * 1000 + b"\0" * (formats.MIB + 3))
    vhd = formats.write("vhd", odd)
    with vhd.open("rb") as handle:
        handle.seek(-formats.VHD_FOOTER, 2)
        footer = formats.vhd_footer(handle.read())
    assert formats.azure_problems(vhd.stat().st_size, footer) == []
    assert footer.current_size == 2 * formats.MIB
    assert vhd.read_bytes()[: odd.stat().st_size] == odd.read_bytes()


def test_gce_tar_holds_only_a_sparse_disk_raw(raw: Path, tmp_path: Path) -> None:
    archive = formats.write("gce", raw)
    listing = subprocess.run(["tar", "-tzf", str(archive)], check=True, capture_output=True, text=True).stdout
    assert listing == "disk.raw\n"
    with tarfile.open(archive) as tar:
        (member,) = tar.getmembers()
        assert member.type == tarfile.GNUTYPE_SPARSE and member.size == SIZE
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xSzf", str(archive), "-C", str(unpacked)], check=True)
    assert (unpacked / "disk.raw").read_bytes() == raw.read_bytes()
