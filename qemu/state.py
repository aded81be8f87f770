"""A VM's own files, kept in one directory so the VM survives its reboots and restarts.

    disk.qcow2     copy-on-write overlay over the artifact's disk (never written)
    efivars.fd     this VM's UEFI variables (boot entries, systemd-boot state)
    tpm/           its TPM 2.0's state (swtpm; only for a VM with a TPM)
    uuid           its SMBIOS system UUID: the guest derives its machine ID from it
    id_ed25519     the SSH key handed to the guest as a credential
    serial.log     the serial console; qemu.log: QEMU's own messages
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from cli.errors import UserError
from qemu.machine import OVMF_VARS_TEMPLATE
from qemu.ssh import ensure_key
from updater import contract


def resolve_disk(artifact: Path) -> Path:
    """The bootable disk of a build output directory, or a disk image given directly."""
    if artifact.is_dir():
        for name in (contract.DISK_QCOW2, contract.DISK_RAW):
            if (artifact / name).is_file():
                return artifact / name
        raise UserError(
            f"{artifact} holds no {contract.DISK_QCOW2} or {contract.DISK_RAW} (is it a berth build output?)"
        )
    if artifact.is_file():
        return artifact
    raise UserError(f"{artifact} does not exist")


def _image_format(path: Path) -> str:
    if path.suffix == ".vhd":
        return "vpc"  # a fixed VHD is the raw disk plus a footer: probing would say raw
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)],
        check=False, capture_output=True, text=True,
    )
    if info.returncode != 0:
        raise UserError(f"{path} is not a disk image QEMU can read: {info.stderr.strip()}")
    return str(json.loads(info.stdout)["format"])


@dataclass(frozen=True)
class VmState:
    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def efi_vars(self) -> Path:
        return self.directory / "efivars.fd"

    @property
    def tpm(self) -> Path:
        return self.directory / "tpm"

    @property
    def private_key(self) -> Path:
        return self.directory / "id_ed25519"

    @property
    def serial_log(self) -> Path:
        return self.directory / "serial.log"

    @property
    def qemu_log(self) -> Path:
        return self.directory / "qemu.log"

    @property
    def system_uuid(self) -> uuid.UUID:
        return uuid.UUID((self.directory / "uuid").read_text().strip())

    def prepare(self, base_disk: Path) -> bytes:
        """Create what is missing (a fresh VM) and keep what exists (a VM booting again).

        Returns the SSH public key line to hand to the guest.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.disk.exists():
            base = base_disk.resolve()
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", _image_format(base),
                 "-b", str(base), str(self.disk)],
                check=True,
            )
        if not self.efi_vars.exists():
            shutil.copyfile(OVMF_VARS_TEMPLATE, self.efi_vars)
        uuid_file = self.directory / "uuid"
        if not uuid_file.exists():
            uuid_file.write_text(f"{uuid.uuid4()}\n")
        return ensure_key(self.private_key)
