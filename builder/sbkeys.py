"""Secure Boot keys: PK, KEK and db, made or imported, and the files systemd-boot enrols.

A key directory from `berth keys init` holds them under ``secure-boot/``:
``<NAME>.key`` (PEM private key, 0600), ``<NAME>.crt`` (PEM X.509) and
``<NAME>.auth`` (the certificate as an EFI signature list, signed for
SetVariable: PK and KEK by PK, db by KEK) for NAME in PK, KEK, db. systemd-boot
enrols the three .auth files from ``loader/keys/auto/`` on firmware in setup
mode (``secure-boot-enroll`` in loader.conf); the build signs boot loader and
UKIs with db.key. The .auth files carry a timestamp, so they are made once
here and copied by every build (which stays reproducible). Only the
certificates and .auth files ever go into an image; the private keys stay here.

Tools: sbsiglist and sbvarsign (Debian's sbsigntool).
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from builder import keyfiles
from cli.errors import UserError
from updater.contract import SECURE_BOOT_DB_CERT

SUBDIR = "secure-boot"
NAMES = ("PK", "KEK", "db")
# Who signs each variable's update: the platform key itself and the KEK, the KEK the db.
SIGNER = {"PK": "PK", "KEK": "PK", "db": "KEK"}
OWNER_FILE = "owner.guid"
# systemd-boot writes the variables with exactly these attributes; the signature covers them.
ATTRIBUTES = "NON_VOLATILE,BOOTSERVICE_ACCESS,RUNTIME_ACCESS,TIME_BASED_AUTHENTICATED_WRITE_ACCESS"
RSA_BITS = 2048


@dataclass(frozen=True)
class SecureBootKeys:
    """Where one key set's files are; ``auth(name)`` is what systemd-boot enrols."""

    directory: Path

    def key(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    def cert(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def auth(self, name: str) -> Path:
        return self.directory / f"{name}.auth"


def keys_in(keys_dir: Path) -> SecureBootKeys:
    """The Secure Boot keys of a `berth keys init` directory, every file present, or a one-line error."""
    found = SecureBootKeys(keys_dir / SUBDIR)
    needed = [found.key("db"), found.cert("db"), *(found.auth(n) for n in NAMES)]
    keyfiles.require(keys_dir, found.directory, needed, "Secure Boot keys",
                     f"make them with `berth keys init --keys {keys_dir}`")
    return found


def image_tree(keys: SecureBootKeys, tree: Path) -> list[Path]:
    """The db certificate (never a key) as an extra tree for the root: the agent's lock;
    during a db key rotation also the incoming certificate and its append file
    (builder/sbrotate.py, IMAGE_FILES)."""
    from builder.sbrotate import IMAGE_FILES

    target = tree / SECURE_BOOT_DB_CERT
    target.parent.mkdir(parents=True)
    for name in IMAGE_FILES:
        if (keys.directory / name).is_file():
            shutil.copyfile(keys.directory / name, target.parent / name)
            (target.parent / name).chmod(0o644)
    return [tree]


def make(keys_dir: Path, common_name: str = "berth") -> SecureBootKeys:
    """New PK, KEK and db (RSA, self-signed, 20 years) and their .auth files in ``keys_dir/secure-boot``."""
    target = _fresh(keys_dir)
    for name in NAMES:
        write_keypair(target, name, f"{common_name} Secure Boot {name}")
    _write_auth_files(target, set(NAMES))
    return target


def import_from(keys_dir: Path, source: Path) -> SecureBootKeys:
    """An operator's keys from ``source``: ``db.key`` and ``db.crt`` always; for each of PK,
    KEK and db either its signed ``.auth`` (an offline PK makes them elsewhere) or the key
    pair it is made from here (the signer's key too)."""
    if not (source / "db.key").is_file() or not (source / "db.crt").is_file():
        raise UserError(f"{source}: needs db.key and db.crt (PEM) to sign images with")
    _check_pair(source / "db.key", source / "db.crt")
    to_make = {n for n in NAMES if not (source / f"{n}.auth").is_file()}
    for name in to_make:
        for needed in (f"{name}.crt", f"{SIGNER[name]}.key", f"{SIGNER[name]}.crt"):
            if not (source / needed).is_file():
                raise UserError(f"{source}: {name}.auth is missing and so is {needed} to make it from")
    target = _fresh(keys_dir)
    for entry in sorted(source.iterdir()):
        if entry.is_file() and entry.suffix in (".key", ".crt", ".auth") and entry.stem in NAMES:
            mode = 0o600 if entry.suffix == ".key" else 0o644
            shutil.copyfile(entry, target.directory / entry.name)
            os.chmod(target.directory / entry.name, mode)
    _write_auth_files(target, to_make)
    return target


def _fresh(keys_dir: Path) -> SecureBootKeys:
    directory = keys_dir / SUBDIR
    if directory.exists():
        raise UserError(f"{directory}: already exists; refusing to replace Secure Boot keys")
    directory.mkdir(parents=True, mode=0o700)
    target = SecureBootKeys(directory)
    (directory / OWNER_FILE).write_text(f"{uuid.uuid4()}\n")
    return target


def write_keypair(target: SecureBootKeys, name: str, common_name: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=20 * 365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(target.key(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    target.cert(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_auth_files(target: SecureBootKeys, names: set[str]) -> None:
    """``<name>.auth`` for each of ``names``: its certificate as a signature list, signed by SIGNER."""
    for name in sorted(names):
        write_auth(target, name, target.cert(name), target.auth(name))


def write_auth(target: SecureBootKeys, variable: str, cert: Path, output: Path,
               attributes: str = ATTRIBUTES) -> None:
    """``output``: ``cert`` as an X.509 signature list owned by the key set's GUID, signed
    for SetVariable of ``variable`` (PK, KEK or db) by its SIGNER with ``attributes``."""
    owner = (target.directory / OWNER_FILE).read_text().strip()
    with tempfile.TemporaryDirectory(prefix="berth-sb-") as scratch:
        der, esl = Path(scratch) / "cert.der", Path(scratch) / "cert.esl"
        der.write_bytes(_der(cert))
        _run(["sbsiglist", "--owner", owner, "--type", "x509", "--output", str(esl), str(der)])
        signer = SIGNER[variable]
        _run(["sbvarsign", "--key", str(target.key(signer)), "--cert", str(target.cert(signer)),
              "--attr", attributes, "--output", str(output), variable, str(esl)])


def _der(cert_pem: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        return x509.load_pem_x509_certificate(cert_pem.read_bytes()).public_bytes(serialization.Encoding.DER)
    except ValueError as error:
        raise UserError(f"{cert_pem}: not a PEM X.509 certificate") from error


def _check_pair(key_pem: Path, cert_pem: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(key_pem.read_bytes(), None)
        cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    except (ValueError, TypeError) as error:
        raise UserError(f"{key_pem.parent}: cannot read {key_pem.name}/{cert_pem.name}: {error}") from error
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, pub) != cert.public_key().public_bytes(
        serialization.Encoding.DER, pub
    ):
        raise UserError(f"{key_pem.parent}: {key_pem.name} is not the key of {cert_pem.name}")


def _run(command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        raise UserError(f"{command[0]} not found: install sbsigntool (scripts/setup-host.sh)") from error
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        raise UserError(f"{command[0]} failed: {last[-1] if last else f'exit {done.returncode}'}")
