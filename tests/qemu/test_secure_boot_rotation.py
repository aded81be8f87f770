"""A db key rotation's firmware side, in QEMU on the podman session host (Secure Boot
enforcing, no boot of its own): the append file `berth keys rotate-db` makes, written
through efivarfs by `berth agent secure-boot-db` as a transition release's unit does,
puts the new certificate into the firmware's db beside the old one; a second run is a
no-op; and a UKI the new key signed then boots.

Runs after tests/qemu/test_secure_boot.py (file order): its first test asserts the
firmware's db holds the run's db certificate (still true after an append), and its
reboots (into a UKI a stranger's key signed, and one with another command line) come
before the append here, and leave spent entries 1.0.1 and 1.0.2 behind."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from builder import sbkeys, sbrotate, sbsign
from tests.qemu.test_secure_boot import ASSEMBLE, EFI_IMAGE_SECURITY, HEADER, der, efi_variable
from updater.agent import sbdb
from updater.contract import UKI_DIR, BootEntry, uki_filename

pytestmark = pytest.mark.slow

DB_FILE = f"/sys/firmware/efi/efivars/db-{EFI_IMAGE_SECURITY}"
# In the guest: is FS_IMMUTABLE_FL set on argv[1] (efivarfs sets it on db; the applier sets it back)?
IMMUTABLE = ("import fcntl, os, struct, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
             "print(bool(struct.unpack(\"i\", fcntl.ioctl(fd, 0x80086601, struct.pack(\"i\", 0)))[0] & 0x10))")


@pytest.fixture(scope="module")
def rotated(secure_boot_keys: Path, tmp_path_factory: pytest.TempPathFactory) -> sbkeys.SecureBootKeys:
    """The run's keys copied and rotated (`berth keys rotate-db`): the same KEK, so the
    host's firmware takes its append file; the run's own key directory stays as it was."""
    copy = tmp_path_factory.mktemp("rotated") / "keys"
    shutil.copytree(secure_boot_keys, copy)
    sbrotate.begin(copy)
    return sbkeys.keys_in(copy)


def test_the_append_file_puts_the_new_certificate_in_the_firmware_db_beside_the_old_once(
    booted_podman_host: Any, rotated: sbkeys.SecureBootKeys
) -> None:
    vm = booted_podman_host.vm
    old, new = der(rotated.cert("db")), der(rotated.cert(sbrotate.NEXT))
    before = efi_variable(vm, "db", EFI_IMAGE_SECURITY)
    assert sbdb.certificates(before) == [old]
    append = (rotated.directory / sbrotate.APPEND_AUTH).read_bytes()
    vm.run(f"mkdir -p /run/rotation && cat > /run/rotation/{sbrotate.APPEND_AUTH}", input=append)

    done = vm.run("berth agent secure-boot-db --from /run/rotation")
    assert "secure-boot-db: appended CN=berth Secure Boot db " in done.stdout, done
    after = efi_variable(vm, "db", EFI_IMAGE_SECURITY)
    assert sbdb.certificates(after) == [old, new]
    # The firmware kept db's attributes (no APPEND_WRITE stored), and the file is immutable again.
    attributes = bytes.fromhex(vm.run(f"od -An -v -tx1 -N4 {DB_FILE} | tr -d ' \\n'").stdout)
    assert int.from_bytes(attributes, "little") == sbdb.DB_ATTRIBUTES
    assert vm.run(f"python3 -c '{IMMUTABLE}' {DB_FILE}").stdout.strip() == "True"

    again = vm.run("berth agent secure-boot-db --from /run/rotation")
    assert "already" in again.stdout and "appended" not in again.stdout, again
    assert efi_variable(vm, "db", EFI_IMAGE_SECURITY) == after


def test_a_uki_signed_by_the_appended_key_boots(
    booted_podman_host: Any, rotated: sbkeys.SecureBootKeys, tmp_path: Path
) -> None:
    """The point of the append: the firmware now boots what the new key signed. A staged
    entry with one try, the running UKI signed by db-next (assembled in the guest from its
    new header and signature, as test_secure_boot.py does), is the next boot; it comes up
    and is blessed. One reboot (its cost: the README's Secure Boot section)."""
    vm = booted_podman_host.vm
    assert sbdb.certificates(efi_variable(vm, "db", EFI_IMAGE_SECURITY))[-1] == der(rotated.cert(sbrotate.NEXT))
    esp = f"/boot/{UKI_DIR}"
    entries = [e for e in (BootEntry.parse(n) for n in vm.run(f"ls {esp}").stdout.split()) if e is not None]
    (running,) = [e for e in entries if e.blessed]
    incoming = sbkeys.SecureBootKeys(tmp_path / "incoming")
    incoming.directory.mkdir()
    shutil.copyfile(rotated.key(sbrotate.NEXT), incoming.key("db"))
    shutil.copyfile(rotated.cert(sbrotate.NEXT), incoming.cert("db"))
    ours = booted_podman_host.artifact / "uki.efi"
    bare = tmp_path / "bare.efi"
    shutil.copyfile(ours, bare)
    subprocess.run(["sbattach", "--remove", str(bare)], check=True, capture_output=True)
    sbsign.sign_pe(bare, tmp_path / "new.efi", incoming, int(time.time()))
    signed, end = (tmp_path / "new.efi").read_bytes(), bare.stat().st_size
    assert signed[HEADER:end] == ours.read_bytes()[HEADER:end]
    # A version above every entry there (test_secure_boot.py left spent ones behind).
    staged = uki_filename(running.image_id, "1.0.9", 1)
    partial = f"{esp}/.{staged}.partial"
    vm.run(f"python3 -c '{ASSEMBLE}' {esp}/{running.filename} {partial} {HEADER} {end}",
           input=signed[:HEADER] + signed[end:])
    assert vm.run(f"sha256sum {partial}").stdout.split()[0] == hashlib.sha256(signed).hexdigest()
    vm.run(f"mv {partial} {esp}/{staged} && sync")
    new_id = uki_filename(running.image_id, "1.0.9")
    listed = {e["id"]: e for e in json.loads(vm.run("bootctl list --json=short --no-pager").stdout)}
    assert listed[new_id]["isDefault"] and listed[new_id]["triesLeft"] == 1, listed

    mark = len(vm.state.serial_log.read_text(errors="replace"))
    vm.reboot()
    ready = vm.wait_ready()
    assert ready.slot == "a"
    console = vm.state.serial_log.read_text(errors="replace")[mark:]
    assert "Error loading" not in console and "secureboot: Secure boot enabled" in console, console[:4000]
    # The kernel read db at boot too: both certificates went into its platform keyring.
    for cert in (rotated.cert("db"), rotated.cert(sbrotate.NEXT)):
        name = x509.load_pem_x509_certificate(cert.read_bytes()).subject.rfc4514_string().removeprefix("CN=")
        assert f"Loaded X.509 cert '{name}: " in console, name
    assert f"Current Entry: {new_id}" in vm.run("bootctl status --no-pager").stdout
    # Blessed (systemd-bless-boot dropped the counter): the firmware booted it, the checks passed.
    assert new_id in vm.run(f"ls {esp}").stdout.split()
