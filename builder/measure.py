"""Each UKI's signed PCR 11 policy: what systemd-stub will measure, signed with the PCR key.

systemd-stub measures a UKI's sections into PCR 11 before the kernel runs: for
each section it has, in its fixed order, the SHA-256 of the name (with its NUL),
then of the contents; systemd-pcrextend later adds boot phases ("enter-initrd",
"sysinit" …), each the SHA-256 of the word. Knowing the sections, the value is
known at build time, so the build signs it (``systemd-measure sign``: a
TPM2 PolicyPCR digest signed with the PCR key, JSON) and puts the signature in the
UKI's ``.pcrsig`` section and the public key in ``.pcrpkey``. A secret sealed
under that public key (/var's LUKS2 key, `var_encryption: tpm2`) unseals only when
PCR 11 matches a value signed by it: every release's UKI unlocks it, a UKI with
another kernel, initrd, command line or key, or another OS, does not.

It runs after builder/seal.py (the root hash on the command line is measured) and
before builder/sbsign.py (Authenticode covers the added sections). ``.pcrsig``
itself is not measured, ``.pcrpkey`` is.

The pure part (which sections, in which order, the expected PCR value) is checked
against the host's systemd-measure (254) in the unit tests and against the guest's
TPM after a real boot with the image's systemd-stub (257) in QEMU.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from builder import artifacts, sbsign, uki
from builder.pcrkey import PcrKey
from cli.errors import UserError
from updater import contract, gpt

PCR = 11
BANK = "sha256"
# systemd-stub's measured sections, in the order it measures them (the UnifiedSection
# enum of src/fundamental/uki.h; .pcrsig, between .sbat and .pcrpkey there, is skipped).
# systemd 254 (the host's systemd-measure) and 257 (the image's stub) agree on this
# order for every section here; 257 also knows .ucode (after .initrd), .profile,
# .dtbauto and .hwids, which systemd-measure 254 cannot measure: refused below.
MEASURED = (".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".uname", ".sbat", ".pcrpkey")
UNMEASURABLE = (".ucode", ".profile", ".dtbauto", ".hwids")
# The boot phases berth's /var unlocks at (systemd-cryptsetup@var.service, before
# sysinit.target): berth's initrd has no TPM library, so its systemd-pcrphase-initrd
# measures nothing ("" : the sections alone); an initrd that measures would be at
# "enter-initrd:leave-initrd" by then. The root's "sysinit" (after sysinit.target)
# ends the window: later in a boot, PCR 11 matches no signed value.
PHASES = ("", "enter-initrd:leave-initrd")


def measured(sections: Mapping[str, bytes]) -> list[tuple[str, bytes]]:
    """The (name, contents) systemd-stub measures, in its order; one-line error for a
    section systemd-measure cannot measure (so the signature would not match)."""
    odd = sorted(set(sections) & set(UNMEASURABLE))
    if odd:
        raise UserError(f"the UKI has section(s) {', '.join(odd)}, which the host's systemd-measure "
                        "cannot measure: its PCR 11 signature would not match the boot")
    return [(name, sections[name]) for name in MEASURED if name in sections]


def extend(pcr: bytes, digest: bytes) -> bytes:
    return hashlib.sha256(pcr + digest).digest()


def pcr11(sections: Mapping[str, bytes], phase: str = "") -> bytes:
    """PCR 11 after systemd-stub measured ``sections`` and systemd-pcrextend the words
    of ``phase`` (colon-separated), from a PCR of zeros."""
    value = bytes(32)
    for name, content in measured(sections):
        value = extend(value, hashlib.sha256(name.encode() + b"\0").digest())
        value = extend(value, hashlib.sha256(content).digest())
    for word in filter(None, phase.split(":")):
        value = extend(value, hashlib.sha256(word.encode()).digest())
    return value


def measure_arguments(files: Mapping[str, Path], phases: Iterable[str] = PHASES) -> list[str]:
    """systemd-measure's options for the section files ``files`` (name -> path) and phases."""
    return [*(f"--{name.lstrip('.')}={files[name]}" for name in MEASURED if name in files),
            f"--bank={BANK}", *(f"--phase={phase}" for phase in phases)]


def sign_uki(pe: bytes, key: PcrKey, scratch: Path) -> bytes:
    """``pe`` (an unsigned UKI) with ``.pcrpkey`` (the public key) and ``.pcrsig`` (the
    signed PCR 11 policy for its sections and PHASES) added."""
    public = key.public.read_bytes()
    contents = {**uki.sections(pe), ".pcrpkey": public}
    files = {}
    for name, content in measured(contents):
        files[name] = scratch / f"section{name}"
        files[name].write_bytes(content)
    command = ["/usr/lib/systemd/systemd-measure", "sign", *measure_arguments(files),
               f"--private-key={key.private}", f"--public-key={key.public}", "--json=short"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        raise UserError("systemd-measure not found in /usr/lib/systemd (scripts/setup-host.sh)") from error
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()
        raise UserError(f"systemd-measure failed: {last[-1] if last else f'exit {done.returncode}'}")
    json.loads(done.stdout)  # its JSON, or an error here rather than at boot
    return uki.add_sections(pe, [(".pcrpkey", public), (".pcrsig", done.stdout.encode())])


def sign_esp(disk: Path, esp: gpt.Partition, key: PcrKey, epoch: int) -> list[str]:
    """Every UKI on ``disk``'s ESP with its signed PCR 11 policy; return their paths."""
    ukis = [f"{contract.UKI_DIR}/{n}" for n in artifacts.list_esp(disk, esp, contract.UKI_DIR)
            if n.lower().endswith(".efi")]
    with tempfile.TemporaryDirectory(prefix="berth-measure-", dir=disk.parent) as scratch:
        work = Path(scratch)
        for path in ukis:
            original, done = work / "uki.efi", work / "uki.measured.efi"
            artifacts.copy_from_esp(disk, esp, f"/{path}", original)
            done.write_bytes(sign_uki(original.read_bytes(), key, work))
            sbsign.put_on_esp(disk, esp, done, path, epoch)
    return ukis
