"""The firmware's Secure Boot databases as the agent reads them, and which certificates it trusts. Pure.

efivarfs gives a variable as its 4 attribute bytes then its data; db and dbx
hold EFI_SIGNATURE_LISTs (UEFI 2.10, 32.4.1): a type GUID, the list's size,
its header's size, each signature's size, then signatures, each an owner GUID
and data (a DER certificate for EFI_CERT_X509_GUID, a hash for the others).

Which certificates a host trusts for the UKIs it stages: those its image
carries (usr/lib/berth/secure-boot/*.crt) that its firmware would also boot,
i.e. that db holds and dbx does not. A certificate the image carries but db
does not hold yet (the incoming key of a db rotation, before the host appended
it) is *waiting*: a UKI it signed would not boot, so the agent does not stage
it yet, but may later. A firmware with no db at all (no Secure Boot keys
enrolled, or no UEFI) enforces nothing, and the image's set stands alone.

An authenticated write's payload (a .auth file, EFI_VARIABLE_AUTHENTICATION_2):
an EFI_TIME (16 bytes), a WIN_CERTIFICATE_UEFI_GUID whose dwLength covers its
own header and the PKCS#7 signature, then the signature lists to write.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"  # PK, KEK, SecureBoot, SetupMode
IMAGE_SECURITY_DATABASE = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"  # db, dbx
CERT_X509 = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
CERT_TYPE_PKCS7 = uuid.UUID("4aafd29d-68df-49ee-8aa9-347d375665a7")
WIN_CERT_TYPE_EFI_GUID = 0x0EF1

NON_VOLATILE, BOOTSERVICE_ACCESS, RUNTIME_ACCESS = 0x1, 0x2, 0x4
TIME_BASED_AUTHENTICATED_WRITE_ACCESS, APPEND_WRITE = 0x20, 0x40
# What db has once enrolled (builder/sbkeys.ATTRIBUTES), and with what an append is written.
DB_ATTRIBUTES = NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS | TIME_BASED_AUTHENTICATED_WRITE_ACCESS
APPEND_ATTRIBUTES = DB_ATTRIBUTES | APPEND_WRITE

_LIST_HEADER = struct.Struct("<16sIII")  # SignatureType, ListSize, HeaderSize, SignatureSize
_EFI_TIME = 16
_WIN_CERTIFICATE = struct.Struct("<IHH16s")  # dwLength, wRevision, wCertificateType, CertType


class BadVariable(ValueError):
    """A signature list or .auth file that is not what UEFI says it is."""


@dataclass(frozen=True)
class Signature:
    kind: uuid.UUID
    owner: uuid.UUID
    data: bytes


def signature_lists(data: bytes) -> list[Signature]:
    """Every signature in ``data``, a run of EFI_SIGNATURE_LISTs (a variable's data, attributes stripped)."""
    found, at = [], 0
    while at < len(data):
        if at + _LIST_HEADER.size > len(data):
            raise BadVariable(f"a signature list header cut short at byte {at}")
        kind, size, header, each = _LIST_HEADER.unpack_from(data, at)
        body = at + _LIST_HEADER.size + header
        if size < _LIST_HEADER.size + header or at + size > len(data) or each <= 16 or (at + size - body) % each:
            raise BadVariable(f"a malformed signature list at byte {at} (size {size}, each {each})")
        for start in range(body, at + size, each):
            found.append(Signature(uuid.UUID(bytes_le=kind), uuid.UUID(bytes_le=data[start:start + 16]),
                                   data[start + 16:start + each]))
        at += size
    return found


def certificates(data: bytes | None) -> list[bytes]:
    """The DER X.509 certificates among ``data``'s signature lists (none for no variable)."""
    return [] if data is None else [s.data for s in signature_lists(data) if s.kind == CERT_X509]


def variable_data(efivarfs_file: bytes) -> tuple[int, bytes]:
    """(attributes, data) of a variable as efivarfs reads it."""
    if len(efivarfs_file) < 4:
        raise BadVariable("an efivarfs file shorter than its attributes")
    return struct.unpack_from("<I", efivarfs_file)[0], efivarfs_file[4:]


def auth_payload(auth: bytes) -> bytes:
    """The signature lists an EFI_VARIABLE_AUTHENTICATION_2 (.auth file) writes."""
    if len(auth) < _EFI_TIME + _WIN_CERTIFICATE.size:
        raise BadVariable("an .auth file shorter than its headers")
    length, _, kind, cert_type = _WIN_CERTIFICATE.unpack_from(auth, _EFI_TIME)
    if kind != WIN_CERT_TYPE_EFI_GUID or uuid.UUID(bytes_le=cert_type) != CERT_TYPE_PKCS7:
        raise BadVariable("an .auth file whose signature is not WIN_CERT_TYPE_EFI_GUID/PKCS#7")
    if length < _WIN_CERTIFICATE.size or _EFI_TIME + length > len(auth):
        raise BadVariable(f"an .auth file whose signature length {length} runs past its end")
    payload = auth[_EFI_TIME + length:]
    signature_lists(payload)  # refuse what the firmware would
    return payload


def fingerprint(der: bytes) -> str:
    return "sha256:" + hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class Trust:
    trusted: tuple[bytes, ...]  # DER: may sign a UKI this host stages
    waiting: tuple[bytes, ...]  # DER: the image trusts it, the firmware's db does not hold it yet
    revoked: tuple[bytes, ...]  # DER: the image carries it, dbx revokes it


def trust(image: Sequence[bytes], db: bytes | None, dbx: bytes | None) -> Trust:
    """Which of the image's certificates (DER) may sign a staged UKI, given the firmware's
    db and dbx (their data; None for a variable the firmware does not have)."""
    held, banned = set(certificates(db)), set(certificates(dbx))
    ordered = list(dict.fromkeys(image))
    revoked = tuple(c for c in ordered if c in banned)
    allowed = [c for c in ordered if c not in banned]
    if db is None:
        return Trust(tuple(allowed), (), revoked)
    return Trust(tuple(c for c in allowed if c in held), tuple(c for c in allowed if c not in held), revoked)


def missing(auth_payloads: Iterable[bytes], db: bytes | None) -> list[int]:
    """Which of these append payloads (by position) add a certificate db does not hold yet;
    none without a db (nothing enrolled: systemd-boot enrols from setup mode instead)."""
    if db is None:
        return []
    held = set(certificates(db))
    return [i for i, payload in enumerate(auth_payloads) if not set(certificates(payload)) <= held]
