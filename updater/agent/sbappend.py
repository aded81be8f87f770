"""`berth agent secure-boot-db`: add the image's incoming db certificates to the firmware's db.

A transition release of a db key rotation (builder/sbrotate.py) carries
``*.append.auth`` files in usr/lib/berth/secure-boot/: each the new
certificate's signature list signed by the KEK for an APPEND_WRITE to db.
berth-secure-boot-db.service runs this once the boot is blessed (a boot that
works is the one that changes the firmware), on every boot: a certificate db
already holds is left alone, so a second run, or one after a power cut cut
the first, does only what is still missing. The firmware checks the KEK's
signature; the result is read back from db, and `berth agent status` shows
which of the image's certificates the firmware holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from updater.agent import efivars, sbdb


@dataclass(frozen=True)
class Outcome:
    lines: tuple[str, ...]
    failed: bool


def apply(directory: Path, efivars_dir: Path) -> Outcome:
    """Append each ``directory/*.append.auth`` db does not hold yet; what was done, line by line."""
    files = sorted(directory.glob("*.append.auth"))
    if not files:
        return Outcome((f"{directory}: no db updates to apply",), False)
    db = _db(efivars_dir)
    if db is None:
        return Outcome(("the firmware has no db (Secure Boot keys not enrolled): nothing to append to",), False)
    auths = [f.read_bytes() for f in files]
    payloads = [sbdb.auth_payload(a) for a in auths]
    lines, failed = [], False
    pending = set(sbdb.missing(payloads, db))
    for index, file in enumerate(files):
        names = ", ".join(_names(payloads[index]))
        if index not in pending:
            lines.append(f"db holds {names} already ({file.name})")
            continue
        try:
            efivars.write(efivars_dir, "db", sbdb.IMAGE_SECURITY_DATABASE, sbdb.APPEND_ATTRIBUTES, auths[index])
        except OSError as error:
            lines.append(f"the firmware refused {file.name} ({names}): {error.strerror or error}")
            failed = True
            continue
        db = _db(efivars_dir)
        if sbdb.missing([payloads[index]], db):
            lines.append(f"appended {file.name}, but db does not hold {names} when read back")
            failed = True
        else:
            lines.append(f"appended {names} to db ({file.name})")
    return Outcome(tuple(lines), failed)


def _db(efivars_dir: Path) -> bytes | None:
    raw = efivars.read(efivars_dir, "db", sbdb.IMAGE_SECURITY_DATABASE)
    return None if raw is None else sbdb.variable_data(raw)[1]


def _names(payload: bytes) -> list[str]:
    from cryptography import x509

    return [f"{x509.load_der_x509_certificate(der).subject.rfc4514_string()} ({sbdb.fingerprint(der)[:19]})"
            for der in sbdb.certificates(payload)]
