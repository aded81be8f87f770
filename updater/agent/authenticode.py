"""Is this PE image (a UKI) Authenticode-signed by a trusted certificate? A pure check.

The agent's second lock beside TUF: a host whose image carries a db
certificate stages only UKIs that certificate signed, the same rule its
firmware applies at boot, checked before the slot is touched. What the
firmware does, in order (Microsoft's Authenticode PE specification):

1. the image's hash, skipping the checksum field, the certificate-table entry
   and the certificate table itself (headers, then sections in file order, then
   what follows them);
2. that hash equals the digest in the signature's SpcIndirectDataContent;
3. the signed attributes' messageDigest is the hash of that content;
4. the signature over the signed attributes verifies with the trusted
   certificate's key, or with a certificate in the signature it directly issued.

ASN.1 is read with a minimal DER walker (only what SignedData needs); the
RSA/ECDSA arithmetic is python3-cryptography's, which the image carries.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from updater import pe as pe_headers

_SIGNED_DATA = "1.2.840.113549.1.7.2"
_SPC_INDIRECT_DATA = "1.3.6.1.4.1.311.2.1.4"
_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_HASHES = {
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
    "1.3.14.3.2.26": "sha1",
}
_WIN_CERT_PKCS_SIGNED_DATA = 0x0002


class Unsigned(ValueError):
    """Why an image is not signed by the trusted certificate."""


# ---- DER ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    tag: int
    data: bytes  # the whole encoding: tag, length and contents
    start: int  # where the contents begin in ``data``

    @property
    def contents(self) -> bytes:
        return self.data[self.start :]

    def children(self) -> list[_Node]:
        found, at, body = [], 0, self.contents
        while at < len(body):
            node, at = _read(body, at)
            found.append(node)
        return found


def _read(data: bytes, at: int) -> tuple[_Node, int]:
    if at + 2 > len(data):
        raise Unsigned("truncated DER in the signature")
    tag, first = data[at], data[at + 1]
    header = 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 4 or at + 2 + count > len(data):
            raise Unsigned("bad DER length in the signature")
        length = int.from_bytes(data[at + 2 : at + 2 + count], "big")
        header += count
    else:
        length = first
    end = at + header + length
    if end > len(data):
        raise Unsigned("truncated DER in the signature")
    return _Node(tag, data[at:end], header), end


def _parse(data: bytes) -> _Node:
    return _read(data, 0)[0]


def _oid(node: _Node) -> str:
    if node.tag != 0x06:
        raise Unsigned("expected an OBJECT IDENTIFIER in the signature")
    body = node.contents
    parts, value = [], 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    if not parts:
        raise Unsigned("empty OBJECT IDENTIFIER in the signature")
    first = min(parts[0] // 40, 2)
    return ".".join(str(p) for p in [first, parts[0] - 40 * first, *parts[1:]])


def _integer(node: _Node) -> int:
    return int.from_bytes(node.contents, "big", signed=True)


# ---- PE -------------------------------------------------------------------------------


def _layout(pe: bytes) -> pe_headers.Headers:
    try:
        found = pe_headers.headers(pe)
    except pe_headers.PEError as error:
        raise Unsigned(str(error)) from error
    if found.security_entry is None:
        raise Unsigned("the PE image has no certificate-table entry")
    return found


def pe_digest(pe: bytes, algorithm: str = "sha256") -> bytes:
    """The Authenticode hash of ``pe`` (the same whether or not it is signed yet)."""
    layout = _layout(pe)
    digest = hashlib.new(algorithm)
    digest.update(pe[: layout.checksum])
    assert layout.security_entry is not None  # _layout refuses an image without one
    digest.update(pe[layout.checksum + 4 : layout.security_entry])
    digest.update(pe[layout.security_entry + 8 : layout.headers_size])
    hashed = layout.headers_size
    # Authenticode hashes the sections with raw data in file order.
    for offset, size in sorted((s.raw_offset, s.raw_size) for s in layout.sections if s.raw_size):
        if offset + size > len(pe):
            raise Unsigned("a PE section runs past the end of the image")
        digest.update(pe[offset : offset + size])
        hashed += size
    table_offset, table_size = layout.certificates
    end = table_offset if table_size else len(pe)
    if end > hashed:
        digest.update(pe[hashed:end])
    return digest.digest()


def signatures(pe: bytes) -> list[bytes]:
    """The PKCS#7 SignedData blobs of ``pe``'s certificate table (none when unsigned)."""
    offset, size = _layout(pe).certificates
    if not size:
        return []
    if offset + size > len(pe):
        raise Unsigned("the certificate table runs past the end of the image")
    found, at = [], offset
    while at + 8 <= offset + size:
        length, _, kind = struct.unpack_from("<IHH", pe, at)
        if length < 8:
            raise Unsigned("a malformed WIN_CERTIFICATE entry")
        if kind == _WIN_CERT_PKCS_SIGNED_DATA:
            found.append(pe[at + 8 : at + length])
        at += (length + 7) & ~7
    return found


# ---- the check ------------------------------------------------------------------------


def check(pe: bytes, trusted_pem: bytes) -> None:
    """Return if some signature of ``pe`` verifies under the PEM certificate ``trusted_pem``;
    raise Unsigned saying why not."""
    from cryptography import x509

    try:
        trusted = x509.load_pem_x509_certificate(trusted_pem)
    except ValueError as error:
        raise Unsigned(f"the trusted certificate is not PEM X.509: {error}") from error
    blobs = signatures(pe)
    if not blobs:
        raise Unsigned("the image is not signed")
    problems = []
    for blob in blobs:
        try:
            _check_one(pe, blob, trusted)
            return
        except Unsigned as problem:
            problems.append(str(problem))
        except (IndexError, StopIteration, ValueError) as error:  # a structure not as SignedData has it
            problems.append(f"a malformed signature ({type(error).__name__})")
    raise Unsigned("; ".join(problems))


def _check_one(pe: bytes, blob: bytes, trusted: Any) -> None:
    info = _parse(blob).children()
    if len(info) < 2 or _oid(info[0]) != _SIGNED_DATA or info[1].tag != 0xA0:
        raise Unsigned("the signature is not PKCS#7 SignedData")
    signed = info[1].children()[0].children()
    content_info = signed[2].children()
    if _oid(content_info[0]) != _SPC_INDIRECT_DATA:
        raise Unsigned("the signature does not sign an Authenticode SpcIndirectDataContent")
    content = content_info[1].children()[0]
    digest_info = content.children()[1].children()
    algorithm = _hash_name(digest_info[0].children()[0])
    if digest_info[1].contents != pe_digest(pe, algorithm):
        raise Unsigned("the image's hash does not match its signature (changed after signing)")
    certificates = [n for n in signed[3:-1] if n.tag == 0xA0]
    signer_info = signed[-1].children()
    if len(signer_info) != 1:
        raise Unsigned(f"expected one signer, found {len(signer_info)}")
    _check_signer(signer_info[0], content, certificates[0].children() if certificates else [], trusted)


def _check_signer(signer: _Node, content: _Node, certificates: list[_Node], trusted: Any) -> None:
    from cryptography.exceptions import InvalidSignature

    fields = signer.children()
    issuer_serial = fields[1].children()
    algorithm = _hash_name(fields[2].children()[0])
    attributes = next((f for f in fields[3:] if f.tag == 0xA0), None)
    signature = next(f for f in fields[3:] if f.tag == 0x04).contents
    if attributes is None:
        signed_bytes = content.contents
    else:
        digest = _attribute(attributes, _MESSAGE_DIGEST)
        if digest != hashlib.new(algorithm, content.contents).digest():
            raise Unsigned("the signed attributes do not match the signed content")
        # The signature covers the attributes DER-encoded as a SET, not as the [0] field.
        signed_bytes = b"\x31" + attributes.data[1:]
    signer_cert = _signer_certificate(issuer_serial, certificates, trusted)
    if signer_cert is None:
        raise Unsigned(f"signed by {_rdn(issuer_serial[0])}, not by this host's db certificate "
                       f"{trusted.subject.rfc4514_string()}")
    if signer_cert is not trusted:
        try:
            signer_cert.verify_directly_issued_by(trusted)
        except (ValueError, TypeError, InvalidSignature) as error:
            raise Unsigned(f"signed by {signer_cert.subject.rfc4514_string()}, a certificate this host's "
                           f"db certificate did not issue ({str(error) or 'bad signature'})") from error
    _verify(signer_cert.public_key(), signature, signed_bytes, algorithm)


def _signer_certificate(issuer_serial: list[_Node], certificates: list[_Node], trusted: Any) -> Any:
    """``trusted`` itself, the signature's certificate the signer names (to be checked as
    issued by ``trusted``), or None."""
    from cryptography import x509

    issuer, serial = issuer_serial[0].data, _integer(issuer_serial[1])
    if trusted.serial_number == serial and trusted.issuer.public_bytes() == issuer:
        return trusted
    for node in certificates:
        try:
            cert = x509.load_der_x509_certificate(node.data)
        except ValueError:
            continue
        if cert.serial_number == serial and cert.issuer.public_bytes() == issuer and (
            cert.issuer == trusted.subject
        ):
            return cert
    return None


def _verify(key: Any, signature: bytes, data: bytes, algorithm: str) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    chosen = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512(),
              "sha1": hashes.SHA1()}[algorithm]
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), chosen)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(chosen))
        else:
            raise Unsigned(f"unsupported signing key type {type(key).__name__}")
    except InvalidSignature as error:
        raise Unsigned("the signature does not verify with this host's db certificate") from error


def _attribute(attributes: _Node, oid: str) -> bytes:
    for attribute in attributes.children():
        kind, values = attribute.children()
        if _oid(kind) == oid:
            return values.children()[0].contents
    raise Unsigned("the signed attributes have no messageDigest")


def _hash_name(node: _Node) -> str:
    oid = _oid(node)
    if oid not in _HASHES:
        raise Unsigned(f"unsupported digest algorithm {oid}")
    return _HASHES[oid]


def _rdn(issuer: _Node) -> str:
    parts = []
    for rdn in issuer.children():
        for pair in rdn.children():
            kind, value = pair.children()
            label = {"2.5.4.3": "CN", "2.5.4.10": "O", "2.5.4.6": "C"}.get(_oid(kind), _oid(kind))
            parts.append(f"{label}={value.contents.decode('utf-8', 'replace')}")
    return ",".join(parts) or "an empty issuer"
