"""Signing a sealed disk's ESP for Secure Boot (I/O edge): boot loader, UKIs, enrolment files.

Runs after builder/seal.py: the root hash is patched into every UKI first, so
the signature covers the final bytes. Each PE file is copied off the ESP with
mtools, signed with the db key by sbsign and copied back; the PK, KEK and db
.auth files go to ``loader/keys/auto/`` and loader.conf gets
``secure-boot-enroll``, so systemd-boot enrols the keys on firmware in setup
mode and reboots. A signed image boots unchanged on firmware without Secure
Boot.

Reproducible: RSA PKCS#1 v1.5 signatures are deterministic, but OpenSSL
(under sbsign) stamps a signingTime attribute from the clock, so sbsign runs
under faketime frozen at the build's SOURCE_DATE_EPOCH; the files copied back
carry that time too (mcopy -m; mtools reads SOURCE_DATE_EPOCH for new directories).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import tempfile
from pathlib import Path

from builder import artifacts
from builder.sbkeys import NAMES, SecureBootKeys
from cli.errors import UserError
from updater import contract, gpt

BOOT_LOADERS = ("EFI/BOOT/BOOTX64.EFI", "EFI/systemd/systemd-bootx64.efi")
ENROL_DIR = "loader/keys/auto"
LOADER_CONF = "loader/loader.conf"
# force: enrol without the 15 s countdown systemd-boot shows for `manual`; berth's keys are
# the machine's keys, and the firmware must be in setup mode for it to happen at all.
ENROL_LINE = "secure-boot-enroll force"


def loader_conf(text: str) -> str:
    """loader.conf with ``ENROL_LINE`` in place of any earlier secure-boot-enroll line."""
    kept = [line for line in text.splitlines() if not line.strip().startswith("secure-boot-enroll")]
    return "\n".join([*kept, ENROL_LINE]) + "\n"


def sign_esp(disk: Path, esp: gpt.Partition, keys: SecureBootKeys, epoch: int) -> list[str]:
    """Sign every boot loader and UKI on ``disk``'s ESP and add the enrolment files; return
    the signed paths."""
    ukis = [
        f"{contract.UKI_DIR}/{n}"
        for n in artifacts.list_esp(disk, esp, contract.UKI_DIR)
        if n.lower().endswith(".efi")
    ]
    signed = [*BOOT_LOADERS, *ukis]
    with tempfile.TemporaryDirectory(prefix="berth-sbsign-", dir=disk.parent) as scratch:
        work = Path(scratch)
        for index, path in enumerate(signed):
            unsigned, done = work / f"{index}.efi", work / f"{index}.signed.efi"
            artifacts.copy_from_esp(disk, esp, f"/{path}", unsigned)
            sign_pe(unsigned, done, keys, epoch)
            put_on_esp(disk, esp, done, path, epoch)
        _mkdirs(disk, esp, ENROL_DIR, epoch)
        for name in NAMES:
            put_on_esp(disk, esp, keys.auth(name), f"{ENROL_DIR}/{name}.auth", epoch)
        conf = work / "loader.conf"
        artifacts.copy_from_esp(disk, esp, f"/{LOADER_CONF}", conf)
        conf.write_text(loader_conf(conf.read_text()))
        put_on_esp(disk, esp, conf, LOADER_CONF, epoch)
    return signed


def sign_pe(source: Path, target: Path, keys: SecureBootKeys, epoch: int) -> None:
    """``source`` signed with the db key into ``target``; the same bytes for the same epoch."""
    frozen = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    _run(
        ["faketime", "-f", frozen, "sbsign", "--key", str(keys.key("db")), "--cert",
         str(keys.cert("db")), "--output", str(target), str(source)],
        f"signing {source.name}", epoch,
    )


def put_on_esp(disk: Path, esp: gpt.Partition, source: Path, path: str, epoch: int) -> None:
    """``source`` onto the ESP at ``path`` (replacing it), dated ``epoch``."""
    os.utime(source, (epoch, epoch))
    _run(["mcopy", "-o", "-m", "-i", f"{disk}@@{esp.offset}", str(source), f"::/{path}"],
         f"writing {path} to the ESP", epoch)


def _mkdirs(disk: Path, esp: gpt.Partition, path: str, epoch: int) -> None:
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        parent = "/".join(parts[: depth - 1])
        if parts[depth - 1] not in artifacts.list_esp(disk, esp, parent):
            _run(["mmd", "-i", f"{disk}@@{esp.offset}", f"::/{'/'.join(parts[:depth])}"],
                 f"making {path} on the ESP", epoch)


def _run(command: list[str], what: str, epoch: int) -> None:
    # mtools dates new directory entries by SOURCE_DATE_EPOCH when it is set.
    environment = {**os.environ, "TZ": "UTC", "MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": str(epoch)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    except FileNotFoundError as error:
        raise UserError(f"{what}: {command[0]} not found (scripts/setup-host.sh installs it)") from error
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        raise UserError(f"{what}: {command[0]} failed: {last[-1] if last else f'exit {done.returncode}'}")
