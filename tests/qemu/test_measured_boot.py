"""Measured boot in QEMU, on the podman session host (no boot of its own): it has a TPM 2.0
(swtpm) and its image carries a signed PCR 11 policy (the run's keys have a PCR key).

The image's systemd-stub (257) measured the UKI's sections into PCR 11; berth reckoned the
same value at build time (builder/measure.py, checked against the host's systemd-measure
254 in tests/builder/test_measure.py) and signed it: here the guest's TPM agrees.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from builder import measure, pcrkey, uki

pytestmark = pytest.mark.slow

# systemd-pcrextend's record of what it measured, one JSON object per record (JSON-SEQ).
MEASURE_LOG = "/run/log/systemd/tpm2-measure.log"


def phases_measured(vm: Any) -> str:
    """The boot phases the guest's systemd extended PCR 11 with, in order, as a phase path."""
    text = vm.run(f"cat {MEASURE_LOG} 2>/dev/null || true").stdout
    words = []
    for record in filter(None, (r.strip("\x1e \n") for r in text.split("\x1e"))):
        entry = json.loads(record)
        if entry.get("pcr") == measure.PCR and entry.get("content", {}).get("eventType") == "phase":
            words.append(entry["content"]["string"])
    return ":".join(words)


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
    phase = phases_measured(vm)
    assert in_guest == measure.pcr11(sections, phase).hex(), (phase, in_guest)
    # Before the root's phases the value is one the build signed (and the stub handed the
    # signature and key on to the OS).
    assert measure.PHASES[0] == "" and phase.split(":")[0] in ("", "sysinit"), phase
    assert vm.run("cat /run/systemd/tpm2-pcr-signature.json").stdout.strip() == sections[".pcrsig"].decode().strip()
