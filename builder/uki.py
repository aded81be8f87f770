"""Reading a unified kernel image: its PE sections, the command line, the root hash."""

from __future__ import annotations

import re

from updater.pe import sections

__all__ = ["cmdline", "roothash", "sections"]


def cmdline(pe: bytes) -> str:
    return sections(pe)[".cmdline"].rstrip(b"\0").decode().strip()


def roothash(command_line: str) -> str:
    match = re.search(r"(?:^|\s)roothash=([0-9a-f]{64})(?:\s|$)", command_line)
    if not match:
        raise ValueError(f"no roothash= in kernel command line {command_line!r}")
    return match.group(1)
