"""updater/agent/authenticode.py against real sbsign signatures: the agent's second lock.

The PE is the host's own systemd-boot (systemd-boot-efi, scripts/setup-host.sh), signed
here by sbsign (sbsigntool) with keys made the way `berth keys init` makes them.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from builder import sbkeys
from updater.agent import authenticode

BOOT_LOADER = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")


def sbsign(pe: Path, key: Path, cert: Path, out: Path) -> bytes:
    subprocess.run(["sbsign", "--key", str(key), "--cert", str(cert), "--output", str(out), str(pe)],
                   check=True, capture_output=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[sbkeys.SecureBootKeys, sbkeys.SecureBootKeys]:
    base = tmp_path_factory.mktemp("sbkeys")
    return sbkeys.make(base / "ours"), sbkeys.make(base / "theirs")


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pe = tmp_path_factory.mktemp("pe") / "boot.efi"
    shutil.copyfile(BOOT_LOADER, pe)
    return pe


def test_a_pe_signed_with_the_db_key_passes(keys, unsigned: Path, tmp_path: Path) -> None:
    ours, _ = keys
    signed = sbsign(unsigned, ours.key("db"), ours.cert("db"), tmp_path / "s.efi")
    authenticode.check(signed, ours.cert("db").read_bytes())
    # The hash the signature covers is the unsigned image's: signing adds only the table.
    assert authenticode.pe_digest(signed) == authenticode.pe_digest(unsigned.read_bytes())


def test_a_pe_signed_by_another_key_with_the_same_name_is_refused(keys, unsigned: Path, tmp_path: Path) -> None:
    ours, theirs = keys  # both certificates are "CN=berth Secure Boot db"
    signed = sbsign(unsigned, theirs.key("db"), theirs.cert("db"), tmp_path / "s.efi")
    with pytest.raises(authenticode.Unsigned, match="did not issue"):
        authenticode.check(signed, ours.cert("db").read_bytes())
    # sbverify agrees.
    assert subprocess.run(["sbverify", "--cert", str(ours.cert("db")), str(tmp_path / "s.efi")],
                          check=False, capture_output=True).returncode != 0


def test_a_pe_signed_by_a_stranger_names_the_signer(keys, unsigned: Path, tmp_path: Path) -> None:
    ours, _ = keys
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mallory")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "m.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    (tmp_path / "m.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    signed = sbsign(unsigned, tmp_path / "m.key", tmp_path / "m.crt", tmp_path / "s.efi")
    with pytest.raises(authenticode.Unsigned, match="signed by CN=Mallory, not by"):
        authenticode.check(signed, ours.cert("db").read_bytes())


def test_an_unsigned_pe_is_refused(keys, unsigned: Path) -> None:
    ours, _ = keys
    with pytest.raises(authenticode.Unsigned, match="not signed"):
        authenticode.check(unsigned.read_bytes(), ours.cert("db").read_bytes())


def test_a_pe_changed_after_signing_is_refused(keys, unsigned: Path, tmp_path: Path) -> None:
    ours, _ = keys
    signed = bytearray(sbsign(unsigned, ours.key("db"), ours.cert("db"), tmp_path / "s.efi"))
    signed[0x1000] ^= 0xFF  # inside the first section
    with pytest.raises(authenticode.Unsigned, match="changed after signing"):
        authenticode.check(bytes(signed), ours.cert("db").read_bytes())


def test_a_signing_certificate_issued_by_the_db_certificate_passes(keys, unsigned: Path, tmp_path: Path) -> None:
    """UEFI trusts a db entry that is a CA for the signer; so does the agent (one level)."""
    ours, _ = keys
    ca_key = serialization.load_pem_private_key(ours.key("db").read_bytes(), None)
    ca = x509.load_pem_x509_certificate(ours.cert("db").read_bytes())
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "berth release signer")]))
            .issuer_name(ca.subject).public_key(leaf_key.public_key()).serial_number(7)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    (tmp_path / "l.key").write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "l.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    signed = sbsign(unsigned, tmp_path / "l.key", tmp_path / "l.crt", tmp_path / "s.efi")
    authenticode.check(signed, ours.cert("db").read_bytes())


@pytest.mark.parametrize("data", [b"", b"MZ", b"not a pe at all" * 10, b"MZ" + bytes(200)])
def test_garbage_is_refused_not_crashed_on(keys, data: bytes) -> None:
    ours, _ = keys
    with pytest.raises(authenticode.Unsigned):
        authenticode.check(data, ours.cert("db").read_bytes())


def test_a_corrupt_signature_is_refused_and_no_flip_crashes(keys, unsigned: Path, tmp_path: Path) -> None:
    ours, _ = keys
    cert = ours.cert("db").read_bytes()
    signed = sbsign(unsigned, ours.key("db"), ours.cert("db"), tmp_path / "s.efi")
    blob = authenticode.signatures(signed)[0]
    end = signed.index(blob) + len(blob)
    # The RSA-2048 signature is SignedData's last 256 bytes: any change there is refused.
    for at in range(end - 256, end, 17):
        broken = bytearray(signed)
        broken[at] ^= 0x5A
        with pytest.raises(authenticode.Unsigned, match="does not verify"):
            authenticode.check(bytes(broken), cert)
    # Anywhere in the structure: passes (a byte nothing signs, like the copy of the
    # certificate) or is refused, never another exception.
    for at in range(signed.index(blob), end, 3):
        broken = bytearray(signed)
        broken[at] ^= 0x5A
        try:
            authenticode.check(bytes(broken), cert)
        except authenticode.Unsigned:
            pass
