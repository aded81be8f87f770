"""Boot entries on the ESP as systemd-boot sees them: names, tries, and order.

A release's UKI lives at ``/EFI/Linux/<image_id>_<version>[+LEFT[-DONE]].efi``.
The ``+LEFT-DONE`` suffix is systemd's boot counting: systemd-boot decrements
LEFT (and increments DONE) each time it boots the entry, systemd-bless-boot
drops the suffix once boot-complete.target is reached, and an entry with no
tries left sorts after all others, so the previous version boots instead.
Pure: callers pass file names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from updater.wire import Version

# Versions have at most this many dotted parts (updater.wire.Version).
MAX_VERSION_PARTS = 4

_NAME = re.compile(
    r"^(?P<image_id>.+)_(?P<version>[0-9]+(?:\.[0-9]+){0,3})"
    r"(?:\+(?P<left>[0-9]+)(?:-(?P<done>[0-9]+))?)?\.efi$"
)


@dataclass(frozen=True)
class BootEntry:
    filename: str
    image_id: str
    version: str
    # None: no counting (a blessed or never-counted entry).
    tries_left: int | None
    tries_done: int

    @property
    def blessed(self) -> bool:
        return self.tries_left is None

    @property
    def bad(self) -> bool:
        return self.tries_left == 0


def parse_entry(filename: str) -> BootEntry | None:
    """The entry a UKI file name describes, or None for files that are not ours."""
    match = _NAME.match(filename)
    if match is None:
        return None
    left = match["left"]
    return BootEntry(
        filename=filename,
        image_id=match["image_id"],
        version=match["version"],
        tries_left=None if left is None else int(left),
        tries_done=int(match["done"] or 0),
    )


def staged_filename(image_id: str, version: str, tries: int) -> str:
    return f"{image_id}_{version}+{tries}.efi"


def parse_entries(filenames: list[str]) -> list[BootEntry]:
    return [e for e in (parse_entry(name) for name in filenames) if e is not None]


def boot_order(entries: list[BootEntry]) -> list[BootEntry]:
    """Entries in systemd-boot's menu order; with no configured default it boots the first.

    Mirrors sd-boot's boot_entry_compare for UKIs of one image (sort key =
    IMAGE_ID): entries without tries left last, then newest version first,
    then more tries left, then fewer tries done.
    """

    def key(entry: BootEntry) -> tuple[bool, tuple[int, ...], int, int]:
        # Padded to the longest version form, so 1.1.0 (key (1, 1)) sorts before 1.0.0 (key (1,)).
        parts = Version.parse(entry.version).key
        negated = tuple(-part for part in parts + (0,) * (MAX_VERSION_PARTS - len(parts)))
        left = -(entry.tries_left if entry.tries_left is not None else 0)
        return (entry.bad, negated, left, entry.tries_done)

    return sorted(entries, key=key)


def entries_for(entries: list[BootEntry], version: str) -> list[BootEntry]:
    wanted = Version.parse(version)
    return [e for e in entries if Version.parse(e.version) == wanted]
