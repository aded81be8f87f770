"""Secure Boot enforcing in QEMU, on the podman session host (no boot of its own).

Its image is signed with the run's keys (tests/conftest.py: `berth keys init`, then
`berth build --secure-boot-keys`), and it boots OVMF's Secure Boot build with blank
variables, which is setup mode: systemd-boot enrols db, KEK and PK from
loader/keys/auto, resets, and from then on the firmware runs only what db signed.
The tests after the first share one reboot of the host (``forged_boot``: into a UKI
the firmware must refuse and one whose command line keeps /var shut), so they run after
every other test of that host (tests/qemu/test_image.py, test_provision.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from builder import sbkeys, sbsign
from qemu.ready import Ready
from tests.resign import unsigned_copy
from updater import pe
from updater.contract import SECURE_BOOT_DB_CERT, UKI_DIR, BootEntry, uki_filename

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
# A PE file's headers (the signature's directory entry and the checksum among them) lie in its first 4 KiB.
HEADER = 4096
# In the guest: argv UKI, OUT, HEADER, END; stdin the new headers, then the new signature.
ASSEMBLE = ("import sys; ours = open(sys.argv[1], \"rb\").read(); new = sys.stdin.buffer.read(); h, e = map(int, sys.argv[3:]); "
            "open(sys.argv[2], \"wb\").write(new[:h] + ours[h:e] + new[h:])")
# In the guest: argv UKI, OUT, END; stdin [[offset, hex], ...]: UKI's first END bytes so patched.
PATCH = ("import sys, json; out = bytearray(open(sys.argv[1], \"rb\").read()[:int(sys.argv[2 + 1])]); "
         "[out.__setitem__(slice(i, i + len(bytes.fromhex(d))), bytes.fromhex(d)) for i, d in json.load(sys.stdin)]; "
         "open(sys.argv[2], \"wb\").write(out)")


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


@dataclass(frozen=True)
class ForgedBoot:
    """The one reboot into two forged entries, each staged with one try, and what it left."""

    running: BootEntry  # the blessed entry before, and after
    stranger_id: str  # 1.0.1: its UKI signed by another key set's db
    other_cmdline_id: str  # 1.0.2: db-signed, another kernel command line
    refused: str  # systemd-boot's line when the firmware refused the stranger's UKI
    on_trial: str  # berth's line when the other command line's boot failed
    ready: Ready


def staged(vm: Any, esp: str, name: str, script: str, source: str, args: str, stdin: bytes, digest: str) -> None:
    """Assemble ``name`` on the ESP from the guest's own UKI and ``stdin`` (not 31 MB through
    SSH: ~half a minute under TCG), check it, and move it in whole."""
    partial = f"{esp}/.{name}.partial"
    vm.run(f"python3 -c '{script}' {esp}/{source} {partial} {args}", input=stdin)
    assert vm.run(f"sha256sum {partial}").stdout.split()[0] == digest
    vm.run(f"mv {partial} {esp}/{name} && sync")


@pytest.fixture(scope="module")
def forged_boot(booted_podman_host: Any, secure_boot_keys: Path, tmp_path_factory: pytest.TempPathFactory) -> ForgedBoot:
    """Two entries with one try each, written straight onto the ESP (the agent would refuse
    both: tests/agent/test_secure_boot_agent.py, tests/qemu/test_secure_boot_rotation.py),
    then one reboot. systemd-boot tries the newer first: 1.0.2, whose UKI the firmware runs
    and whose command line keeps /var shut, so that boot fails and reboots itself; then
    1.0.1, which the firmware refuses; then, with nobody at a menu, the blessed entry. One
    reboot proves both (two cost a whole boot more under TCG). Runs after every other test
    of the host that reads its first boot's console."""
    vm, scratch = booted_podman_host.vm, tmp_path_factory.mktemp("forged")
    esp = f"/boot/{UKI_DIR}"
    (running,) = [BootEntry.parse(name) for name in vm.run(f"ls {esp}").stdout.split()]
    assert running is not None and running.blessed
    ours = (booted_podman_host.artifact / "uki.efi").read_bytes()  # the UKI on the ESP, db-signed
    bare = unsigned_copy(booted_podman_host.artifact / "uki.efi", scratch / "bare.efi")
    end = bare.stat().st_size

    # 1.0.1: differs from the one on the ESP only in its PE header and signature.
    sbsign.sign_pe(bare, scratch / "forged.efi", sbkeys.make(scratch / "stranger"), int(time.time()))
    forged = (scratch / "forged.efi").read_bytes()
    assert forged[HEADER:end] == ours[HEADER:end]
    staged(vm, esp, uki_filename(running.image_id, "1.0.1", 1), ASSEMBLE, running.filename, f"{HEADER} {end}",
           forged[:HEADER] + forged[end:], hashlib.sha256(forged).hexdigest())

    # 1.0.2: one digit of the command line, signed with the run's db key.
    unsigned = bytearray(bare.read_bytes())
    (cmdline,) = [s for s in pe.headers(bytes(unsigned)).sections if s.name == ".cmdline"]
    at = unsigned.index(b" panic=5 ", cmdline.raw_offset, cmdline.raw_offset + cmdline.virtual_size)
    unsigned[at : at + 9] = b" panic=6 "  # same length: only the measured bytes differ
    bare.write_bytes(bytes(unsigned))
    sbsign.sign_pe(bare, scratch / "other-cmdline.efi", sbkeys.keys_in(secure_boot_keys), int(time.time()))
    other = (scratch / "other-cmdline.efi").read_bytes()
    runs = [(i, other[i : i + 1]) for i in range(end) if other[i] != ours[i]]
    assert len(runs) < 64, len(runs)  # header fields and one digit
    patches = json.dumps([[i, data.hex()] for i, data in runs] + [[end, other[end:].hex()]])
    staged(vm, esp, uki_filename(running.image_id, "1.0.2", 1), PATCH, running.filename, str(end),
           patches.encode(), hashlib.sha256(other).hexdigest())

    stranger_id, other_id = (uki_filename(running.image_id, v) for v in ("1.0.1", "1.0.2"))
    entries = {e["id"]: e for e in json.loads(vm.run("bootctl list --json=short --no-pager").stdout)}
    assert entries[other_id]["isDefault"] and entries[other_id]["triesLeft"] == 1, entries
    assert entries[stranger_id]["triesLeft"] == 1, entries
    vm.run("echo kept-across-the-failed-boot > /var/lib/berth-measured-boot-marker && sync")

    vm.reboot()
    # The firmware ran 1.0.2 (db signed it), the stub measured it, /var did not open.
    on_trial = vm.wait_for("berth: this boot is on trial: rebooting in 5 s")
    # systemd-boot's message; OVMF refuses an image signed by no key in db with EFI_ACCESS_DENIED.
    loading = "Error loading \\" + UKI_DIR.replace("/", "\\") + "\\" + spent(stranger_id)
    refused = vm.wait_for(re.compile(re.escape(loading) + ": (Access denied|Security violation)", re.IGNORECASE))
    return ForgedBoot(running, stranger_id, other_id, refused, on_trial, vm.wait_ready())


def spent(entry_id: str) -> str:
    """The file name of an entry whose one try was spent (+0-1)."""
    return entry_id.removesuffix(".efi") + "+0-1.efi"


def test_after_the_forged_entries_the_previous_entry_boots_by_itself_and_both_stay_spent(
    booted_podman_host: Any, forged_boot: ForgedBoot
) -> None:
    """Neither forged entry is blessed or tried again (booted-counted-entry): both spent."""
    vm, boot = booted_podman_host.vm, forged_boot
    esp = f"/boot/{UKI_DIR}"
    assert (boot.ready.version, boot.ready.slot) == (boot.running.version, "a"), (boot.on_trial, boot.refused)
    assert sorted(vm.run(f"ls {esp}").stdout.split()) == sorted(
        [boot.running.filename, spent(boot.stranger_id), spent(boot.other_cmdline_id)])
    assert f"Current Entry: {boot.running.filename}" in vm.run("bootctl status --no-pager").stdout
    entries = {e["id"]: e for e in json.loads(vm.run("bootctl list --json=short --no-pager").stdout)}
    assert entries[boot.running.filename]["isDefault"], entries
    assert not entries[boot.stranger_id]["isDefault"] and not entries[boot.other_cmdline_id]["isDefault"], entries
    trial = vm.run("/usr/lib/berth/on-trial", check=False)
    assert trial.returncode == 1 and "was counted but" in trial.stderr, trial


def test_a_uki_signed_by_another_key_is_refused_by_the_firmware(forged_boot: ForgedBoot) -> None:
    """The stranger's entry never ran: the firmware refused it and its try is spent."""
    assert spent(forged_boot.stranger_id) in forged_boot.refused


def test_a_uki_with_another_command_line_cannot_open_var_and_the_previous_entry_opens_it(
    booted_podman_host: Any, forged_boot: ForgedBoot
) -> None:
    """Measured boot (var_encryption tpm2, tests/qemu/test_measured_boot.py): the firmware
    booted the db-signed UKI with another kernel command line, its .pcrsig left as the build
    signed it. systemd-stub measured the other command line into PCR 11, which no signature
    covers: /var stayed shut, the boot failed on its own (emergency.service's drop-in reboots
    a counted boot: no shell, no prompt), and the previous entry opened /var, its data kept."""
    vm = booted_podman_host.vm
    console = vm.state.serial_log.read_text(errors="replace")
    assert "berth: /var is LUKS2 sealed to this machine's TPM" in console
    assert vm.run("findmnt -n -o SOURCE /var").stdout.strip() == "/dev/mapper/var"
    assert vm.run("cat /var/lib/berth-measured-boot-marker").stdout == "kept-across-the-failed-boot\n"
