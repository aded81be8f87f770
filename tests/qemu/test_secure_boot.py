"""Secure Boot enforcing in QEMU, on the podman session host (no boot of its own).

Its image is signed with the run's keys (tests/conftest.py: `berth keys init`, then
`berth build --secure-boot-keys`), and it boots OVMF's Secure Boot build with blank
variables, which is setup mode: systemd-boot enrols db, KEK and PK from
loader/keys/auto, resets, and from then on the firmware runs only what db signed.
The last test here reboots the host once (into a UKI the firmware must refuse), so it
runs after every other test of that host (tests/qemu/test_image.py, test_provision.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from builder import sbkeys, sbsign
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


def test_a_uki_signed_by_another_key_is_refused_and_the_previous_entry_boots_by_itself(
    booted_podman_host: Any, tmp_path: Path
) -> None:
    """A staged entry with one try whose UKI another key set's db signed (written straight
    onto the ESP: the agent would refuse it, tests/agent/test_secure_boot_agent.py) is
    the next boot; the firmware refuses it, its try is spent, and with nobody at a menu
    the previous entry boots. It stays spent, not blessed (booted-counted-entry)."""
    vm = booted_podman_host.vm
    esp = f"/boot/{UKI_DIR}"
    (running,) = [BootEntry.parse(name) for name in vm.run(f"ls {esp}").stdout.split()]
    assert running is not None and running.blessed
    stranger = sbkeys.make(tmp_path / "stranger")
    # The UKI on the ESP, db-signed, re-signed by the stranger.
    bare = unsigned_copy(booted_podman_host.artifact / "uki.efi", tmp_path / "bare.efi")
    sbsign.sign_pe(bare, tmp_path / "forged.efi", stranger, int(time.time()))
    # The forged UKI differs from the one on the ESP only in its PE header and signature:
    # the guest assembles it from those two (31 MB through SSH under TCG would be ~half a minute).
    ours, forged, end = (booted_podman_host.artifact / "uki.efi").read_bytes(), \
        (tmp_path / "forged.efi").read_bytes(), bare.stat().st_size
    assert forged[HEADER:end] == ours[HEADER:end]
    staged = uki_filename(running.image_id, "1.0.1", 1)
    partial = f"{esp}/.{staged}.partial"
    vm.run(f"python3 -c '{ASSEMBLE}' {esp}/{running.filename} {partial} {HEADER} {end}",
           input=forged[:HEADER] + forged[end:])
    assert vm.run(f"sha256sum {partial}").stdout.split()[0] == hashlib.sha256(forged).hexdigest()
    vm.run(f"mv {partial} {esp}/{staged} && sync")
    entries = {e["id"]: e for e in json.loads(vm.run("bootctl list --json=short --no-pager").stdout)}
    forged_id = uki_filename(running.image_id, "1.0.1")
    assert entries[forged_id]["isDefault"] and entries[forged_id]["triesLeft"] == 1, entries

    vm.reboot()
    spent = uki_filename(running.image_id, "1.0.1").removesuffix(".efi") + "+0-1.efi"
    # systemd-boot's message; OVMF refuses an image signed by no key in db with EFI_ACCESS_DENIED.
    loading = "Error loading \\" + UKI_DIR.replace("/", "\\") + "\\" + spent
    refused = vm.wait_for(re.compile(re.escape(loading) + ": (Access denied|Security violation)", re.IGNORECASE))
    ready = vm.wait_ready()
    assert (ready.version, ready.slot) == (running.version, "a"), refused
    assert sorted(vm.run(f"ls {esp}").stdout.split()) == sorted([running.filename, spent])
    assert f"Current Entry: {running.filename}" in vm.run("bootctl status --no-pager").stdout
    entries = {e["id"]: e for e in json.loads(vm.run("bootctl list --json=short --no-pager").stdout)}
    assert entries[running.filename]["isDefault"] and not entries[forged_id]["isDefault"], entries
    trial = vm.run("/usr/lib/berth/on-trial", check=False)
    assert trial.returncode == 1 and "was counted but" in trial.stderr, trial


def test_a_uki_with_another_command_line_cannot_open_var_and_the_previous_entry_boots_and_opens_it(
    booted_podman_host: Any, secure_boot_keys: Path, tmp_path: Path
) -> None:
    """Measured boot (var_encryption tpm2, tests/qemu/test_measured_boot.py): a staged entry
    with one try whose UKI has another kernel command line, db-signed so the firmware boots
    it, its .pcrsig left as the build signed it. systemd-stub measures the other command line
    into PCR 11, which no signature covers: /var stays shut, the boot fails on its own
    (emergency.service's drop-in reboots a counted boot: no shell, no prompt), and the
    previous entry boots and opens /var by itself, its data kept. Runs after the test above."""
    vm = booted_podman_host.vm
    esp = f"/boot/{UKI_DIR}"
    ours = (booted_podman_host.artifact / "uki.efi").read_bytes()
    (running,) = [e for e in map(BootEntry.parse, vm.run(f"ls {esp}").stdout.split())
                  if e is not None and e.blessed]
    vm.run("echo kept-across-the-failed-boot > /var/lib/berth-measured-boot-marker && sync")
    bare = unsigned_copy(booted_podman_host.artifact / "uki.efi", tmp_path / "bare.efi")
    unsigned = bytearray(bare.read_bytes())
    (cmdline,) = [s for s in pe.headers(bytes(unsigned)).sections if s.name == ".cmdline"]
    at = unsigned.index(b" panic=5 ", cmdline.raw_offset, cmdline.raw_offset + cmdline.virtual_size)
    unsigned[at : at + 9] = b" panic=6 "  # same length: only the measured bytes differ
    bare.write_bytes(bytes(unsigned))
    sbsign.sign_pe(bare, tmp_path / "other-cmdline.efi", sbkeys.keys_in(secure_boot_keys), int(time.time()))
    other = (tmp_path / "other-cmdline.efi").read_bytes()
    # The guest builds it from its own UKI and the bytes that differ (not 31 MB through SSH).
    end = len(unsigned)
    runs = [(i, other[i : i + 1]) for i in range(end) if other[i] != ours[i]]
    assert len(runs) < 64, len(runs)  # header fields and one digit
    patches = json.dumps([[i, data.hex()] for i, data in runs] + [[end, other[end:].hex()]])
    staged = uki_filename(running.image_id, "1.0.2", 1)
    partial = f"{esp}/.{staged}.partial"
    vm.run(f"python3 -c '{PATCH}' {esp}/{running.filename} {partial} {end}", input=patches.encode())
    assert vm.run(f"sha256sum {partial}").stdout.split()[0] == hashlib.sha256(other).hexdigest()
    vm.run(f"mv {partial} {esp}/{staged} && sync")
    entries = {e["id"]: e for e in json.loads(vm.run("bootctl list --json=short --no-pager").stdout)}
    other_id = uki_filename(running.image_id, "1.0.2")
    assert entries[other_id]["isDefault"] and entries[other_id]["triesLeft"] == 1, entries

    vm.reboot()
    # The firmware ran it (db signed it), the stub measured it, /var did not open.
    failed = vm.wait_for("berth: this boot is on trial: rebooting in 5 s")
    ready = vm.wait_ready()
    assert (ready.version, ready.slot) == (running.version, "a"), failed
    console = vm.state.serial_log.read_text(errors="replace")
    assert "berth: /var is LUKS2 sealed to this machine's TPM" in console
    assert f"Current Entry: {running.filename}" in vm.run("bootctl status --no-pager").stdout
    spent = other_id.removesuffix(".efi") + "+0-1.efi"
    assert spent in vm.run(f"ls {esp}").stdout.split()
    assert vm.run("findmnt -n -o SOURCE /var").stdout.strip() == "/dev/mapper/var"
    assert vm.run("cat /var/lib/berth-measured-boot-marker").stdout == "kept-across-the-failed-boot\n"
