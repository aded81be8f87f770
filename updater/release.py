"""How a release sits in the TUF repository: target names and custom metadata.

Shared by `berth publish` (writes), the fleet server (lists releases to decide
on) and the agent (fetches). Pure stdlib, no I/O: callers pass the signed
``targets`` metadata they have already loaded (and, on the agent, verified).

A release ``<image_id>`` ``<version>`` is three TUF targets::

    <image_id>/<version>/root.erofs.zst   the root slot image, zstd-compressed for transport
    <image_id>/<version>/root.verity.zst  its dm-verity hash tree, zstd-compressed too
    <image_id>/<version>/uki.efi          the unified kernel image (roothash= on its cmdline)

each carrying ``custom: {"berth": {...}}`` with the fields of ReleaseArtifact.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from updater.contract import SBOM
from updater.version import Version
from updater.wire import WireError, parse_version


class ArtifactRole(StrEnum):
    ROOT = "root"
    VERITY = "verity"
    UKI = "uki"


TARGET_FILENAMES: dict[ArtifactRole, str] = {
    ArtifactRole.ROOT: "root.erofs.zst",
    ArtifactRole.VERITY: "root.verity.zst",
    ArtifactRole.UKI: "uki.efi",
}
# How each role travels. The slot images are mostly zero padding and repeated hashes
# of zero blocks; the UKI is compressed already and goes to the ESP as it is.
TARGET_COMPRESSION: dict[ArtifactRole, str] = {
    ArtifactRole.ROOT: "zstd",
    ArtifactRole.VERITY: "zstd",
    ArtifactRole.UKI: "none",
}

# The largest zstd window (log2 bytes) a target may need: `berth publish` compresses
# within it and the agent refuses a frame that asks for more, so the memory a host
# spends decompressing an update stays bounded whatever the repository serves.
MAX_WINDOW_LOG = 23  # 8 MiB, one frame of `berth publish`'s default


# The root's SBOM travels as a fourth signed target beside the three a host installs;
# its custom metadata sits under its own key, so a client that lists releases skips it.
SBOM_CUSTOM_KEY = "berth-sbom"


def sbom_target_path(image_id: str, version: str) -> str:
    return f"{image_id}/{version}/{SBOM}"


def target_path(image_id: str, version: str, role: ArtifactRole) -> str:
    return f"{image_id}/{version}/{TARGET_FILENAMES[role]}"


def stored_target_path(path: str, sha256: str) -> str:
    """Where a consistent-snapshot repository keeps the target ``path``: its file
    name prefixed with its hash, so a release's bytes never change under a client."""
    directory, _, name = path.rpartition("/")
    return f"{directory}/{sha256}.{name}" if directory else f"{sha256}.{name}"


@dataclass(frozen=True)
class ReleaseArtifact:
    role: ArtifactRole
    target_path: str
    length: int  # bytes on the wire (TUF target length)
    sha256: str  # of the bytes on the wire (TUF target hash)
    compression: str  # "zstd" or "none"
    # What lands on disk once decompressed; the agent checks this as it writes.
    installed_size: int
    installed_sha256: str


@dataclass(frozen=True)
class Release:
    image_id: str
    version: str
    roothash: str
    slot_size: int  # bytes the root slot must hold
    verity_slot_size: int
    min_version: str | None  # oldest version allowed to update straight to this one
    withdrawn: bool
    artifacts: dict[ArtifactRole, ReleaseArtifact]

    # Parsed once per release (releases_from_targets parses them all as it sorts).
    @functools.cached_property
    def sort_key(self) -> Version:
        return parse_version(self.version)

    @functools.cached_property
    def floor(self) -> Version | None:
        """``min_version`` parsed; an empty one is no floor."""
        return parse_version(self.min_version) if self.min_version else None


def release_custom(release: Release, role: ArtifactRole) -> dict[str, Any]:
    """The ``custom`` dict `berth publish` puts on one target of ``release``."""
    artifact = release.artifacts[role]
    return {
        "berth": {
            "image_id": release.image_id,
            "version": release.version,
            "role": role.value,
            "roothash": release.roothash,
            "slot_size": release.slot_size,
            "verity_slot_size": release.verity_slot_size,
            "min_version": release.min_version,
            "withdrawn": release.withdrawn,
            "compression": artifact.compression,
            "installed_size": artifact.installed_size,
            "installed_sha256": artifact.installed_sha256,
        }
    }


def releases_from_targets(signed_targets: dict[str, Any]) -> list[Release]:
    """Group the ``targets`` of a targets.json ``signed`` section into releases, oldest first.

    Targets without berth custom metadata are ignored; a release missing one of
    its three artifacts is left out (a half-published release is not a release).
    """
    grouped: dict[tuple[str, str], dict[ArtifactRole, tuple[str, dict[str, Any], dict[str, Any]]]] = {}
    for path, info in signed_targets.get("targets", {}).items():
        custom = (info.get("custom") or {}).get("berth")
        if not isinstance(custom, dict):
            continue
        try:
            role = ArtifactRole(custom["role"])
            key = (str(custom["image_id"]), str(custom["version"]))
        except (KeyError, ValueError) as error:
            raise WireError(f"target {path}: bad berth metadata ({error})") from None
        grouped.setdefault(key, {})[role] = (path, info, custom)

    releases = []
    for (image_id, version), parts in grouped.items():
        if set(parts) != set(ArtifactRole):
            continue
        _, _, root_custom = parts[ArtifactRole.ROOT]
        artifacts = {
            role: ReleaseArtifact(
                role=role,
                target_path=path,
                length=int(info["length"]),
                sha256=str(info["hashes"]["sha256"]),
                compression=str(custom.get("compression", "none")),
                installed_size=int(custom["installed_size"]),
                installed_sha256=str(custom["installed_sha256"]),
            )
            for role, (path, info, custom) in parts.items()
        }
        releases.append(
            Release(
                image_id=image_id,
                version=version,
                roothash=str(root_custom["roothash"]),
                slot_size=int(root_custom["slot_size"]),
                verity_slot_size=int(root_custom["verity_slot_size"]),
                min_version=root_custom.get("min_version"),
                withdrawn=any(bool(c.get("withdrawn")) for _, _, c in parts.values()),
                artifacts=artifacts,
            )
        )
    return sorted(releases, key=lambda r: (r.image_id, r.sort_key))
