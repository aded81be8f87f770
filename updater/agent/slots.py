"""Which GPT partitions form root slots a and b, and which slot a root hash points at.

Found by Discoverable Partitions Spec type (updater.contract) and order on disk,
never by partition number: the first root partition (and the first root-verity
partition) are slot a, the second ones slot b.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from updater.contract import BUILD_ARCHITECTURE, ROOT_TYPES, uuids_from_roothash, version_of_label
from updater.gpt import Partition
from updater.version import Version


class SlotError(RuntimeError):
    pass


@dataclass(frozen=True)
class Slot:
    name: str  # "a" or "b"
    root: Partition
    verity: Partition

    @property
    def label_version(self) -> Version | None:
        """The version this slot's label claims (<image_id>_<version>), None when empty;
        parsed here, where the GPT's text enters (a label that is no version is refused)."""
        text = version_of_label(self.root.label)
        return None if text is None else Version.parse(text)


def find_slots(partitions: list[Partition], machine: str | None = None) -> dict[str, Slot]:
    types = ROOT_TYPES.get(machine or platform.machine(), ROOT_TYPES[BUILD_ARCHITECTURE])
    roots = sorted((p for p in partitions if p.type_uuid == types.root), key=lambda p: p.first_lba)
    verities = sorted((p for p in partitions if p.type_uuid == types.verity), key=lambda p: p.first_lba)
    if len(roots) != 2 or len(verities) != 2:
        raise SlotError(
            f"expected 2 root and 2 root-verity partitions, found {len(roots)} and {len(verities)}"
        )
    return {name: Slot(name, r, v) for name, r, v in zip("ab", roots, verities, strict=True)}


def slot_of_roothash(slots: dict[str, Slot], roothash: str) -> Slot:
    root_uuid, verity_uuid = uuids_from_roothash(roothash)
    for slot in slots.values():
        if slot.root.part_uuid == root_uuid and slot.verity.part_uuid == verity_uuid:
            return slot
    raise SlotError(f"no slot carries the partition UUIDs of root hash {roothash[:16]}…")
