"""May this UKI be staged on this host? Its signer must be trusted by the image and held by the firmware.

The agent's second lock beside TUF (updater/agent/authenticode.py does the
Authenticode check, updater/agent/sbdb.py decides which certificates count).
A refusal is *final* when no certificate the image carries signed the UKI (the
release is bad for this host for good), and *not yet* when the signer is the
incoming key of a db rotation that the firmware's db does not hold yet: the
UKI would not boot today, and will once the host appended the certificate
(`berth agent secure-boot-db`), so the agent tries again later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from updater.agent import authenticode, efivars, sbdb


@dataclass(frozen=True)
class Refusal:
    why: str
    final: bool


def image_certificates(directory: Path) -> list[bytes]:
    """The DER certificates an image trusts: every ``*.crt`` (PEM) in its secure-boot directory."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    return [x509.load_pem_x509_certificate(p.read_bytes()).public_bytes(serialization.Encoding.DER)
            for p in sorted(directory.glob("*.crt"))]


def firmware_trust(directory: Path, efivars_dir: Path) -> sbdb.Trust:
    def data(name: str) -> bytes | None:
        raw = efivars.read(efivars_dir, name, sbdb.IMAGE_SECURITY_DATABASE)
        return None if raw is None else sbdb.variable_data(raw)[1]

    return sbdb.trust(image_certificates(directory), data("db"), data("dbx"))


def status(directory: Path, efivars_dir: Path) -> dict[str, list[dict[str, str]]] | None:
    """`berth agent status`'s view: the image's certificates as the firmware sees them
    (None on an unsigned image)."""
    if not directory.is_dir() or not any(directory.glob("*.crt")):
        return None
    trust = firmware_trust(directory, efivars_dir)
    return {kind: [{"subject": _subject(der), "sha256": sbdb.fingerprint(der)} for der in getattr(trust, kind)]
            for kind in ("trusted", "waiting", "revoked")}


def check(pe: bytes, trust: sbdb.Trust) -> Refusal | None:
    """None if a trusted certificate signed ``pe``; else why not, final or not yet."""
    problems = []
    for der in trust.trusted:
        try:
            authenticode.check(pe, _pem(der))
            return None
        except authenticode.Unsigned as why:
            problems.append(str(why))
    for der in trust.waiting:
        try:
            authenticode.check(pe, _pem(der))
        except authenticode.Unsigned:
            continue
        return Refusal(f"signed by {_subject(der)}, which this image trusts but the firmware's db does not hold "
                       "yet (it would not boot): waiting for the db update", final=False)
    for der in trust.revoked:
        try:
            authenticode.check(pe, _pem(der))
        except authenticode.Unsigned:
            continue
        return Refusal(f"signed by {_subject(der)}, which the firmware's dbx revokes", final=True)
    if not trust.trusted:
        return Refusal("the firmware's db holds none of this image's Secure Boot certificates", final=True)
    return Refusal("; ".join(dict.fromkeys(problems)), final=True)


def _pem(der: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def _subject(der: bytes) -> str:
    from cryptography import x509

    return x509.load_der_x509_certificate(der).subject.rfc4514_string()
