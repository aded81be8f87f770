"""The disk layout, as pure functions: repart definitions, slot sizes, checks.

What the disk is (partition types, labels, UUIDs from the root hash) is the
contract every part shares, updater/contract.py; this module turns it and the
build settings into systemd-repart definitions and checks the result.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import NamedTuple

from builder import verity
from builder.settings import BuildSettings
from cli.errors import UserError
from updater.contract import (
    BUILD_ARCHITECTURE,
    EMPTY_LABEL,
    ESP_LABEL,
    ROOT_TYPES,
    TYPE_ESP,
    VAR_LABEL,
    slot_labels,
)
from updater.gpt import Partition

MIB = 1024 * 1024


def verity_size(data_bytes: int) -> int:
    """Bytes a root-verity slot needs for a root slot of `data_bytes`: berth's hash
    tree (builder/verity.py, 4 KiB blocks) of a full slot, rounded up to whole MiB."""
    return math.ceil(verity.tree_size(data_bytes) / MIB) * MIB


@dataclass(frozen=True)
class Slots:
    slot_size: int
    verity_slot_size: int


def slots(settings: BuildSettings) -> Slots:
    size = settings.slot_size_mib * MIB
    return Slots(size, verity_size(size))


def _conf(**fields: str | int | list[str]) -> str:
    lines = ["[Partition]"]
    for key, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{key}={item}")
    return "\n".join(lines) + "\n"


def repart_definitions(settings: BuildSettings) -> dict[str, str]:
    """File name -> systemd-repart definition for the whole disk."""
    s = slots(settings)
    root_label, verity_label = slot_labels(settings.image_id, settings.version)
    fixed = lambda size: {"SizeMinBytes": size, "SizeMaxBytes": size}
    return {
        "00-esp.conf": _conf(
            Type="esp",
            Label=ESP_LABEL,
            Format="vfat",
            CopyFiles=["/boot:/", "/efi:/"],
            **fixed(settings.esp_size_mib * MIB),
        ),
        "10-root-a.conf": _conf(
            Type="root",
            Label=root_label,
            Format="erofs",
            CopyFiles="/",
            # The ESP's content and /var's mount point are not part of the slot.
            ExcludeFiles=["/boot/", "/efi/", "/var/"],
            # Services with PrivateTmp= may start before /var is mounted.
            MakeDirectories="/var/tmp",
            **fixed(s.slot_size),
        ),
        # Left empty: repart 254's verity is random and 512-byte, so berth writes
        # the hash tree here after mkosi (builder/seal.py), and both partitions'
        # UUIDs from the root hash.
        "11-root-verity-a.conf": _conf(
            Type="root-verity", Label=verity_label, **fixed(s.verity_slot_size)
        ),
        # The B slots stay empty until the agent writes an update there;
        # SplitName=- keeps them out of mkosi's split artifacts.
        "20-root-b.conf": _conf(
            Type="root", Label=EMPTY_LABEL, SplitName="-", **fixed(s.slot_size)
        ),
        "21-root-verity-b.conf": _conf(
            Type="root-verity", Label=EMPTY_LABEL, SplitName="-", **fixed(s.verity_slot_size)
        ),
        # var_encryption tpm2: none here; the first boot makes it, encrypted, in the space
        # the build leaves free (builder/varcrypt.py).
        **({} if settings.var_encryption == "tpm2" else {"30-var.conf": _conf(
            Type="var", Label=VAR_LABEL, Format="ext4", SizeMinBytes=settings.var_size_mib * MIB
        )}),
    }


def erofs_size(superblock: bytes) -> int:
    """Bytes an erofs file system really uses, read from the start of its image."""
    (magic,) = struct.unpack_from("<I", superblock, 1024)
    if magic != 0xE0F5E1E2:
        raise ValueError("not an erofs image")
    blkszbits = superblock[1024 + 12]
    (blocks,) = struct.unpack_from("<I", superblock, 1024 + 36)
    return blocks << blkszbits


def check_slot_fit(root_bytes: int, settings: BuildSettings) -> None:
    """Fail unless the root leaves the configured share of its slot free."""
    slot = settings.slot_size_mib * MIB
    limit = slot * (100 - settings.slot_margin_percent) // 100
    if root_bytes > limit:
        raise UserError(
            f"root file system is {root_bytes / MIB:.0f} MiB but a {settings.slot_size_mib} MiB slot "
            f"with {settings.slot_margin_percent}% margin allows {limit / MIB:.0f} MiB: "
            "raise slot_size_mib or trim the image"
        )


def find(parts: list[Partition], type_uuid: str, label: str) -> Partition:
    """The one partition of this type and label (partitions are never found by number)."""
    found = [p for p in parts if p.type_uuid == type_uuid and p.label == label]
    if len(found) != 1:
        raise ValueError(
            f"expected one partition of type {type_uuid} labelled {label!r}, found {len(found)}"
        )
    return found[0]


class Built(NamedTuple):
    """The partitions a build writes: the ESP and slot A."""

    esp: Partition
    root: Partition
    verity: Partition


def built(parts: list[Partition], settings: BuildSettings) -> Built:
    types = ROOT_TYPES[BUILD_ARCHITECTURE]
    root_label, verity_label = slot_labels(settings.image_id, settings.version)
    return Built(
        find(parts, TYPE_ESP, ESP_LABEL),
        find(parts, types.root, root_label),
        find(parts, types.verity, verity_label),
    )


def parse_mirror(sources: dict[str, str]) -> str | None:
    """The Debian mirror this machine's apt uses, from its sources files (name -> text).

    Reads deb822 `.sources` and one-line `.list` files; skips security and
    third-party repositories.
    """
    candidates: list[str] = []
    for name in sorted(sources):
        text = sources[name]
        if name.endswith(".sources"):
            for stanza in text.split("\n\n"):
                fields = dict(
                    line.split(":", 1)
                    for line in stanza.splitlines()
                    if ":" in line and not line.startswith(("#", " "))
                )
                uris = fields.get("URIs", "").split()
                suites = fields.get("Suites", "").split()
                if "deb" in fields.get("Types", "").split():
                    candidates += [u for u in uris if _is_debian(u, suites)]
        else:
            for line in text.splitlines():
                words = [w for w in line.split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb" and _is_debian(words[1], [words[2]]):
                    candidates.append(words[1])
    return candidates[0].rstrip("/") if candidates else None


def _is_debian(uri: str, suites: list[str]) -> bool:
    return uri.rstrip("/").endswith("/debian") and not any("security" in s for s in suites)
