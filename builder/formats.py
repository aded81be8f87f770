"""Cloud disk formats made from disk.raw (what `berth build --formats` writes).

- ``raw``: mkosi's disk image itself (always made; the others derive from it).
- ``qcow2``: QEMU's own.
- ``vmdk``: streamOptimized, the variant VMware's OVF tools and AWS's VM Import take.
- ``vhd``: fixed-size VHD whose virtual size is a whole number of MiB (the raw
  disk rounded up): Azure refuses dynamic VHDs and sizes off the MiB
  (``force_size`` keeps qemu-img from rounding the size to a CHS geometry).
- ``gce``: ``disk.raw`` alone in a gzip'ed tar in GNU ``oldgnu`` format with holes
  kept (``-S``), the layout GCE's image import requires.
"""

from __future__ import annotations

import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cli.errors import UserError
from updater import contract

FILES: dict[str, str] = {
    "raw": contract.DISK_RAW,
    "qcow2": contract.DISK_QCOW2,
    "vmdk": "disk.vmdk",
    "vhd": "disk.vhd",
    "gce": "disk-gce.tar.gz",
}
DISKS = frozenset(FILES.values())
DEFAULT = ("raw", "qcow2")
MIB = 1 << 20
VHD_FOOTER = 512


def parse(text: str) -> tuple[str, ...]:
    """``"raw,qcow2,vhd"`` as formats in a fixed order; raw always included."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in FILES]
    if unknown:
        raise UserError(f"unknown disk format '{unknown[0]}' (known: {', '.join(FILES)})")
    chosen = {"raw", *names}
    return tuple(name for name in FILES if name in chosen)


def _run(argv: list[str], cwd: Path | None = None) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UserError(f"{argv[0]} failed: {result.stderr.strip()[-300:]}")


def write(fmt: str, raw: Path, directory: Path | None = None) -> Path:
    """Make ``fmt`` from ``raw`` in ``directory`` (default: beside it); return its path."""
    target = (directory or raw.parent) / FILES[fmt]
    if fmt == "raw":
        return raw
    if fmt == "qcow2":
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(target)])
    elif fmt == "vmdk":
        _run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
              str(raw), str(target)])
    elif fmt == "vhd":
        # Azure wants a whole number of MiB; the disk is padded up to it with zeros
        # (past the backup GPT, which systemd-repart moves to the end when it grows /var).
        size = -(-raw.stat().st_size // MIB) * MIB
        _run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on",
              str(target), str(size)])
        _run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "vpc", str(raw), str(target)])
    elif fmt == "gce":
        if raw.name != contract.DISK_RAW:
            raise UserError(f"GCE wants the disk named disk.raw in the tar, got {raw.name}")
        _run(["tar", "--format=oldgnu", "-Sczf", str(target), raw.name], cwd=raw.parent)
    return target


@dataclass(frozen=True)
class VhdFooter:
    cookie: bytes
    disk_type: int  # 2 fixed, 3 dynamic, 4 differencing
    current_size: int


def vhd_footer(footer: bytes) -> VhdFooter:
    """The VHD footer's fields (Microsoft's VHD specification: big-endian, 512 bytes)."""
    if len(footer) != VHD_FOOTER:
        raise ValueError("a VHD footer is 512 bytes")
    (current_size,) = struct.unpack_from(">Q", footer, 48)
    (disk_type,) = struct.unpack_from(">I", footer, 60)
    return VhdFooter(footer[:8], disk_type, current_size)


def azure_problems(file_size: int, footer: VhdFooter) -> list[str]:
    """What Azure would refuse about this VHD; empty when it takes it."""
    problems = []
    if footer.cookie != b"conectix":
        problems.append("no VHD footer (cookie 'conectix')")
    if footer.disk_type != 2:
        problems.append(f"disk type {footer.disk_type}, Azure takes only fixed (2)")
    if footer.current_size % MIB:
        problems.append(f"virtual size {footer.current_size} is not a whole number of MiB")
    if file_size != footer.current_size + VHD_FOOTER:
        problems.append(f"file size {file_size} is not the virtual size plus the 512-byte footer")
    return problems
