"""Measured boot in QEMU, on the podman session host (no boot of its own): it has a TPM 2.0
(swtpm) and its image carries a signed PCR 11 policy (the run's keys have a PCR key).

The image's systemd-stub (257) measured the UKI's sections into PCR 11; berth reckoned the
same value at build time (builder/measure.py, checked against the host's systemd-measure
254 in tests/builder/test_measure.py) and signed it: here the guest's TPM agrees.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from builder import measure, pcrkey, uki
from tests.qemu.conftest import FIGURES

pytestmark = pytest.mark.slow

# The phase paths systemd-pcrextend may have added by now (berth's initrd measures none).
PHASE_PATHS = ("", "sysinit", "sysinit:ready", "enter-initrd:leave-initrd",
               "enter-initrd:leave-initrd:sysinit", "enter-initrd:leave-initrd:sysinit:ready")


def test_the_guest_s_pcr_11_is_what_the_build_signed_for_this_uki(booted_podman_host: Any,
                                                                 secure_boot_keys: Path) -> None:
    host = booted_podman_host
    vm = host.vm
    assert vm.swtpm is not None and vm.swtpm.running()
    sections = uki.sections((host.artifact / "uki.efi").read_bytes())
    key = pcrkey.key_in(secure_boot_keys)
    assert sections[".pcrpkey"] == key.public.read_bytes()
    policy = json.loads(sections[".pcrsig"])
    fingerprint = hashlib.sha256(serialization.load_pem_public_key(key.public.read_bytes()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1)).hexdigest()
    assert {(tuple(e["pcrs"]), e["pkfp"]) for e in policy["sha256"]} == {((11,), fingerprint)}
    # systemd-stub measured the UKI (it says so in an EFI variable) into the TPM's PCR 11.
    assert vm.run("test -e /sys/firmware/efi/efivars/StubPcrKernelImage-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f",
                  check=False).returncode == 0
    in_guest = vm.run(f"cat /sys/class/tpm/tpm0/pcr-sha256/{measure.PCR}").stdout.strip().lower()
    # The sections as berth reckons them, then the boot phases the root measured.
    matched = [phase for phase in PHASE_PATHS if measure.pcr11(sections, phase).hex() == in_guest]
    assert matched, (in_guest, {p: measure.pcr11(sections, p).hex() for p in PHASE_PATHS})
    # Before those phases (where /var opens) the value is one the build signed for.
    assert matched[0].split(":")[0] in ("", "sysinit") and "" in measure.PHASES, matched
    # The stub handed the signature on (the initrd's tmpfiles put it where cryptsetup reads it).
    assert vm.run("cat /run/systemd/tpm2-pcr-signature.json").stdout.strip() == sections[".pcrsig"].decode().strip()


def luks2_header(vm: Any, device: str) -> dict[str, Any]:
    """The LUKS2 header's JSON (binary header: magic, version, header size; JSON after 4 KiB)."""
    binary = bytes.fromhex(vm.run(f"head -c 16 {device} | od -An -v -tx1 | tr -d ' \\n'").stdout)
    assert binary[:6] == b"LUKS\xba\xbe" and int.from_bytes(binary[6:8], "big") == 2, binary
    size = int.from_bytes(binary[8:16], "big")
    text = vm.run(f"head -c {size} {device} | tail -c {size - 4096} | tr -d '\\000'").stdout
    return dict(json.loads(text))


def seconds(vm: Any, unit: str) -> float:
    """How long a oneshot unit of this boot ran (its main process), from systemd's timestamps."""
    start, end = (int(v) for v in vm.run(
        f"systemctl show -P ExecMainStartTimestampMonotonic -P ExecMainExitTimestampMonotonic '{unit}'").stdout.split())
    return round((end - start) / 1e6, 2)


def test_var_is_luks2_made_at_first_boot_sealed_to_the_signed_policy_and_mounted(
    booted_podman_host: Any, secure_boot_keys: Path, request: pytest.FixtureRequest
) -> None:
    vm = booted_podman_host.vm
    assert vm.run("findmnt -n -o SOURCE,FSTYPE /var").stdout.split() == ["/dev/mapper/var", "ext4"]
    assert "crypt" in vm.run("lsblk -n -o TYPE /dev/mapper/var").stdout
    header = luks2_header(vm, "/dev/disk/by-partlabel/var")
    (token,) = header["tokens"].values()
    assert token["type"] == "systemd-tpm2", token
    # Sealed to the PCR key's policy for PCR 11, and to no PCR value: every signed UKI opens it.
    assert token["tpm2_pubkey_pcrs"] == [measure.PCR] and token["tpm2-pcrs"] == [], token
    public = serialization.load_pem_public_key(pcrkey.key_in(secure_boot_keys).public.read_bytes())
    sealed_to = base64.b64decode(token["tpm2_pubkey"])
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert der in sealed_to or sealed_to == pcrkey.key_in(secure_boot_keys).public.read_bytes(), token
    # Its only key slot is the TPM's: there is no passphrase to guess.
    assert list(header["keyslots"]) == token["keyslots"], header["keyslots"]
    # What the first boot spent making it (systemd-repart) and opening it (systemd-cryptsetup).
    figures = {"repart_s": seconds(vm, "systemd-repart.service"),
               "unlock_s": seconds(vm, "systemd-cryptsetup@var.service")}
    request.config.stash.setdefault(FIGURES, {})["ec2-var-tpm2"] = figures
