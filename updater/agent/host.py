"""Facts about the running host, read from files whose paths tests can move."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cli.errors import UserError
from updater.contract import SECURE_BOOT_DB_CERT, UKI_DIR
from updater.version import Version, VersionError


@dataclass(frozen=True)
class HostPaths:
    """Where the agent reads the host's facts; a test points them at plain files."""

    cmdline: Path = Path("/proc/cmdline")
    os_release: Path = Path("/etc/os-release")
    machine_id: Path = Path("/etc/machine-id")
    config: Path = Path("/etc/berth/agent.yaml")
    # Present in a Secure Boot signed image (builder/sbkeys.py): the agent's second lock.
    secure_boot_db_cert: Path = Path("/") / SECURE_BOOT_DB_CERT
    # The firmware's variables (db, dbx: which of the image's certificates it would boot).
    efivars: Path = Path("/sys/firmware/efi/efivars")

    @classmethod
    def under(cls, root: Path) -> HostPaths:
        return cls(**{name: root / str(path).lstrip("/") for name, path in vars(cls()).items()})


@dataclass(frozen=True)
class Booted:
    image_id: str
    version: Version  # parsed here, where os-release's text enters the agent
    roothash: str


def _os_release(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("\"'")
    return values


def booted(paths: HostPaths) -> Booted:
    match = re.search(r"(?:^|\s)roothash=([0-9a-f]{64})(?:\s|$)", paths.cmdline.read_text())
    if match is None:
        raise UserError(f"{paths.cmdline}: no roothash= (not booted from a berth image?)")
    release = _os_release(paths.os_release)
    for key in ("IMAGE_ID", "IMAGE_VERSION"):
        if key not in release:
            raise UserError(f"{paths.os_release}: no {key}")
    try:
        version = Version.parse(release["IMAGE_VERSION"])
    except VersionError as error:
        raise UserError(f"{paths.os_release}: IMAGE_VERSION: {error}") from None
    return Booted(release["IMAGE_ID"], version, match[1])


def machine_id(paths: HostPaths) -> str:
    value = paths.machine_id.read_text().strip() if paths.machine_id.exists() else ""
    if not re.fullmatch(r"[0-9a-f]{32}", value):
        raise UserError(f"{paths.machine_id}: no machine ID; set node_id or the credential berth.node_id")
    return value


def find_esp(candidates: tuple[str, ...] = ("/efi", "/boot", "/boot/efi")) -> Path:
    for candidate in candidates:
        if (Path(candidate) / UKI_DIR).is_dir():
            return Path(candidate)
    raise UserError(f"no ESP with {UKI_DIR} under {', '.join(candidates)}; set 'esp'")


def disk_of_partition(part_uuid: str) -> str:
    """The whole-disk device holding the partition with this UUID (via udev and sysfs)."""
    link = Path("/dev/disk/by-partuuid") / part_uuid
    if not link.exists():
        raise UserError(f"no partition {part_uuid} under /dev/disk/by-partuuid; set 'disk'")
    name = Path(os.path.realpath(link)).name
    parent = Path(os.path.realpath(Path("/sys/class/block") / name)).parent.name
    return f"/dev/{parent}"
