"""Secure Boot enforcing in QEMU, on the podman session host (no boot of its own).

Its image is signed with the run's keys (tests/conftest.py: `berth keys init`, then
`berth build --secure-boot-keys`), and it boots OVMF's Secure Boot build with blank
variables, which is setup mode: systemd-boot enrols db, KEK and PK from
loader/keys/auto, resets, and from then on the firmware runs only what db signed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from builder import sbkeys
from updater.contract import SECURE_BOOT_DB_CERT

pytestmark = pytest.mark.slow

# What systemd-boot prints when it enrols (src/boot/secure-boot.c), then what the
# firmware, the EFI stub and the kernel print on the boot after the reset.
ENROLLING = r"Enrolling secure boot keys from directory: \loader\keys\auto"
ENROLLED = "Custom Secure Boot keys successfully enrolled, rebooting the system now!"
ENFORCING = ("EFI stub: UEFI Secure Boot is enabled.",
             "Kernel is locked down from EFI Secure Boot",
             "secureboot: Secure boot enabled")
# The EFI global variables' vendor GUID, and the image security database's (db).
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_IMAGE_SECURITY = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"


def der(cert: Path) -> bytes:
    return x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)


def efi_variable(vm: Any, name: str, guid: str) -> bytes:
    """The variable's data (efivarfs puts its 4 attribute bytes first)."""
    data = bytes.fromhex(vm.run(f"od -An -v -tx1 /sys/firmware/efi/efivars/{name}-{guid} | tr -d ' \\n'").stdout)
    return data[4:]


def test_the_signed_host_enrolled_its_keys_from_setup_mode_and_boots_enforcing(
    booted_podman_host: Any, secure_boot_keys: Path
) -> None:
    host = booted_podman_host
    vm = host.vm
    assert host.vm.machine.secure_boot
    console = vm.state.serial_log.read_text(errors="replace")  # both boots: the enrolment's and this one
    enrolled = console.find(ENROLLED)
    assert console.find(ENROLLING) != -1 and enrolled > console.find(ENROLLING), console[:2000]
    # Nothing was booted before the keys were in (setup mode runs anything), all of it after.
    assert "Linux version" not in console[:enrolled]
    after = console[enrolled:]
    assert all(line in after for line in ENFORCING), after[:4000]
    # Reached BERTH-READY (the fixture waited for it) on the enforcing boot.
    assert after.find("BERTH-READY") > after.find("secureboot: Secure boot enabled")

    assert "Secure Boot: enabled (user)" in vm.run("bootctl status --no-pager").stdout
    assert efi_variable(vm, "SecureBoot", EFI_GLOBAL) == b"\x01"
    assert efi_variable(vm, "SetupMode", EFI_GLOBAL) == b"\x00"
    # The firmware holds this run's keys (each variable an EFI signature list with the
    # certificate), and the agent's lock is the same db certificate.
    keys = sbkeys.keys_in(secure_boot_keys)
    for name, guid in (("PK", EFI_GLOBAL), ("KEK", EFI_GLOBAL), ("db", EFI_IMAGE_SECURITY)):
        assert der(keys.cert(name)) in efi_variable(vm, name, guid), name
    assert vm.run(f"cat /{SECURE_BOOT_DB_CERT}").stdout == keys.cert("db").read_text()
