"""The headers of a PE/COFF image (the EFI binaries a host boots: systemd-boot, UKIs):
its section table, and the offsets Authenticode's hash skips.

The one reader of PE headers: the builder reads a UKI's sections with it, the
agent checks Secure Boot signatures with it (updater/agent/authenticode.py), so
it is stdlib only and ships to hosts (builder/payload.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Where the data directories start in each optional-header format (PE32, PE32+).
_DIRECTORIES = {0x10B: 96, 0x20B: 112}
_SECURITY = 4  # the certificate table's index among the data directories


class PEError(ValueError):
    """Not a PE image, or one whose headers point outside it."""


@dataclass(frozen=True)
class Section:
    name: str
    virtual_size: int
    raw_size: int
    raw_offset: int  # file offset of the section's data


@dataclass(frozen=True)
class Headers:
    checksum: int  # file offset of the optional header's 4-byte CheckSum field
    security_entry: int | None  # file offset of the 8-byte certificate-table entry; None: no such entry
    headers_size: int  # SizeOfHeaders: the bytes before the first section's data
    sections: tuple[Section, ...]  # in the section table's order
    certificates: tuple[int, int]  # the certificate table (file offset, size); (0, 0) when unsigned


def headers(pe: bytes) -> Headers:
    if pe[:2] != b"MZ":
        raise PEError("not a PE image")
    try:
        (header,) = struct.unpack_from("<I", pe, 0x3C)
        if pe[header : header + 4] != b"PE\0\0":
            raise PEError("not a PE image")
        count, = struct.unpack_from("<H", pe, header + 6)
        (optional_size,) = struct.unpack_from("<H", pe, header + 20)
        optional = header + 24
        (magic,) = struct.unpack_from("<H", pe, optional)
        if magic not in _DIRECTORIES:
            raise PEError(f"not a PE32 or PE32+ optional header (magic {magic:#x})")
        directories = optional + _DIRECTORIES[magic]
        (headers_size,) = struct.unpack_from("<I", pe, optional + 60)
        (directory_count,) = struct.unpack_from("<I", pe, directories - 4)
        security_entry = directories + 8 * _SECURITY if directory_count > _SECURITY else None
        certificates = (
            struct.unpack_from("<II", pe, security_entry) if security_entry is not None else (0, 0)
        )
        sections = []
        for i in range(count):
            entry = optional + optional_size + 40 * i
            name = pe[entry : entry + 8].rstrip(b"\0").decode("ascii", "replace")
            virtual_size, _, raw_size, raw_offset = struct.unpack_from("<IIII", pe, entry + 8)
            sections.append(Section(name, virtual_size, raw_size, raw_offset))
    except struct.error as error:
        raise PEError("not a well-formed PE image") from error
    return Headers(optional + 64, security_entry, headers_size, tuple(sections), certificates)


def sections(pe: bytes) -> dict[str, bytes]:
    """Section name -> contents (trimmed to the section's virtual size)."""
    return {
        s.name: pe[s.raw_offset : s.raw_offset + min(s.virtual_size, s.raw_size)]
        for s in headers(pe).sections
    }
