"""Boot entries on the ESP in systemd-boot's order, and which belong to a version.

Entry names and their boot counting are the disk contract's (updater.contract.
BootEntry); this module adds the order systemd-boot boots them in. Pure: callers
pass file names.
"""

from __future__ import annotations

from updater.contract import BootEntry
from updater.version import MAX_VERSION_PARTS, Version


def parse_entries(filenames: list[str]) -> list[BootEntry]:
    return [e for e in (BootEntry.parse(name) for name in filenames) if e is not None]


def boot_order(entries: list[BootEntry]) -> list[BootEntry]:
    """Entries in systemd-boot's menu order; with no configured default it boots the first.

    Mirrors sd-boot's boot_entry_compare for UKIs of one image (sort key =
    IMAGE_ID): entries without tries left last, then newest version first,
    then more tries left, then fewer tries done.
    """

    def key(entry: BootEntry) -> tuple[bool, tuple[int, ...], int, int]:
        # Padded to the longest version form, so 1.1.0 (key (1, 1)) sorts before 1.0.0 (key (1,)).
        parts = entry.parsed_version.key
        negated = tuple(-part for part in parts + (0,) * (MAX_VERSION_PARTS - len(parts)))
        left = -(entry.tries_left if entry.tries_left is not None else 0)
        return (entry.bad, negated, left, entry.tries_done)

    return sorted(entries, key=key)


def entries_for(entries: list[BootEntry], version: Version) -> list[BootEntry]:
    return [e for e in entries if e.parsed_version == version]
