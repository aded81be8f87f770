"""Reading a unified kernel image: its PE sections, the command line, the root hash."""

from __future__ import annotations

import re
import struct


def sections(pe: bytes) -> dict[str, bytes]:
    """Section name -> contents (trimmed to the section's virtual size)."""
    if pe[:2] != b"MZ":
        raise ValueError("not a PE image")
    (header,) = struct.unpack_from("<I", pe, 0x3C)
    if pe[header : header + 4] != b"PE\0\0":
        raise ValueError("not a PE image")
    (count,) = struct.unpack_from("<H", pe, header + 6)
    (optional_size,) = struct.unpack_from("<H", pe, header + 20)
    table = header + 24 + optional_size
    found = {}
    for i in range(count):
        entry = table + 40 * i
        name = pe[entry : entry + 8].rstrip(b"\0").decode("ascii", "replace")
        virtual_size, _, raw_size, raw_offset = struct.unpack_from("<IIII", pe, entry + 8)
        found[name] = pe[raw_offset : raw_offset + min(virtual_size, raw_size)]
    return found


def cmdline(pe: bytes) -> str:
    return sections(pe)[".cmdline"].rstrip(b"\0").decode().strip()


def roothash(command_line: str) -> str:
    match = re.search(r"(?:^|\s)roothash=([0-9a-f]{64})(?:\s|$)", command_line)
    if not match:
        raise ValueError(f"no roothash= in kernel command line {command_line!r}")
    return match.group(1)
