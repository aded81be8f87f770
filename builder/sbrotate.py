"""Rotating the Secure Boot db key: a new key pair, and the firmware writes that move hosts to it.

A fleet moves from db key 1 to db key 2 in two key-directory steps, each
followed by a release (README, "Rotating the db key"):

1. ``begin``: a new key pair ``db-next.key``/``db-next.crt`` and
   ``db-next.append.auth``, the new certificate as a signature list signed by
   the KEK for an APPEND_WRITE to the firmware's db. Builds still sign with
   ``db.key``, and their images carry ``db-next.crt`` and the append file beside
   ``db.crt`` (IMAGE_FILES): the transition release. On it each host appends the
   certificate to its firmware's db once its boot is blessed (`berth agent
   secure-boot-db`), and its agent trusts a UKI db-next signed only once the
   firmware's db holds it (updater/agent/sbdb.py).
2. ``switch``: ``db-next`` becomes ``db`` (the old pair moves to ``retired/``),
   and ``db.auth`` is made again holding only the new certificate: what a new
   machine enrols from setup mode, and the non-append write that drops the old
   certificate from a host's db. Builds now sign with the new key and their
   images trust only it.

The .auth files carry a timestamp (EFI_VARIABLE_AUTHENTICATION_2), so like
`berth keys init`'s they are made once, here, and every build copies them.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from builder import sbkeys
from cli.errors import UserError

NEXT = "db-next"
APPEND_AUTH = f"{NEXT}.append.auth"
RETIRED = "retired"
SWITCHING = "switching"  # while `--switch` runs: the retired name of the old pair
# APPEND_WRITE adds the list to db (the firmware drops entries it already holds); the
# signature covers the attributes, so the host writes exactly these.
APPEND_ATTRIBUTES = f"{sbkeys.ATTRIBUTES},APPEND_WRITE"
# What an image carries of a key directory (into usr/lib/berth/secure-boot/): never a key.
IMAGE_FILES = ("db.crt", f"{NEXT}.crt", APPEND_AUTH)


@dataclass(frozen=True)
class Rotation:
    """Where a key directory stands: the signing certificate and the incoming one, if any."""

    signing: Path
    incoming: Path | None
    append: Path | None


def state(keys_dir: Path) -> Rotation:
    keys = sbkeys.keys_in(keys_dir)
    incoming = keys.cert(NEXT)
    return Rotation(keys.cert("db"), incoming if incoming.is_file() else None,
                    keys.directory / APPEND_AUTH if (keys.directory / APPEND_AUTH).is_file() else None)


def begin(keys_dir: Path, common_name: str = "berth") -> Rotation:
    """A new db key pair and the KEK-signed append file that adds its certificate to db.
    A run cut short (power, a failed sbvarsign) is finished by running it again."""
    keys = sbkeys.keys_in(keys_dir)
    append = keys.directory / APPEND_AUTH
    if keys.cert(NEXT).exists() and append.exists():
        raise UserError(f"{keys.directory}: a db key rotation is under way ({NEXT}.crt exists); "
                        f"finish it with `berth keys rotate-db --keys {keys_dir} --switch`")
    _need_kek(keys)
    if not keys.cert(NEXT).exists():
        # A key without its certificate is a cut first run: nothing was built with it.
        keys.key(NEXT).unlink(missing_ok=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        sbkeys.write_keypair(keys, NEXT, f"{common_name} Secure Boot db {stamp}")
    partial = append.with_name(append.name + ".partial")
    sbkeys.write_auth(keys, "db", keys.cert(NEXT), partial, APPEND_ATTRIBUTES)
    os.replace(partial, append)
    return state(keys_dir)


def switch(keys_dir: Path) -> Rotation:
    """``db-next`` becomes the signing key; the old pair is retired; ``db.auth`` holds only
    the new certificate. Each file moves by one rename, in an order recorded first
    (``SWITCHING``), so a run cut short is finished by running it again."""
    directory = keys_dir / sbkeys.SUBDIR
    pending = directory / SWITCHING
    fresh = directory / "db.auth.new"
    if not pending.exists():
        keys = sbkeys.keys_in(keys_dir)
        if not keys.cert(NEXT).is_file() or not keys.key(NEXT).is_file():
            raise UserError(f"{keys.directory}: no db key rotation under way; start one with "
                            f"`berth keys rotate-db --keys {keys_dir}`")
        _need_kek(keys)
        # The new db.auth first, to the side: a failure here leaves the directory as it was.
        sbkeys.write_auth(keys, "db", keys.cert(NEXT), fresh)
        (directory / RETIRED).mkdir(mode=0o700, exist_ok=True)
        marker = pending.with_name(pending.name + ".partial")
        marker.write_text(f"db-{_serial(keys.cert('db'))}\n")
        os.replace(marker, pending)
    old = directory / RETIRED / pending.read_text().strip()
    for source, target in (
        (directory / "db.key", old.with_name(old.name + ".key")),
        (directory / "db.crt", old.with_name(old.name + ".crt")),
        (directory / "db.auth", old.with_name(old.name + ".auth")),
        (directory / APPEND_AUTH, old.with_name(f"{old.name}.{APPEND_AUTH}")),
        (directory / f"{NEXT}.key", directory / "db.key"),
        (directory / f"{NEXT}.crt", directory / "db.crt"),
        (fresh, directory / "db.auth"),
    ):
        # Done already when the source is gone or the target there (a cut run's work).
        if source.exists() and not target.exists():
            os.replace(source, target)
    pending.unlink()
    return state(keys_dir)


def _need_kek(keys: sbkeys.SecureBootKeys) -> None:
    if not keys.key("KEK").is_file() or not keys.cert("KEK").is_file():
        raise UserError(f"{keys.directory}: KEK.key and KEK.crt are needed to sign db updates "
                        "(a KEK kept offline: sign the db update there with sbvarsign)")


def _serial(cert_pem: Path) -> str:
    from cryptography import x509

    return format(x509.load_pem_x509_certificate(cert_pem.read_bytes()).serial_number, "x")
