"""Read files from an ISO 9660 image (a NoCloud or config-drive seed) without mounting it.

Mounting would need the isofs module, a mount point and privileges; the seed is
small and read once per boot, so berth reads its directory records itself.
Names come from Joliet (what ``genisoimage -joliet`` writes) or Rock Ridge
(``-rock``), else the plain ISO name with its ``;1`` version dropped.
Layout: ECMA-119 (volume descriptors from sector 16, directory records);
Joliet: a supplementary descriptor whose escape sequence is %/@, %/C or %/E,
names in UCS-2 big-endian; Rock Ridge: the ``NM`` entry of the SUSP area.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

SECTOR = 2048
JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")
MAX_DEPTH = 8  # config-2 nests openstack/latest/…; deeper trees are not a seed


class NotIso(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    extent: int
    size: int
    is_dir: bool
    name: str


def _rock_ridge_name(system_use: bytes) -> str | None:
    offset, parts = 0, []
    while offset + 4 <= len(system_use):
        signature, length = system_use[offset:offset + 2], system_use[offset + 2]
        if length < 4:
            break
        if signature == b"NM":
            parts.append(system_use[offset + 5:offset + length].decode("utf-8", "replace"))
        offset += length
    return "".join(parts) or None


def _records(data: bytes, joliet: bool) -> list[Entry]:
    entries, offset = [], 0
    while offset < len(data):
        length = data[offset]
        if length == 0:  # records never cross a sector: the rest of this one is padding
            offset = (offset // SECTOR + 1) * SECTOR
            continue
        record = data[offset:offset + length]
        offset += length
        if len(record) < 34:
            raise NotIso("truncated directory record")
        extent, size = struct.unpack_from("<I", record, 2)[0], struct.unpack_from("<I", record, 10)[0]
        name_length = record[32]
        raw = record[33:33 + name_length]
        if raw in (b"\x00", b"\x01"):
            continue
        if joliet:
            name = raw.decode("utf-16-be", "replace")
        else:
            system_use = record[33 + name_length + (1 - name_length % 2):]
            name = _rock_ridge_name(system_use) or raw.decode("ascii", "replace").lower()
        # ISO names carry a version (";1") and plain ones a trailing dot when they have no extension.
        name = name.split(";")[0]
        if not joliet and name.endswith("."):
            name = name[:-1]
        entries.append(Entry(extent, size, bool(record[25] & 2), name))
    return entries


class IsoImage:
    def __init__(self, image: BinaryIO) -> None:
        self._image = image
        self.label, root, joliet = self._descriptors()
        self.files: dict[str, Entry] = {}
        self._walk(root, "", joliet, 0)

    def _sector(self, number: int, count: int = 1) -> bytes:
        self._image.seek(number * SECTOR)
        return self._image.read(count * SECTOR)

    def _descriptors(self) -> tuple[str, Entry, bool]:
        primary: tuple[str, Entry] | None = None
        for number in range(16, 64):
            descriptor = self._sector(number)
            if len(descriptor) < SECTOR or descriptor[1:6] != b"CD001":
                raise NotIso("no ISO 9660 volume descriptor")
            kind = descriptor[0]
            # The root's own directory record sits at byte 156 of each descriptor.
            extent, size = struct.unpack_from("<I", descriptor, 158)[0], struct.unpack_from("<I", descriptor, 166)[0]
            entry = Entry(extent, size, True, "")
            if kind == 1:
                primary = descriptor[40:72].decode("ascii", "replace").strip(), entry
            elif kind == 2 and descriptor[88:91] in JOLIET_ESCAPES and primary is not None:
                return primary[0], entry, True
            elif kind == 255:
                break
        if primary is None:
            raise NotIso("no primary volume descriptor")
        return primary[0], primary[1], False

    def _walk(self, directory: Entry, prefix: str, joliet: bool, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        data = self._sector(directory.extent, (directory.size + SECTOR - 1) // SECTOR)[:directory.size]
        for entry in _records(data, joliet):
            path = f"{prefix}{entry.name}"
            if entry.is_dir:
                self._walk(entry, f"{path}/", joliet, depth + 1)
            else:
                self.files[path] = entry

    def read(self, path: str) -> bytes | None:
        entry = self.files.get(path)
        if entry is None:
            return None
        self._image.seek(entry.extent * SECTOR)
        return self._image.read(entry.size)
