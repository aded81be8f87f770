"""`berth keys rotate-db`: the new db key pair, the KEK-signed append file, the switch,
and what a build's image carries of each step (builder/sbrotate.py)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from builder import sbkeys, sbrotate
from updater import contract
from updater.agent import sbdb

REPO = Path(__file__).resolve().parents[2]
PKCS7_GUID = uuid.UUID("4aafd29d-68df-49ee-8aa9-347d375665a7").bytes_le


def berth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True,
                          check=False)


def der(cert: Path) -> bytes:
    return x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)


def signed_by(auth: bytes, cert: Path) -> bool:
    """The .auth's PKCS#7 (in its WIN_CERTIFICATE) carries ``cert``, as sbvarsign puts its signer there."""
    length = struct.unpack_from("<I", auth, 16)[0]
    return der(cert) in auth[16 + 24:16 + length]


@pytest.fixture
def keys_dir(tmp_path: Path, made_once: Path) -> Path:
    keys = tmp_path / "keys"
    shutil.copytree(made_once, keys)
    return keys


@pytest.fixture(scope="module")
def made_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keys = tmp_path_factory.mktemp("k") / "keys"
    sbkeys.make(keys)
    return keys


def test_rotate_db_makes_a_new_key_and_a_kek_signed_append_of_its_certificate(keys_dir: Path) -> None:
    result = berth("keys", "rotate-db", "--keys", str(keys_dir))
    assert result.returncode == 0, result.stderr
    assert "--switch" in result.stdout
    keys = sbkeys.keys_in(keys_dir)
    assert os.stat(keys.key(sbrotate.NEXT)).st_mode & 0o077 == 0
    incoming = der(keys.cert(sbrotate.NEXT))
    assert incoming != der(keys.cert("db"))
    auth = (keys.directory / sbrotate.APPEND_AUTH).read_bytes()
    # EFI_VARIABLE_AUTHENTICATION_2 (an EFI_TIME, a WIN_CERTIFICATE_UEFI_GUID with PKCS#7)
    # signed by the KEK, over one X.509 signature list holding only the new certificate.
    _, revision, kind = struct.unpack_from("<IHH", auth, 16)
    assert (revision, kind, auth[24:40]) == (0x0200, 0x0EF1, PKCS7_GUID)
    assert signed_by(auth, keys.cert("KEK")) and not signed_by(auth, keys.cert("PK"))
    payload = sbdb.auth_payload(auth)
    owner = uuid.UUID((keys.directory / sbkeys.OWNER_FILE).read_text().strip())
    assert sbdb.signature_lists(payload) == [sbdb.Signature(sbdb.CERT_X509, owner, incoming)]
    # The old key still signs: the next build is the transition release.
    assert sbrotate.state(keys_dir).signing == keys.cert("db")


def _der_length(n: int) -> bytes:
    return bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")


def signature_verifies(auth: bytes, variable: str, attributes: int, tmp_path: Path) -> bool:
    """Does the .auth's PKCS#7 signature verify over what SetVariable checks (UEFI 8.2.2:
    name without its NUL, vendor GUID, attributes, the EFI_TIME, the data) with these
    attributes? openssl checks it against the signer certificate the signature carries."""
    length = struct.unpack_from("<I", auth, 16)[0]
    signed_data = auth[16 + 24:16 + length]
    inner = b"\xa0" + _der_length(len(signed_data)) + signed_data
    oid = bytes.fromhex("06092a864886f70d010702")
    body = oid + inner
    (tmp_path / "sig.der").write_bytes(b"\x30" + _der_length(len(body)) + body)
    guid = uuid.UUID(sbdb.IMAGE_SECURITY_DATABASE).bytes_le
    (tmp_path / "content").write_bytes(variable.encode("utf-16-le") + guid + struct.pack("<I", attributes)
                                       + auth[:16] + sbdb.auth_payload(auth))
    done = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "sig.der"),
                           "-content", str(tmp_path / "content"), "-binary", "-noverify", "-out", os.devnull],
                          capture_output=True, check=False)
    return done.returncode == 0


def test_the_append_is_signed_with_the_append_attribute_and_the_enrolment_without(
    keys_dir: Path, tmp_path: Path
) -> None:
    """The signature covers the attributes: the firmware accepts the append file only as
    an APPEND_WRITE (0x67), which is how the host writes it, and db.auth only as a plain
    authenticated write (0x27), as systemd-boot enrols it."""
    sbrotate.begin(keys_dir)
    keys = sbkeys.keys_in(keys_dir)
    append = (keys.directory / sbrotate.APPEND_AUTH).read_bytes()
    assert sbdb.APPEND_ATTRIBUTES == sbdb.DB_ATTRIBUTES | sbdb.APPEND_WRITE == 0x67
    assert signature_verifies(append, "db", sbdb.APPEND_ATTRIBUTES, tmp_path)
    assert not signature_verifies(append, "db", sbdb.DB_ATTRIBUTES, tmp_path)
    assert not signature_verifies(append, "KEK", sbdb.APPEND_ATTRIBUTES, tmp_path)
    enrol = keys.auth("db").read_bytes()
    assert signature_verifies(enrol, "db", sbdb.DB_ATTRIBUTES, tmp_path)
    assert not signature_verifies(enrol, "db", sbdb.APPEND_ATTRIBUTES, tmp_path)


def test_a_second_rotate_db_refuses_and_switch_needs_one_under_way(keys_dir: Path) -> None:
    assert "no db key rotation under way" in berth("keys", "rotate-db", "--keys", str(keys_dir), "--switch").stderr
    sbrotate.begin(keys_dir)
    before = sorted(p.name for p in (keys_dir / sbkeys.SUBDIR).iterdir())
    result = berth("keys", "rotate-db", "--keys", str(keys_dir))
    assert result.returncode == 1 and "rotation is under way" in result.stderr
    assert sorted(p.name for p in (keys_dir / sbkeys.SUBDIR).iterdir()) == before


def test_switch_signs_with_the_new_key_retires_the_old_and_db_auth_holds_only_the_new(keys_dir: Path) -> None:
    keys = sbkeys.keys_in(keys_dir)
    old_key, old_cert = keys.key("db").read_bytes(), keys.cert("db").read_bytes()
    sbrotate.begin(keys_dir)
    new_key, new_cert = keys.key(sbrotate.NEXT).read_bytes(), keys.cert(sbrotate.NEXT).read_bytes()
    result = berth("keys", "rotate-db", "--keys", str(keys_dir), "--switch")
    assert result.returncode == 0, result.stderr
    assert (keys.key("db").read_bytes(), keys.cert("db").read_bytes()) == (new_key, new_cert)
    assert not keys.cert(sbrotate.NEXT).exists() and not (keys.directory / sbrotate.APPEND_AUTH).exists()
    retired = sorted(p.name for p in (keys.directory / sbrotate.RETIRED).iterdir())
    assert len(retired) == 4 and any(n.endswith(".append.auth") for n in retired)
    assert old_key in [p.read_bytes() for p in (keys.directory / sbrotate.RETIRED).iterdir()]
    assert old_cert in [p.read_bytes() for p in (keys.directory / sbrotate.RETIRED).iterdir()]
    # db.auth: a non-append db write (what setup mode enrols, and what drops the old
    # certificate from a host's db) holding only the new certificate, signed by the KEK.
    auth = keys.auth("db").read_bytes()
    assert sbdb.certificates(sbdb.auth_payload(auth)) == [der(keys.cert("db"))]
    assert signed_by(auth, keys.cert("KEK"))
    assert sbrotate.state(keys_dir).incoming is None
    # A new rotation can start from here.
    sbrotate.begin(keys_dir)


def test_the_image_carries_the_incoming_certificate_and_append_during_a_rotation_only(
    keys_dir: Path, tmp_path: Path
) -> None:
    def carried(name: str) -> list[str]:
        sbkeys.image_tree(sbkeys.keys_in(keys_dir), tmp_path / name)
        directory = tmp_path / name / contract.SECURE_BOOT_DB_CERT
        files = sorted(p.name for p in directory.parent.iterdir())
        assert not any(b"PRIVATE KEY" in p.read_bytes() for p in directory.parent.iterdir())
        return files

    assert carried("before") == ["db.crt"]
    sbrotate.begin(keys_dir)
    assert carried("during") == ["db-next.append.auth", "db-next.crt", "db.crt"]
    sbrotate.switch(keys_dir)
    assert carried("after") == ["db.crt"]
    assert (tmp_path / "after" / contract.SECURE_BOOT_DB_CERT).read_bytes() == \
        (tmp_path / "during" / contract.SECURE_BOOT_DB_CERT).with_name("db-next.crt").read_bytes()


def test_rotate_db_without_the_kek_key_says_what_to_do(keys_dir: Path) -> None:
    (keys_dir / sbkeys.SUBDIR / "KEK.key").unlink()
    result = berth("keys", "rotate-db", "--keys", str(keys_dir))
    assert result.returncode == 1 and "KEK.key and KEK.crt are needed" in result.stderr
    assert not (keys_dir / sbkeys.SUBDIR / "db-next.crt").exists()


@pytest.mark.parametrize("cut_at", range(9))
def test_a_switch_cut_at_any_rename_is_finished_by_running_it_again(
    keys_dir: Path, cut_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut (here: the cut_at-th rename raising) leaves the directory for a second
    `--switch` to finish, with the result of a switch that was never cut."""
    sbrotate.begin(keys_dir)
    keys = sbkeys.keys_in(keys_dir)
    new_key, new_cert = keys.key(sbrotate.NEXT).read_bytes(), keys.cert(sbrotate.NEXT).read_bytes()
    old_cert = keys.cert("db").read_bytes()
    real, calls = os.replace, []

    def cut(source: object, target: object) -> None:
        calls.append(source)
        if len(calls) == cut_at + 1:
            raise OSError("power cut")
        real(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(sbrotate.os, "replace", cut)
    try:
        sbrotate.switch(keys_dir)
        finished_first_time = True
    except OSError:
        finished_first_time = False
    monkeypatch.setattr(sbrotate.os, "replace", real)
    if not finished_first_time:
        sbrotate.switch(keys_dir)
    assert (keys.key("db").read_bytes(), keys.cert("db").read_bytes()) == (new_key, new_cert)
    assert sbdb.certificates(sbdb.auth_payload(keys.auth("db").read_bytes())) == [der(keys.cert("db"))]
    retired = {p.suffix: p.read_bytes() for p in (keys.directory / sbrotate.RETIRED).iterdir()
               if not p.name.endswith(".append.auth")}
    assert retired[".crt"] == old_cert and set(retired) == {".key", ".crt", ".auth"}
    left = sorted(p.name for p in keys.directory.iterdir())
    assert left == ["KEK.auth", "KEK.crt", "KEK.key", "PK.auth", "PK.crt", "PK.key", "db.auth", "db.crt", "db.key",
                    "owner.guid", "retired"]


def test_a_cut_begin_is_finished_by_running_it_again(keys_dir: Path) -> None:
    keys = sbkeys.keys_in(keys_dir)
    # Cut after the key pair, before the append file: the next run makes only the file.
    sbkeys.write_keypair(keys, sbrotate.NEXT, "berth Secure Boot db cut")
    cert = keys.cert(sbrotate.NEXT).read_bytes()
    sbrotate.begin(keys_dir)
    assert keys.cert(sbrotate.NEXT).read_bytes() == cert
    assert sbdb.certificates(sbdb.auth_payload((keys.directory / sbrotate.APPEND_AUTH).read_bytes())) == [
        der(keys.cert(sbrotate.NEXT))]
    # Cut between the key and its certificate: a fresh pair.
    other = tmp_copy = keys_dir.parent / "other"
    shutil.copytree(keys_dir, tmp_copy)
    for name in ("db-next.crt", sbrotate.APPEND_AUTH):
        (other / sbkeys.SUBDIR / name).unlink()
    sbrotate.begin(other)
    assert sbrotate.state(other).incoming is not None and sbrotate.state(other).append is not None
