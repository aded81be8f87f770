"""A db key rotation through updates, in QEMU on the podman session host (Secure Boot
enforcing, a TPM, /var LUKS2 sealed to the signed PCR 11 policy; no boot of its own).

Its image is a transition image (tests/conftest.py ``rotating_keys``: `berth keys
rotate-db`): signed by the run's db key, carrying db-next's certificate and the KEK-signed
append file. Once its first boot was blessed, berth-secure-boot-db.service put db-next
into the firmware's db beside the old certificate. Then the fleet server rolls out a
release that db-next alone signed (``switched_keys``: `rotate-db --switch`): the agent
takes it (TUF and the firmware's db both vouch for it), the firmware boots it, its PCR 11
signature opens /var, and it is blessed. That is Secure Boot's "updates to a signed
release" and measured boot's "/var opens after the update to v2", in one reboot.

Last, a release a stranger's key signed, TUF-signed as any other: the agent refuses it
before it touches the slot the host booted from before the rotation.

Runs after tests/qemu/test_secure_boot.py (file order): its reboot (into a UKI a
stranger's key signed, and one with another command line) leaves spent entries 1.0.1 and
1.0.2 behind, and its first test's check of the firmware's db holds after an append.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from builder import measure, sbkeys, sbrotate, sbsign, uki
from qemu.lab import Host
from qemu.scenarios import manifest, update
from qemu.seed import EXAMPLE_GROUP
from tests.imagebuilds import SWITCHED_VERSION
from tests.qemu.test_measured_boot import PHASE_PATHS
from tests.qemu.test_secure_boot import EFI_IMAGE_SECURITY, der, efi_variable
from tests.resign import unsigned_copy, with_artifact
from updater import contract
from updater.agent import sbdb
from updater.contract import UKI_DIR, uki_filename

pytestmark = pytest.mark.slow

DB_FILE = f"/sys/firmware/efi/efivars/db-{EFI_IMAGE_SECURITY}"
# In the guest: is FS_IMMUTABLE_FL set on argv[1] (efivarfs sets it on db; the applier sets it back)?
IMMUTABLE = ("import fcntl, os, struct, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
             "print(bool(struct.unpack(\"i\", fcntl.ioctl(fd, 0x80086601, struct.pack(\"i\", 0)))[0] & 0x10))")
APPEND_UNIT = "berth-secure-boot-db.service"
# The release db-next signed: above every version test_secure_boot.py left on the ESP.
ROTATED = SWITCHED_VERSION  # the release the switched key signed
FORGED = "1.2.0"  # above ROTATED: the release a stranger's key signed
# The unit runs after the bless; a loaded machine may take this long to get there.
UNIT_DONE_S = 300


def unit_state(vm: Any, unit: str) -> tuple[str, ...]:
    # One property per call: systemctl show prints several in its own order, not the asked one.
    return tuple(vm.run(f"systemctl show -P {name} {unit}").stdout.strip() for name in ("ActiveState", "Result"))


def test_the_transition_image_put_the_new_certificate_in_the_firmware_db_beside_the_old_once(
    booted_podman_host: Any, rotating_keys: Path
) -> None:
    vm = booted_podman_host.vm
    keys = sbkeys.keys_in(rotating_keys)
    old, new = der(keys.cert("db")), der(keys.cert(sbrotate.NEXT))
    assert vm.run(f"cat /usr/lib/berth/secure-boot/{sbrotate.NEXT}.crt").stdout == keys.cert(sbrotate.NEXT).read_text()
    deadline = time.monotonic() + UNIT_DONE_S
    while (state := unit_state(vm, APPEND_UNIT))[0] in ("inactive", "activating") and time.monotonic() < deadline:
        time.sleep(2)
    assert state == ("active", "success"), state
    assert sbdb.certificates(efi_variable(vm, "db", EFI_IMAGE_SECURITY)) == [old, new]
    # The first boot appended it (the persistent journal keeps every boot's lines); this
    # boot, after test_secure_boot.py's reboots, found it there.
    said = vm.run(f"journalctl --no-pager -o cat -u {APPEND_UNIT}").stdout
    assert "appended CN=berth Secure Boot db " in said and "already" in said, said
    # The firmware kept db's attributes (no APPEND_WRITE stored), and the file is immutable again.
    attributes = bytes.fromhex(vm.run(f"od -An -v -tx1 -N4 {DB_FILE} | tr -d ' \\n'").stdout)
    assert int.from_bytes(attributes, "little") == sbdb.DB_ATTRIBUTES
    assert vm.run(f"python3 -c '{IMMUTABLE}' {DB_FILE}").stdout.strip() == "True"

    before = efi_variable(vm, "db", EFI_IMAGE_SECURITY)
    again = vm.run("berth agent secure-boot-db")
    assert "already" in again.stdout and "appended" not in again.stdout, again
    assert efi_variable(vm, "db", EFI_IMAGE_SECURITY) == before


def signed_by(efi: Path, cert: Path) -> bool:
    return subprocess.run(["sbverify", "--cert", str(cert), str(efi)], check=False,
                          capture_output=True).returncode == 0


def test_the_host_updates_to_a_release_the_new_key_signed_and_it_opens_var(
    booted_podman_host: Any, switched_podman_image: Path, rotating_keys: Path
) -> None:
    host = booted_podman_host
    vm = host.vm
    lab = host.provisioning.fleet
    keys = sbkeys.keys_in(rotating_keys)
    old, new = keys.cert("db"), keys.cert(sbrotate.NEXT)
    release = switched_podman_image
    assert signed_by(release / "uki.efi", new) and not signed_by(release / "uki.efi", old)
    vm.run("echo kept-through-the-update > /var/lib/berth-rotation-marker && sync")
    before = vm.run("berth agent status --json").stdout
    mark = len(vm.state.serial_log.read_text(errors="replace"))

    fleet_host = Host("podman", vm, EXAMPLE_GROUP, logging.getLogger("berth.qemu").info)
    done = update(lab, fleet_host, release)

    assert done.events == ["downloading", "staged", "rebooting", "blessed"], (done.events, before)
    assert (done.ready.version, done.ready.slot) == (ROTATED, "b")
    transfer = lab.admin(f"/admin/hosts/{fleet_host.node_id}")["transfers"][-1]
    assert (transfer["version"], transfer["path"]) == (ROTATED, "delta"), transfer
    console = vm.state.serial_log.read_text(errors="replace")[mark:]
    assert "Error loading" not in console and "secureboot: Secure boot enabled" in console, console[:4000]
    # The kernel read db at boot: both certificates went into its platform keyring.
    for cert in (old, new):
        name = x509.load_pem_x509_certificate(cert.read_bytes()).subject.rfc4514_string().removeprefix("CN=")
        assert f"Loaded X.509 cert '{name}: " in console, name
    assert "Secure Boot: enabled (user)" in vm.run("bootctl status --no-pager").stdout
    assert done.ready.roothash == manifest(release).roothash
    entry = uki_filename(manifest(release).image_id, ROTATED)
    assert f"Current Entry: {entry}" in vm.run("bootctl status --no-pager").stdout
    assert entry in vm.run(f"ls /boot/{UKI_DIR}").stdout.split()  # blessed: no counter left
    # The new UKI's PCR 11 is one its own signed policy covers, and /var opened under it, data kept.
    sections = uki.sections((release / "uki.efi").read_bytes())
    in_guest = vm.run(f"cat /sys/class/tpm/tpm0/pcr-sha256/{measure.PCR}").stdout.strip().lower()
    assert any(measure.pcr11(sections, phase).hex() == in_guest for phase in PHASE_PATHS), in_guest
    assert vm.run("findmnt -n -o SOURCE /var").stdout.strip() == "/dev/mapper/var"
    assert vm.run("cat /var/lib/berth-rotation-marker").stdout == "kept-through-the-update\n"


def forged_release(release: Path, out: Path) -> Path:
    """``release`` as version FORGED, its UKI signed by a stranger's db key instead: every
    byte but the UKI's signature is berth's, and `berth publish` signs it into TUF."""
    forged = out / "forged"
    shutil.copytree(release, forged)
    bare = unsigned_copy(release / contract.UKI, out / "bare.efi")
    stranger = sbkeys.make(out / "stranger")
    sbsign.sign_pe(bare, forged / contract.UKI, stranger, int(time.time()))
    with_artifact(forged, contract.UKI, version=FORGED)
    return forged


def test_a_release_a_stranger_signed_is_refused_before_the_other_slot_is_touched(
    booted_podman_host: Any, switched_podman_image: Path, tmp_path: Path
) -> None:
    """TUF vouches for it, the host's db certificates do not: the agent reports the refusal,
    marks the version bad, and slot a (what the host booted before the rotation, its
    fallback) keeps its bytes, label and entry. No reboot. Runs after the rotation above."""
    vm = booted_podman_host.vm
    lab = booted_podman_host.provisioning.fleet
    release = forged_release(switched_podman_image, tmp_path)
    host = Host("podman", vm, EXAMPLE_GROUP, logging.getLogger("berth.qemu").info)
    before = host.agent_status()
    assert (before["booted"]["version"], before["booted"]["slot"]) == (ROTATED, "b"), before
    slot_a = f"/dev/disk/by-partuuid/{before['slots']['a']['uuid']}"
    bytes_before = vm.run(f"sha256sum {slot_a}").stdout.split()[0]

    lab.publish(release)
    reports = lab.follow(host, FORGED, ("failed", "rebooting"), 600)

    assert [r["event"] for r in reports] == ["downloading", "failed"], reports
    assert "its UKI is not signed by this host's Secure Boot db certificate" in reports[-1]["detail"], reports
    after = host.agent_status()
    assert after["state"] == "idle" and FORGED in after["bad_versions"], after
    assert (after["booted"], after["slots"], after["entries"]) == \
        (before["booted"], before["slots"], before["entries"])
    assert vm.run(f"sha256sum {slot_a}").stdout.split()[0] == bytes_before
    said = vm.run("journalctl --no-pager -o cat -u berth-agent.service").stdout
    assert f"release {FORGED} refused: its UKI is not signed" in said, said[-4000:]
