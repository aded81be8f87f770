"""Secure Boot keys (`berth keys init`) and signing a disk's ESP (builder/sbsign.py),
checked with sbsigntool's own sbverify and the UEFI structures of the .auth files."""

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

from builder import sbkeys, sbsign
from builder.lint import lint
from cli.errors import UserError
from updater import contract, gpt

REPO = Path(__file__).resolve().parents[2]
BOOT_LOADER = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
EPOCH = 1764621840
PKCS7_GUID = uuid.UUID("4aafd29d-68df-49ee-8aa9-347d375665a7").bytes_le
X509_GUID = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072").bytes_le


def berth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True,
                          check=False)


def verifies(cert: Path, pe: Path) -> bool:
    return subprocess.run(["sbverify", "--cert", str(cert), str(pe)], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keys = tmp_path_factory.mktemp("k") / "keys"
    result = berth("keys", "init", "--keys", str(keys))
    assert result.returncode == 0, result.stderr
    assert "Secure Boot keys PK, KEK, db" in result.stdout
    return keys


def test_keys_init_makes_pk_kek_db_with_auth_files_systemd_boot_can_enrol(keys_dir: Path) -> None:
    keys = sbkeys.keys_in(keys_dir)
    owner = uuid.UUID((keys.directory / sbkeys.OWNER_FILE).read_text().strip()).bytes_le
    for name in sbkeys.NAMES:
        assert os.stat(keys.key(name)).st_mode & 0o077 == 0
        der = x509.load_pem_x509_certificate(keys.cert(name).read_bytes()).public_bytes(serialization.Encoding.DER)
        auth = keys.auth(name).read_bytes()
        # EFI_VARIABLE_AUTHENTICATION_2: an EFI_TIME, then a WIN_CERTIFICATE_UEFI_GUID holding PKCS#7 ...
        length, revision, kind = struct.unpack_from("<IHH", auth, 16)
        assert (revision, kind, auth[24:40]) == (0x0200, 0x0EF1, PKCS7_GUID)
        # ... then the EFI_SIGNATURE_LIST: one X.509 entry, owned by the key set's GUID.
        esl = auth[16 + length:]
        list_size, header_size, entry_size = struct.unpack_from("<III", esl, 16)
        assert esl[:16] == X509_GUID and list_size == len(esl) and header_size == 0
        assert esl[28:44] == owner and esl[44:] == der and entry_size == 16 + len(der)


def test_keys_init_never_replaces_keys_and_adds_secure_boot_to_an_older_directory_on_request(tmp_path: Path,
                                                                                 keys_dir: Path) -> None:
    again = berth("keys", "init", "--keys", str(keys_dir))
    assert again.returncode == 1 and again.stderr.startswith("berth: error: ")
    older = tmp_path / "older"
    from updater.publish.repository import init_keys

    init_keys(older, {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1})
    tuf = (older / "root-0.pem").read_bytes()
    refused = berth("keys", "init", "--keys", str(older))
    assert refused.returncode == 1 and "already holds keys" in refused.stderr
    assert not (older / sbkeys.SUBDIR).exists()
    result = berth("keys", "init", "--keys", str(older), "--secure-boot-only")
    assert result.returncode == 0 and "TUF" not in result.stdout
    assert (older / "root-0.pem").read_bytes() == tuf
    sbkeys.keys_in(older)


def test_keys_init_imports_an_operators_keys(tmp_path: Path, keys_dir: Path) -> None:
    mine = keys_dir / sbkeys.SUBDIR
    # Key pairs only: the .auth files are made from them.
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for name in sbkeys.NAMES:
        for suffix in (".key", ".crt"):
            shutil.copyfile(mine / f"{name}{suffix}", pairs / f"{name}{suffix}")
    result = berth("keys", "init", "--keys", str(tmp_path / "a"), "--secure-boot-from", str(pairs))
    assert result.returncode == 0, result.stderr
    imported = sbkeys.keys_in(tmp_path / "a")
    assert imported.cert("db").read_bytes() == (mine / "db.crt").read_bytes()
    # An offline PK: only db's pair and the signed .auth files.
    offline = tmp_path / "offline"
    offline.mkdir()
    for name in ("db.key", "db.crt", "PK.auth", "KEK.auth", "db.auth"):
        shutil.copyfile(mine / name, offline / name)
    sbkeys.import_from(tmp_path / "b", offline)
    assert not (tmp_path / "b" / sbkeys.SUBDIR / "PK.key").exists()
    assert (tmp_path / "b" / sbkeys.SUBDIR / "PK.auth").read_bytes() == (mine / "PK.auth").read_bytes()
    # Not enough to make the KEK's .auth: one line naming what is missing.
    (offline / "KEK.auth").unlink()
    with pytest.raises(UserError, match="KEK.auth is missing and so is KEK.crt"):
        sbkeys.import_from(tmp_path / "c", offline)
    # A db key that is not the certificate's.
    shutil.copyfile(mine / "PK.key", offline / "db.key")
    result = berth("keys", "init", "--keys", str(tmp_path / "d"), "--secure-boot-from", str(offline))
    assert result.returncode == 1 and "db.key is not the key of db.crt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_keys_are_named_in_one_line(tmp_path: Path, keys_dir: Path) -> None:
    with pytest.raises(UserError, match=r"the directory missing.*berth keys init"):
        sbkeys.keys_in(tmp_path)
    shutil.copytree(keys_dir / sbkeys.SUBDIR, tmp_path / sbkeys.SUBDIR)
    (tmp_path / sbkeys.SUBDIR / "db.key").unlink()
    with pytest.raises(UserError, match=r"\(db\.key missing\)"):
        sbkeys.keys_in(tmp_path)


def test_signing_is_reproducible_and_sbverify_accepts_only_the_db_cert(tmp_path: Path, keys_dir: Path) -> None:
    keys = sbkeys.keys_in(keys_dir)
    sbsign.sign_pe(BOOT_LOADER, tmp_path / "one.efi", keys, EPOCH)
    sbsign.sign_pe(BOOT_LOADER, tmp_path / "two.efi", keys, EPOCH)
    assert (tmp_path / "one.efi").read_bytes() == (tmp_path / "two.efi").read_bytes()
    sbsign.sign_pe(BOOT_LOADER, tmp_path / "later.efi", keys, EPOCH + 1)
    assert (tmp_path / "later.efi").read_bytes() != (tmp_path / "one.efi").read_bytes()  # the time is signed
    assert verifies(keys.cert("db"), tmp_path / "one.efi")
    assert not verifies(keys.cert("KEK"), tmp_path / "one.efi")


def test_loader_conf_gets_exactly_one_enrol_line() -> None:
    assert sbsign.loader_conf("#timeout 3\n") == "#timeout 3\nsecure-boot-enroll force\n"
    assert sbsign.loader_conf("secure-boot-enroll off\ntimeout 0\n") == "timeout 0\nsecure-boot-enroll force\n"


def _esp_image(path: Path) -> gpt.Partition:
    """A FAT ESP at offset 0 laid out like mkosi's: boot loaders, a UKI, loader.conf."""
    subprocess.run(["mkfs.vfat", "-C", "--invariant", "-i", "12345678", str(path), str(64 * 1024)],
                   check=True, capture_output=True)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": str(EPOCH)}
    for directory in ("EFI", "EFI/BOOT", "EFI/systemd", "EFI/Linux", "loader"):
        subprocess.run(["mmd", "-i", str(path), f"::/{directory}"], check=True, env=env)
    conf = path.parent / "loader.conf"
    conf.write_text("#timeout 3\n")
    for source, target in ((BOOT_LOADER, "EFI/BOOT/BOOTX64.EFI"), (BOOT_LOADER, "EFI/systemd/systemd-bootx64.efi"),
                           (BOOT_LOADER, f"{contract.UKI_DIR}/berth_1.0.0.efi"), (conf, "loader/loader.conf")):
        subprocess.run(["mcopy", "-i", str(path), str(source), f"::/{target}"], check=True, env=env)
    return gpt.Partition(0, contract.TYPE_ESP, str(uuid.UUID(int=1)), 0, 64 * 2048 - 1, 0, "esp")


def test_sign_esp_signs_loaders_and_ukis_and_adds_enrolment_reproducibly(tmp_path: Path, keys_dir: Path) -> None:
    keys = sbkeys.keys_in(keys_dir)
    images = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        disk = tmp_path / name / "esp.img"
        esp = _esp_image(disk)
        signed = sbsign.sign_esp(disk, esp, keys, EPOCH)
        images.append(disk.read_bytes())
    assert images[0] == images[1]
    assert signed == [*sbsign.BOOT_LOADERS, f"{contract.UKI_DIR}/berth_1.0.0.efi"]
    for path in signed:
        out = tmp_path / path.replace("/", "_")
        subprocess.run(["mcopy", "-n", "-i", str(disk), f"::/{path}", str(out)], check=True)
        assert verifies(keys.cert("db"), out), path
    for name in sbkeys.NAMES:
        out = tmp_path / f"{name}.auth"
        subprocess.run(["mcopy", "-n", "-i", str(disk), f"::/loader/keys/auto/{name}.auth", str(out)], check=True)
        assert out.read_bytes() == keys.auth(name).read_bytes()
    conf = subprocess.run(["mtype", "-i", str(disk), "::/loader/loader.conf"], check=True, capture_output=True,
                          text=True).stdout
    assert conf.splitlines()[-1] == "secure-boot-enroll force"


def test_the_image_gets_the_db_certificate_and_the_lint_refuses_any_private_key(tmp_path: Path,
                                                                                keys_dir: Path) -> None:
    keys = sbkeys.keys_in(keys_dir)
    (tree,) = sbkeys.image_tree(keys, tmp_path / "tree")
    assert sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()) == [
        contract.SECURE_BOOT_DB_CERT]
    assert lint(tree) == []
    leaked = tree / "etc/berth/db.key"
    leaked.parent.mkdir(parents=True)
    shutil.copyfile(keys.key("db"), leaked)
    assert lint(tree) == ["private key: /etc/berth/db.key"]


@pytest.mark.slow
def test_the_real_images_esp_signs_and_sbverify_accepts_loader_and_uki(default_image: Path, tmp_path: Path,
                                                                       keys_dir: Path) -> None:
    """On the session's built image (no extra build): its ESP, copied out, signed as
    `berth build --secure-boot-keys` signs it right after sealing."""
    check_real_esp(default_image, tmp_path, keys_dir)


def check_real_esp(image: Path, tmp_path: Path, keys_dir: Path) -> None:
    from builder import artifacts

    keys = sbkeys.keys_in(keys_dir)
    partitions = artifacts.read_table(image / contract.DISK_RAW)
    esp = next(p for p in partitions if p.type_uuid == contract.TYPE_ESP)
    copy = tmp_path / "esp.img"
    artifacts.copy_range(image / contract.DISK_RAW, esp.offset, esp.size, copy)
    at_zero = gpt.Partition(esp.index, esp.type_uuid, esp.part_uuid, 0, esp.last_lba - esp.first_lba,
                            esp.attributes, esp.label)
    signed = sbsign.sign_esp(copy, at_zero, keys, EPOCH)
    assert len(signed) == 3 and signed[:2] == list(sbsign.BOOT_LOADERS)
    for path in signed:
        out = tmp_path / Path(path).name
        artifacts.copy_from_esp(copy, at_zero, f"/{path}", out)
        assert verifies(keys.cert("db"), out), path
        assert not verifies(keys.cert("PK"), out), path
