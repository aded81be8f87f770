"""A private CA and one server certificate signed by it, made fresh for one run.

For the QEMU lab, the tests and the bench: `berth serve --tls-cert/--tls-key`
gets the server pair, the agent (or any client) verifies against the CA file.
A real fleet uses its own PKI; nothing here is meant to last (one-day validity).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from updater.atomic import atomic_write


@dataclass(frozen=True)
class ServerTls:
    ca: Path  # the CA certificate clients verify against
    cert: Path  # the server's certificate
    key: Path  # the server's private key (mode 0600)


def make_server_tls(directory: Path, addresses: tuple[str, ...] = ("127.0.0.1",),
                    names: tuple[str, ...] = ("localhost",)) -> ServerTls:
    """A CA and a server certificate for ``addresses`` and ``names`` (its SANs) in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("berth run CA")
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    sans += [x509.DNSName(n) for n in names]
    cert = (
        x509.CertificateBuilder().subject_name(name("berth serve")).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    tls = ServerTls(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    atomic_write(tls.ca, ca.public_bytes(pem))
    atomic_write(tls.cert, cert.public_bytes(pem))
    atomic_write(tls.key, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()), mode=0o600)
    return tls
