"""`var_encryption: tpm2`: /var as LUKS2, made at first boot and sealed to the TPM under the
UKIs' signed PCR 11 policy — through systemd's own surfaces (pure: the files' text).

The build leaves /var's space free at the disk's end instead of making the partition
(systemd-repart encrypts only what it creates). At first boot systemd-repart (the
root's, before sysinit.target) creates it, LUKS2 with a random volume key and one
systemd-tpm2 token: the key sealed under the PCR signing key's public half
(``--tpm2-public-key``, PCR 11, no PCR bound by value), so any PCR 11 value that key
signed unseals it — every release's UKI carries its signature (builder/measure.py).
/etc/crypttab opens it with that signature (systemd-stub hands ``.pcrsig`` to the
initrd, whose tmpfiles copy it to /run/systemd), headless: no passphrase to ask for.

When /var does not open (no TPM on the first boot, another command line, kernel or
OS, a cleared TPM) the boot goes to emergency mode, and emergency.service — a
drop-in, no shell on an unattended host — says why on the console and in the journal,
then reboots a boot on trial (systemd-boot has counted it and falls back to the
previous entry) and powers off any other: /var is never made or used in clear.
"""

from __future__ import annotations

from pathlib import Path

from builder import pcrkey
from updater.contract import VAR_LABEL

PUBLIC_KEY = "usr/lib/berth/tpm2-pcr-public-key.pem"
MAPPER = VAR_LABEL  # /dev/mapper/var
SIGNATURE = "/run/systemd/tpm2-pcr-signature.json"
UNAVAILABLE = "usr/lib/berth/var-unavailable"


def repart_definition(var_size_mib: int) -> str:
    return (
        "# /var at first boot: LUKS2 sealed to the TPM (berth var_encryption tpm2); made in the\n"
        "# free space the build left, grown into a larger disk like the clear one.\n"
        "[Partition]\nType=var\n"
        f"Label={VAR_LABEL}\nFormat=ext4\nEncrypt=tpm2\nSizeMinBytes={var_size_mib}M\n"
    )


def repart_dropin() -> str:
    return (
        "# Seal /var's key to the PCR signing key (PCR 11 policies it signed), not to PCR values:\n"
        "# every signed release unlocks it. No TPM, or it fails: emergency mode, never /var in clear.\n"
        "[Unit]\nAfter=tpm2.target\nOnFailure=emergency.target\nOnFailureJobMode=replace-irreversibly\n\n"
        "[Service]\nExecStart=\n"
        "ExecStart=systemd-repart --dry-run=no --tpm2-device=auto --tpm2-pcrs= "
        f"--tpm2-public-key=/{PUBLIC_KEY} --tpm2-public-key-pcrs=11\n"
    )


def crypttab() -> str:
    return (
        "# /var: LUKS2 made at first boot by systemd-repart, opened with its TPM2 token and the\n"
        "# booted UKI's signed PCR 11 policy; headless: no one to ask for a passphrase.\n"
        f"{MAPPER} PARTLABEL={VAR_LABEL} - tpm2-device=auto,tpm2-signature={SIGNATURE},headless=true\n"
    )


def fstab() -> str:
    return (
        "# The root is the verity-checked erofs slot the UKI names; everything writable\n"
        "# lives on /var, LUKS2 sealed to the TPM (/etc/crypttab), grown to fill the disk.\n"
        f"/dev/mapper/{MAPPER} /var ext4 defaults,x-systemd.growfs 0 2\n"
    )


def emergency_dropin() -> str:
    return (
        "# An unattended host has no one at its console: say why, then reboot a boot on trial\n"
        "# (systemd-boot falls back) or power off, instead of waiting in a shell for ever.\n"
        f"[Service]\nExecStart=\nExecStart=-/{UNAVAILABLE}\n"
    )


def unavailable_script() -> str:
    return """#!/bin/sh
# emergency.service of a host whose /var is LUKS2 sealed to its TPM (var_encryption tpm2).
set -u
say() {
    echo "berth: $1"
    echo "$1" | systemd-cat -t berth -p err 2>/dev/null || true
}
state() { systemctl show -P ActiveState "$1" 2>/dev/null || echo unknown; }
say "the host did not come up (emergency mode): systemd-repart $(state systemd-repart.service), unlocking /var $(state systemd-cryptsetup@var.service)"
say "/var is LUKS2 sealed to this machine's TPM under the releases' signed PCR 11 policy: it opens only for a berth-signed UKI on the TPM it was made with (no TPM, another kernel, command line or OS: it stays shut)"
if /usr/lib/berth/booted-counted-entry 2>/dev/null; then
    say "this boot is on trial: rebooting in 5 s so the boot loader counts the try and falls back"
    sleep 5
    systemctl --no-block reboot
else
    say "not a boot on trial: powering off in 5 s (no shell, and no /var in clear)"
    sleep 5
    systemctl --no-block poweroff
fi
"""


def image_tree(key: pcrkey.PcrKey, var_size_mib: int, tree: Path) -> list[Path]:
    """The files above as an extra tree for the root (over mkosi.extra's fstab and 50-var.conf)."""
    files = {
        "usr/lib/repart.d/50-var.conf": repart_definition(var_size_mib),
        "usr/lib/systemd/system/systemd-repart.service.d/berth-tpm2.conf": repart_dropin(),
        "etc/crypttab": crypttab(),
        "etc/fstab": fstab(),
        "usr/lib/systemd/system/emergency.service.d/berth-var.conf": emergency_dropin(),
        UNAVAILABLE: unavailable_script(),
    }
    for path, text in files.items():
        target = tree / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o755 if path == UNAVAILABLE else 0o644)
    return pcrkey.image_tree(key, tree, PUBLIC_KEY)
