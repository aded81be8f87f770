"""What a berth image is, as every part of berth relies on it: the disk, the boot
entries, the build's artifacts and its manifest.json.

The builder makes disks and manifests by these rules, the publisher reads the
manifest, the agent finds its slots and stages its entries by them, and the lab
and the tests check them; this module is the one place they are written. Stdlib
only and no I/O: it ships on hosts.

The disk is GPT by the Discoverable Partitions Specification: esp, root A +
root-verity A (labels ``<id>_<version>`` and ``<id>_<version>_verity``), root B
+ root-verity B (label ``_empty`` until the agent writes an update there), var.
systemd-repart derives the root partition's UUID from the first 128 bits of the
root hash and the verity partition's from the last 128 bits, so the initrd finds
the slot of the booted UKI from ``roothash=`` alone.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

from updater.version import Version, VersionError


class ContractError(ValueError):
    """Input that breaks the contract (a root hash, a manifest), with what is wrong."""


# ---- partitions ----------------------------------------------------------------------

# DPS type UUIDs as the GPT carries them (lower case, as uuid.UUID prints them).
TYPE_ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
TYPE_VAR = "4d21b016-b534-45c2-a9fb-5c16e091fd2d"


@dataclass(frozen=True)
class RootTypes:
    root: str
    verity: str


# The root and root-verity types differ per architecture (platform.machine() names).
ROOT_TYPES: Mapping[str, RootTypes] = MappingProxyType(
    {
        "x86_64": RootTypes(
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5"
        ),
        "aarch64": RootTypes(
            "b921b045-1df0-41c3-af44-4c6f280d3fae", "df3300ce-d69f-4c92-978c-9bfb0f38d820"
        ),
    }
)
# Images are built for x86-64 (images/host/mkosi.conf: Architecture=x86-64).
BUILD_ARCHITECTURE = "x86_64"

EMPTY_LABEL = "_empty"
ESP_LABEL = "esp"
VAR_LABEL = "var"


def artifact_name(image_id: str, version: str) -> str:
    """`<image_id>_<version>`: the output directory, the root slot's label, the UKI's name."""
    return f"{image_id}_{version}"


def slot_labels(image_id: str, version: str) -> tuple[str, str]:
    """(root label, verity label) of a slot holding this release."""
    name = artifact_name(image_id, version)
    return name, f"{name}_verity"


def version_of_label(label: str) -> str | None:
    """The version a root slot's label claims, None for an empty slot."""
    return None if label == EMPTY_LABEL or "_" not in label else label.rsplit("_", 1)[1]


def uuids_from_roothash(roothash: str) -> tuple[str, str]:
    """(root partition UUID, verity partition UUID) as systemd-repart derives them
    from a root hash: its first and last 128 bits, verbatim."""
    if not isinstance(roothash, str) or not re.fullmatch(r"[0-9a-f]{64}", roothash):
        raise ContractError(f"root hash must be 64 lower-case hex digits, got {roothash!r}")
    return str(uuid.UUID(hex=roothash[:32])), str(uuid.UUID(hex=roothash[32:]))


# ---- boot entries --------------------------------------------------------------------

# Where UKIs live on the ESP (relative to its mount point); systemd-boot lists every .efi there.
UKI_DIR = "EFI/Linux"
# A signed image's db certificate in its root: the agent stages only UKIs it signed.
SECURE_BOOT_DB_CERT = "usr/lib/berth/secure-boot/db.crt"

_UKI_NAME = re.compile(
    r"(?P<image_id>.+)_(?P<version>[0-9]+(?:\.[0-9]+){0,3})"
    r"(?:\+(?P<left>[0-9]+)(?:-(?P<done>[0-9]+))?)?\.efi"
)


def uki_filename(image_id: str, version: str, tries: int | None = None) -> str:
    """`<image_id>_<version>.efi`, or with ``tries`` the name of a newly staged version:
    `<image_id>_<version>+<tries>.efi`, which systemd-boot counts down."""
    counted = "" if tries is None else f"+{tries}"
    return f"{artifact_name(image_id, version)}{counted}.efi"


@dataclass(frozen=True)
class BootEntry:
    """A UKI on the ESP, named `<image_id>_<version>[+LEFT[-DONE]].efi`: systemd's boot
    counting in a file name. systemd-boot counts LEFT down (and DONE up) at each boot
    of the entry, systemd-bless-boot drops the suffix once boot-complete.target is
    reached, and an entry with no tries left sorts after all others."""

    filename: str  # as found on the ESP
    image_id: str
    version: str
    # None: no counting (a blessed or never-counted entry).
    tries_left: int | None
    tries_done: int

    @property
    def blessed(self) -> bool:
        return self.tries_left is None

    # Parsed once per entry, on first use (where a name's version first mattered before).
    @functools.cached_property
    def parsed_version(self) -> Version:
        return Version.parse(self.version)

    @property
    def bad(self) -> bool:
        return self.tries_left == 0

    @classmethod
    def parse(cls, filename: str) -> BootEntry | None:
        """The entry a file name describes, or None for a file that is not a berth UKI."""
        match = _UKI_NAME.fullmatch(filename)
        if match is None:
            return None
        left = match["left"]
        return cls(
            filename=filename,
            image_id=match["image_id"],
            version=match["version"],
            tries_left=None if left is None else int(left),
            tries_done=int(match["done"] or 0),
        )


# ---- artifacts and manifest.json ------------------------------------------------------

DISK_RAW = "disk.raw"
DISK_QCOW2 = "disk.qcow2"
ROOT_IMAGE = "root.erofs"
VERITY_IMAGE = "root.verity"
UKI = "uki.efi"
MANIFEST = "manifest.json"
# The root's software bill of materials (SPDX 2.3 JSON, builder/sbom.py).
SBOM = "sbom.spdx.json"
# Everything `berth build` puts in its output directory besides manifest.json.
ARTIFACTS = (DISK_RAW, DISK_QCOW2, ROOT_IMAGE, VERITY_IMAGE, UKI, SBOM)
# What a release needs to update a host: the slot's two images and the UKI.
RELEASE_ARTIFACTS = (ROOT_IMAGE, VERITY_IMAGE, UKI)


@dataclass(frozen=True)
class Artifact:
    size: int
    sha256: str


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    installed_size: int  # bytes


@dataclass(frozen=True)
class Provenance:
    """Where a build came from (builder/provenance.py): enough to build it again."""

    commit: str | None  # git commit of the checkout; None when not a git checkout
    dirty: bool  # tracked files differed from the commit
    source_date_epoch: int  # every time in the image
    mkosi_version: str
    settings: Mapping[str, str | int]  # the build settings (configs/image.yaml + flags)
    image_tree_sha256: str  # images/ and builder/mkosi/, the mkosi input besides settings
    seed: str  # systemd-repart's --seed
    package_lock_sha256: str  # configs/packages.lock, the exact Debian packages


@dataclass(frozen=True)
class Manifest:
    """manifest.json: what a build produced, hashed, and which packages went in.

    Strict both ways: from_json refuses a missing, unknown or mistyped key, so a
    manifest from another build of berth fails loudly, not half-read."""

    image_id: str
    version: str
    engine: str
    roothash: str
    slot_size: int  # bytes of each root slot
    verity_slot_size: int  # bytes of each root-verity slot
    artifacts: Mapping[str, Artifact]  # file name in the build's directory -> size, hash
    packages: tuple[Package, ...] = ()
    provenance: Provenance | None = None  # None in manifests of builds before provenance

    def __post_init__(self) -> None:
        object.__setattr__(self, "artifacts", MappingProxyType(dict(sorted(self.artifacts.items()))))
        object.__setattr__(self, "packages", tuple(sorted(self.packages, key=lambda p: p.name)))

    @property
    def name(self) -> str:
        return artifact_name(self.image_id, self.version)

    # from_json refused any text that is no version; parsed once, on first use.
    @functools.cached_property
    def parsed_version(self) -> Version:
        return Version.parse(self.version)

    def to_json(self) -> str:
        document = {
            "image_id": self.image_id,
            "version": self.version,
            "engine": self.engine,
            "roothash": self.roothash,
            "slot_size": self.slot_size,
            "verity_slot_size": self.verity_slot_size,
            "artifacts": {
                name: {"size": a.size, "sha256": a.sha256} for name, a in self.artifacts.items()
            },
            "packages": [
                {"name": p.name, "version": p.version, "installed_size": p.installed_size}
                for p in self.packages
            ],
        }
        if self.provenance is not None:
            document["provenance"] = {
                f.name: dict(value) if isinstance(value := getattr(self.provenance, f.name), Mapping)
                else value
                for f in fields(Provenance)
            }
        return json.dumps(document, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ContractError(f"not JSON: {error}") from None
        top = _keys(data, "manifest", _MANIFEST_KEYS, optional=("provenance",))
        for key in ("image_id", "version", "engine", "roothash"):
            _typed(top[key], str, key)
        for key in ("slot_size", "verity_slot_size"):
            _typed(top[key], int, key)
        try:
            Version.parse(top["version"])
        except VersionError as error:
            raise ContractError(f"'version': {error}") from None
        uuids_from_roothash(top["roothash"])
        artifacts = {}
        for name, entry in _typed(top["artifacts"], dict, "artifacts").items():
            where = f"artifacts.{name}"
            fields_ = _keys(entry, where, ("size", "sha256"))
            artifacts[name] = Artifact(
                _typed(fields_["size"], int, f"{where}.size"),
                _typed(fields_["sha256"], str, f"{where}.sha256"),
            )
        packages = []
        for index, entry in enumerate(_typed(top["packages"], list, "packages")):
            where = f"packages[{index}]"
            fields_ = _keys(entry, where, ("name", "version", "installed_size"))
            packages.append(
                Package(
                    _typed(fields_["name"], str, f"{where}.name"),
                    _typed(fields_["version"], str, f"{where}.version"),
                    _typed(fields_["installed_size"], int, f"{where}.installed_size"),
                )
            )
        return cls(
            image_id=top["image_id"],
            version=top["version"],
            engine=top["engine"],
            roothash=top["roothash"],
            slot_size=top["slot_size"],
            verity_slot_size=top["verity_slot_size"],
            artifacts=artifacts,
            packages=tuple(packages),
            provenance=_provenance(top["provenance"]) if "provenance" in top else None,
        )


def _provenance(data: Any) -> Provenance:
    top = _keys(data, "provenance", tuple(f.name for f in fields(Provenance)))
    if top["commit"] is not None:
        _typed(top["commit"], str, "provenance.commit")
    _typed(top["dirty"], bool, "provenance.dirty")
    _typed(top["source_date_epoch"], int, "provenance.source_date_epoch")
    for key in ("mkosi_version", "image_tree_sha256", "seed", "package_lock_sha256"):
        _typed(top[key], str, f"provenance.{key}")
    settings = _typed(top["settings"], dict, "provenance.settings")
    for key, value in settings.items():
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ContractError(f"'provenance.settings.{key}' must be str or int, got {value!r}")
    return Provenance(**{**top, "settings": MappingProxyType(dict(settings))})


_MANIFEST_KEYS = tuple(f.name for f in fields(Manifest))


def _keys(
    data: Any, where: str, expected: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ContractError(f"'{where}' must be an object")
    missing = [key for key in expected if key not in data and key not in optional]
    unknown = sorted(set(data) - set(expected))
    if missing:
        raise ContractError(f"missing '{missing[0]}'" + (f" in '{where}'" if where != "manifest" else ""))
    if unknown:
        raise ContractError(f"unknown key '{unknown[0]}'" + (f" in '{where}'" if where != "manifest" else ""))
    return data


def _typed(value: Any, kind: type, where: str) -> Any:
    # bool is an int to Python, never to a manifest.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ContractError(f"'{where}' must be {kind.__name__}, got {value!r}")
    return value
