"""Which GPT partitions form root slots a and b, and which slot a root hash points at.

Found by Discoverable Partitions Spec type and order on disk, never by
partition number: the first root partition (and the first root-verity
partition) are slot a, the second ones slot b.
"""

from __future__ import annotations

import platform
import uuid
from dataclasses import dataclass

from updater.agent.gpt import Partition

# DPS type UUIDs (root, root-verity) per architecture.
_DPS_TYPES = {
    "x86_64": ("4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5"),
    "aarch64": ("b921b045-1df0-41c3-af44-4c6f280d3fae", "df3300ce-d69f-4c92-978c-9bfb0f38d820"),
}
EMPTY_LABEL = "_empty"


class SlotError(RuntimeError):
    pass


@dataclass(frozen=True)
class Slot:
    name: str  # "a" or "b"
    root: Partition
    verity: Partition

    @property
    def label_version(self) -> str | None:
        """The version this slot's label claims (<image_id>_<version>), None when empty."""
        label = self.root.label
        return None if label == EMPTY_LABEL or "_" not in label else label.rsplit("_", 1)[1]


def uuids_from_roothash(roothash: str) -> tuple[str, str]:
    """(root partition UUID, verity partition UUID) systemd derives from a root hash."""
    if len(roothash) != 64:
        raise SlotError(f"root hash must be 64 hex digits, got {roothash!r}")
    return str(uuid.UUID(hex=roothash[:32])), str(uuid.UUID(hex=roothash[32:]))


def slot_labels(image_id: str, version: str) -> tuple[str, str]:
    return f"{image_id}_{version}", f"{image_id}_{version}_verity"


def find_slots(partitions: list[Partition], machine: str | None = None) -> dict[str, Slot]:
    root_type, verity_type = _DPS_TYPES.get(machine or platform.machine(), _DPS_TYPES["x86_64"])
    roots = sorted((p for p in partitions if p.type_uuid == root_type), key=lambda p: p.first_lba)
    verities = sorted((p for p in partitions if p.type_uuid == verity_type), key=lambda p: p.first_lba)
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
