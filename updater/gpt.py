"""The GUID partition table of a berth disk: read it, relabel one entry.

The builder reads the disk it made with it, the agent the disk holding its
slots. Works on a block device or a disk image file alike (partitions are
addressed by byte offset on the whole disk). Relabelling rewrites the backup
table first and the primary last, each fsynced, so a power cut leaves at least
one valid table; both describe every other partition identically.
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from dataclasses import dataclass, replace

from updater.failpoint import durable

SECTOR = 512
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_ENTRY = struct.Struct("<16s16sQQQ72s")


class GptError(RuntimeError):
    pass


@dataclass(frozen=True)
class Partition:
    index: int  # position in the entry array (not a partition number anyone should use)
    type_uuid: str
    part_uuid: str
    first_lba: int
    last_lba: int
    attributes: int
    label: str

    @property
    def offset(self) -> int:
        return self.first_lba * SECTOR

    @property
    def size(self) -> int:
        return (self.last_lba - self.first_lba + 1) * SECTOR


@dataclass(frozen=True)
class _Header:
    fields: tuple
    lba: int

    @property
    def entries_lba(self) -> int:
        return self.fields[10]

    @property
    def count(self) -> int:
        return self.fields[11]

    @property
    def entry_size(self) -> int:
        return self.fields[12]

    @property
    def alternate_lba(self) -> int:
        return self.fields[6]

    def pack(self, entries_crc: int) -> bytes:
        f = list(self.fields)
        f[3] = 0
        f[13] = entries_crc
        size = f[2]
        raw = _HEADER.pack(*f)[:size]
        f[3] = zlib.crc32(raw)
        return _HEADER.pack(*f)[:size]


def _read_at(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise GptError(f"short read at {offset}")
    return data


def _header(fd: int, lba: int) -> _Header:
    raw = _read_at(fd, lba * SECTOR, _HEADER.size)
    fields = _HEADER.unpack(raw)
    if fields[0] != b"EFI PART":
        raise GptError(f"no GPT header at LBA {lba}")
    check = list(fields)
    check[3] = 0
    if zlib.crc32(_HEADER.pack(*check)[: fields[2]]) != fields[3]:
        raise GptError(f"GPT header at LBA {lba} fails its checksum")
    return _Header(fields, lba)


def _entries(fd: int, header: _Header) -> bytes:
    raw = _read_at(fd, header.entries_lba * SECTOR, header.count * header.entry_size)
    if zlib.crc32(raw) != header.fields[13]:
        raise GptError(f"GPT entries of header at LBA {header.lba} fail their checksum")
    return raw


def _primary(fd: int) -> tuple[_Header, bytes]:
    try:
        header = _header(fd, 1)
        return header, _entries(fd, header)
    except GptError:
        # A torn primary (power cut mid-relabel): the backup at the disk's end is whole.
        last_lba = os.lseek(fd, 0, os.SEEK_END) // SECTOR - 1
        header = _header(fd, last_lba)
        return header, _entries(fd, header)


def _parse(raw: bytes, header: _Header) -> list[Partition]:
    parts = []
    for index in range(header.count):
        chunk = raw[index * header.entry_size : index * header.entry_size + _ENTRY.size]
        type_b, uuid_b, first, last, attrs, name = _ENTRY.unpack(chunk)
        if type_b == bytes(16):
            continue
        parts.append(
            Partition(
                index=index,
                type_uuid=str(uuid.UUID(bytes_le=type_b)),
                part_uuid=str(uuid.UUID(bytes_le=uuid_b)),
                first_lba=first,
                last_lba=last,
                attributes=attrs,
                label=name.decode("utf-16-le").rstrip("\0"),
            )
        )
    return parts


def read_partitions(path: str) -> list[Partition]:
    fd = os.open(path, os.O_RDONLY)
    try:
        header, raw = _primary(fd)
        return _parse(raw, header)
    finally:
        os.close(fd)


def _pack_entry(part: Partition) -> bytes:
    name = part.label.encode("utf-16-le")
    if len(name) > 72:
        raise GptError(f"partition label {part.label!r} is longer than 36 characters")
    return _ENTRY.pack(
        uuid.UUID(part.type_uuid).bytes_le,
        uuid.UUID(part.part_uuid).bytes_le,
        part.first_lba,
        part.last_lba,
        part.attributes,
        name.ljust(72, b"\0"),
    )


def relabel(path: str, changes: dict[int, tuple[str, str]]) -> None:
    """Set (partition UUID, label) of the entries at the given indexes, in both tables."""
    fd = os.open(path, os.O_RDWR)
    try:
        primary, raw = _primary(fd)
        by_index = {p.index: p for p in _parse(raw, primary)}
        table = bytearray(raw)
        for index, (part_uuid, label) in changes.items():
            new = replace(by_index[index], part_uuid=part_uuid, label=label)
            start = index * primary.entry_size
            table[start : start + _ENTRY.size] = _pack_entry(new)
        crc = zlib.crc32(bytes(table))
        last_lba = os.lseek(fd, 0, os.SEEK_END) // SECTOR - 1
        backup_entries_lba = last_lba - (len(table) + SECTOR - 1) // SECTOR
        backup = _swap(primary, my_lba=last_lba, alternate=1, entries_lba=backup_entries_lba)
        # Read from the backup (torn primary): the primary's entries go where the spec puts them.
        main_entries_lba = primary.entries_lba if primary.lba == 1 else 2
        main = _swap(primary, my_lba=1, alternate=last_lba, entries_lba=main_entries_lba)
        for header in (backup, main):
            os.pwrite(fd, bytes(table), header.entries_lba * SECTOR)
            os.pwrite(fd, header.pack(crc), header.lba * SECTOR)
            os.fsync(fd)
            durable(f"gpt header at LBA {header.lba}")
    finally:
        os.close(fd)


def _swap(header: _Header, my_lba: int, alternate: int, entries_lba: int) -> _Header:
    f = list(header.fields)
    f[5], f[6], f[10] = my_lba, alternate, entries_lba
    return _Header(tuple(f), my_lba)
