"""Reading a unified kernel image: its PE sections, the command line, the root hash; and
adding sections to one (the signed PCR policy, builder/measure.py)."""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

from updater.pe import PEError, headers, sections

__all__ = ["add_sections", "cmdline", "roothash", "sections"]

# IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ: what ukify gives a UKI's data sections.
_DATA_SECTION = 0x40000040
_SECTION_HEADER = 40


def cmdline(pe: bytes) -> str:
    return sections(pe)[".cmdline"].rstrip(b"\0").decode().strip()


def roothash(command_line: str) -> str:
    match = re.search(r"(?:^|\s)roothash=([0-9a-f]{64})(?:\s|$)", command_line)
    if not match:
        raise ValueError(f"no roothash= in kernel command line {command_line!r}")
    return match.group(1)


def _round_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def add_sections(pe: bytes, new: Sequence[tuple[str, bytes]]) -> bytes:
    """``pe`` with data sections appended after its last one, as ukify adds a UKI's
    sections: each at the next file- and section-aligned place, its virtual size the
    data's length (what systemd-stub measures). Only into an unsigned image (a signature
    would no longer cover it) with room in its headers; names must be new."""
    found = headers(pe)
    if found.certificates != (0, 0):
        raise PEError("the image is signed: add sections before signing it")
    have = {s.name for s in found.sections}
    for name, _ in new:
        if name in have or len(name.encode()) > 8:
            raise PEError(f"cannot add section {name!r}: exists already or is longer than 8 bytes")
        have.add(name)
    (header,) = struct.unpack_from("<I", pe, 0x3C)
    count, = struct.unpack_from("<H", pe, header + 6)
    (optional_size,) = struct.unpack_from("<H", pe, header + 20)
    optional = header + 24
    section_alignment, file_alignment = struct.unpack_from("<II", pe, optional + 32)
    table = optional + optional_size
    first_data = min((s.raw_offset for s in found.sections if s.raw_size), default=found.headers_size)
    if table + _SECTION_HEADER * (count + len(new)) > min(found.headers_size, first_data):
        raise PEError(f"no room in the PE headers for {len(new)} more section(s)")
    last_end = max(
        struct.unpack_from("<I", pe, table + _SECTION_HEADER * i + 12)[0]
        + max(struct.unpack_from("<I", pe, table + _SECTION_HEADER * i + 8)[0],
              struct.unpack_from("<I", pe, table + _SECTION_HEADER * i + 16)[0])
        for i in range(count)
    )
    out = bytearray(pe)
    out += bytes(_round_up(len(out), file_alignment) - len(out))
    virtual = _round_up(last_end, section_alignment)
    for index, (name, data) in enumerate(new):
        raw_size = _round_up(len(data), file_alignment)
        entry = table + _SECTION_HEADER * (count + index)
        out[entry : entry + _SECTION_HEADER] = struct.pack(
            "<8sIIIIIIHHI", name.encode(), len(data), virtual, raw_size, len(out), 0, 0, 0, 0, _DATA_SECTION
        )
        out += data + bytes(raw_size - len(data))
        virtual = _round_up(virtual + len(data), section_alignment)
    struct.pack_into("<H", out, header + 6, count + len(new))
    struct.pack_into("<I", out, optional + 56, virtual)  # SizeOfImage
    struct.pack_into("<I", out, found.checksum, 0)  # no checksum, as ukify leaves it
    return bytes(out)
