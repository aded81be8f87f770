"""The PCR signing key: signs each UKI's PCR 11 policy (builder/measure.py), made or imported.

A `berth keys init` directory holds it beside the Secure Boot keys, in
``measured-boot/``: ``pcr-private.pem`` (PEM RSA 2048, 0600) and
``pcr-public.pem``. The public half goes into every UKI (its ``.pcrpkey``
section) and into the root, and /var is sealed to the TPM under it at first boot
(`var_encryption: tpm2`): any UKI whose PCR 11 policy this key signed unlocks
it, so an update needs no re-enrolment. The private key never enters an image.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder import keyfiles
from cli.errors import UserError

SUBDIR = "measured-boot"
PRIVATE = "pcr-private.pem"
PUBLIC = "pcr-public.pem"
RSA_BITS = 2048  # what TPM 2.0 chips verify (PolicyAuthorize with an RSA 2048 key)


@dataclass(frozen=True)
class PcrKey:
    directory: Path

    @property
    def private(self) -> Path:
        return self.directory / PRIVATE

    @property
    def public(self) -> Path:
        return self.directory / PUBLIC


def key_in(keys_dir: Path) -> PcrKey:
    """The PCR signing key of a `berth keys init` directory, or a one-line error."""
    found = PcrKey(keys_dir / SUBDIR)
    keyfiles.require(keys_dir, found.directory, (found.private, found.public), "PCR signing key",
                     f"make it with `berth keys init --keys {keys_dir} --measured-boot-only`")
    return found


def present(keys_dir: Path) -> bool:
    return (keys_dir / SUBDIR / PRIVATE).is_file()


def make(keys_dir: Path) -> PcrKey:
    """A new RSA key pair in ``keys_dir/measured-boot``."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return _write(keys_dir, rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS))


def import_from(keys_dir: Path, private_pem: Path) -> PcrKey:
    """An operator's existing PCR signing key (PEM RSA private key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(private_pem.read_bytes(), None)
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"{private_pem}: not a readable, unencrypted PEM private key: {error}") from error
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != RSA_BITS:
        raise UserError(f"{private_pem}: the PCR signing key must be RSA {RSA_BITS} (what a TPM verifies)")
    return _write(keys_dir, key)


def _write(keys_dir: Path, key: object) -> PcrKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    assert isinstance(key, rsa.RSAPrivateKey)
    directory = keys_dir / SUBDIR
    if directory.exists():
        raise UserError(f"{directory}: already exists; refusing to replace the PCR signing key")
    directory.mkdir(parents=True, mode=0o700)
    target = PcrKey(directory)
    fd = os.open(target.private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    target.public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return target


def image_tree(key: PcrKey, tree: Path, path: str) -> list[Path]:
    """The public key (never the private one) as an extra tree for the root at ``path``."""
    target = tree / path
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(key.public, target)
    target.chmod(0o644)
    return [tree]
